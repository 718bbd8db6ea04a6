"""Running submitted TorchScript and ONNX models on a dataset split: the I/O convention.

Input (every task cellbench runs models for)
    One sample at a time, the whole image, as float32 ``(1, C, Y, X)`` (2D datasets) or
    ``(1, C, Z, Y, X)`` (3D), normalised per image and channel as the manifest's
    ``normalisation`` says:

    ===========  =================================================================
    method       transform of each channel ``x``
    ===========  =================================================================
    percentile   ``(x - p_low) / (p_high - p_low)`` with the image's percentiles
                 ``low``/``high`` (default 1 and 99.8); not clipped
    minmax       ``(x - min) / (max - min)``
    zscore       ``(x - mean) / std``
    affine       ``(x - offset_c) / scale_c`` with fixed per-channel ``offset`` and
                 ``scale`` lists (dataset statistics, e.g. of an exported cellbench run)
    none         ``x`` as float32
    ===========  =================================================================

    (A zero denominator is replaced by 1.) Models needing a fixed size must pad or tile
    internally; ONNX models should be exported with dynamic spatial axes.

Outputs (the first output, and an optional second, by task)
    ========================  ==========================================================
    classification            logits ``(1, K)``; ``label = argmax``, ``scores = softmax``
                              (K = number of classes of the dataset)
    semantic-segmentation     logits ``(1, K, [Z,] Y, X)``; ``mask = argmax`` over K
    instance-segmentation     label image ``(1, [Z,] Y, X)`` or ``(1, 1, [Z,] Y, X)``, 0 =
                              background, integer-valued (int or float dtype); optional
                              second output ``(1, M)`` or ``(M,)``: confidence of label
                              ``k`` at index ``k - 1`` (M >= the largest label, so every
                              object is scored), used to rank detections for COCO AP
    augmented-microscopy      predicted target ``(1, C_out, [Z,] Y, X)`` float, in the
                              normalised intensity scale of the inputs
    tracking                  not run: tracking is accepted as predictions only
    ========================  ==========================================================

    Each task implements its row (:meth:`cellbench.tasks.base.Task.outputs_to_prediction`);
    a task whose ``accepts_models`` is false takes predictions only.

Spatial output shapes must equal the input's. Anything else is refused with one line naming the
sample, the output and the expected shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction
from cellbench.submissions.safety import (
    DEFAULT_LIMITS,
    Limits,
    OnnxInfo,
    graph_op_problems,
    onnx_runtime_shape_problems,
)
from cellbench.submissions.sandbox import resource_limit_of


def normalise(image: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Normalise a ``(C, [Z,] Y, X)`` image per channel as the manifest says (float32).

    Args:
        image: The raw image, channel first.
        spec: ``{"method": "percentile", "low": 1.0, "high": 99.8}`` or another method.

    Returns:
        float32 array of the same shape.
    """
    x = np.asarray(image, dtype=np.float32)
    method = spec.get("method", "percentile")
    if method == "none":
        return x
    if method == "affine":
        offset = np.asarray(spec["offset"], dtype=np.float32)
        scale = np.asarray(spec["scale"], dtype=np.float32)
        if offset.size not in (1, x.shape[0]):
            raise ValueError(
                f"normalisation has {offset.size} affine offsets for an image of "
                f"{x.shape[0]} channels"
            )
        shape = (-1,) + (1,) * (x.ndim - 1)
        return ((x - offset.reshape(shape)) / scale.reshape(shape)).astype(np.float32)
    flat = x.reshape(x.shape[0], -1)
    if method == "percentile":
        lo, hi = np.percentile(flat, [spec.get("low", 1.0), spec.get("high", 99.8)], axis=1)
    elif method == "minmax":
        lo, hi = flat.min(axis=1), flat.max(axis=1)
    elif method == "zscore":
        lo, hi = flat.mean(axis=1), flat.mean(axis=1) + flat.std(axis=1)
    else:
        raise ValueError(f"unknown normalisation method {method!r}")
    scale = (hi - lo).astype(np.float32)
    scale[scale == 0] = 1.0
    shape = (-1,) + (1,) * (x.ndim - 1)
    return ((x - lo.reshape(shape).astype(np.float32)) / scale.reshape(shape)).astype(np.float32)


def postprocess(
    task: str,
    sample_id: str,
    outputs: Sequence[np.ndarray],
    spatial: tuple[int, ...],
    n_classes: int = 0,
) -> tuple[Prediction | None, list[str]]:
    """Turn raw model outputs into a :class:`Prediction` following the I/O convention.

    The task converts (:meth:`cellbench.tasks.base.Task.outputs_to_prediction`) and checks the
    result with its one output check.

    Args:
        task: Task name.
        sample_id: Sample predicted (for messages).
        outputs: Model outputs as arrays, in order.
        spatial: The input's ``([Z,] Y, X)`` shape.
        n_classes: Classes of the dataset (classification, semantic segmentation).

    Returns:
        ``(prediction, problems)``; the prediction is None when there are problems.
    """
    from cellbench.tasks import get_task

    return get_task(task).outputs_to_prediction(sample_id, outputs, spatial, n_classes)


ModelFn = Callable[[np.ndarray], list[np.ndarray]]


def model_error(err: BaseException, shape: Sequence[int]) -> str:
    """One line for an exception a submitted model raised on an input of ``shape``."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    first = first if len(first) <= 300 else first[:297] + "..."
    return (
        f"the model raised {type(err).__name__} on an input of shape {tuple(shape)} "
        f"(float32, (1, C, [Z,] Y, X) with the dataset's {shape[1]} channel(s)): {first}"
    )


class TorchScriptModel:
    """A vetted TorchScript model following the I/O convention.

    Load only after :func:`cellbench.submissions.safety.torchscript_problems` returned nothing;
    the loaded graphs are checked again before the first run.

    Args:
        path: The archive.
        device: ``cpu`` or ``cuda[:N]``.

    Raises:
        ValidationError: If a loaded method graph uses a refused op.
    """

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is "deprecated"
            self.module = torch.jit.load(str(path), map_location=self.device)
        problems = graph_op_problems(self.module)
        if problems:
            raise ValidationError(problems, context=str(path))
        self.module.eval()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on one normalised input.

        Raises:
            ValidationError: If the model raises, or returns anything but tensors (one line).
        """
        torch = self.torch
        try:
            with torch.inference_mode():
                out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        except Exception as err:  # anything the submitted code raises
            if resource_limit_of(err) is not None:
                raise  # the sandbox reports which limit was reached
            raise ValidationError([model_error(err, x.shape)]) from None
        if isinstance(out, torch.Tensor):
            out = [out]
        elif isinstance(out, dict):
            out = list(out.values())
        elif not isinstance(out, list | tuple):
            out = [out]
        bad = [
            f"output {i} is a {type(o).__name__}, expected a tensor"
            for i, o in enumerate(out)
            if not isinstance(o, torch.Tensor)
        ]
        if bad:
            raise ValidationError(bad)
        return [
            o.detach().float().cpu().numpy() if o.is_floating_point() else o.detach().cpu().numpy()
            for o in out
        ]


class OnnxModel:
    """A vetted ONNX model run with onnxruntime (CUDA provider when asked and available).

    Every new input shape is checked with :func:`onnx_runtime_shape_problems` before it runs.

    Args:
        path: The ``.onnx`` file.
        info: Its :class:`~cellbench.submissions.safety.OnnxInfo`.
        device: ``cpu`` or ``cuda``.
        limits: Size limits.
    """

    def __init__(
        self, path: Path, info: OnnxInfo, device: str = "cpu", limits: Limits = DEFAULT_LIMITS
    ) -> None:
        import onnxruntime as ort

        self.path = path
        self.info = info
        self.limits = limits
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.providers = self.session.get_providers()
        self._checked: set[tuple[int, ...]] = set()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the model on one normalised input (after the shape check)."""
        shape = tuple(int(d) for d in x.shape)
        if shape not in self._checked:
            problems = onnx_runtime_shape_problems(self.path, self.info, shape, self.limits)
            if problems:
                raise ValidationError(problems, context=str(self.path))
            self._checked.add(shape)
        try:
            outputs = self.session.run(None, {self.info.input_name: x})
        except Exception as err:  # onnxruntime raises for shape, type and op failures
            if resource_limit_of(err) is not None:
                raise  # the sandbox reports which limit was reached
            raise ValidationError([model_error(err, x.shape)]) from None
        bad = [
            f"output {i} is a {type(o).__name__}, expected a tensor"
            for i, o in enumerate(outputs)
            if not isinstance(o, np.ndarray) or o.dtype.kind not in "biuf"
        ]
        if bad:
            raise ValidationError(bad)
        return [np.asarray(o) for o in outputs]


# ------------------------------------------------------------------------- in the sandbox
def _onnx_parameter_count(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        total += n
    return total


def sandbox_entry(job: Mapping[str, Any], status: Any) -> dict[str, Any]:
    """Run a submitted model over a split; called inside the sandbox child only.

    The job (written by :func:`cellbench.submissions.core.run_convention_model` or
    :func:`~cellbench.submissions.core.run_package`) names the model kind, task, split,
    normalisation and device; paths are relative to the run folder. Predictions are streamed
    to ``job["out"]``; ``status`` receives ``start`` and one ``progress`` event per sample.

    Returns:
        ``{"usage": ResourceUsage dict, "extra": facts about the run}``.

    Raises:
        ValidationError: If an output breaks the convention (names the sample and shape) or
            the package serves another task.
    """
    import contextlib

    from cellbench.predictions import PredictionWriter
    from cellbench.store.zarr_store import DatasetStore
    from cellbench.submissions.measure import ResourceMonitor
    from cellbench.tasks import get_task

    run_dir = Path(job["run_dir"])
    store = DatasetStore.open(run_dir / job["inputs"])
    out = run_dir / job["out"]
    kind, task, split, device = job["kind"], job["task"], job["split"], job["device"]
    display = str(job.get("display_path") or job["model"])
    model_path = run_dir / job["model"]
    ids = store.sample_ids(split)
    status.send("start", total=len(ids))
    cuda = device.startswith("cuda")
    if kind == "safetensors":
        from cellbench.training.inference import predict_split
        from cellbench.training.package import load_package

        package = load_package(model_path, device)
        net, normaliser = package.model, package.normaliser
        served = getattr(getattr(net, "spec", None), "task", task)
        if served != task:
            raise ValidationError(
                [f"the packaged {net.name!r} model predicts {served}, the manifest says {task}"],
                context=display,
            )
        n_params = int(sum(p.numel() for p in net.parameters()))
        with ResourceMonitor(cuda=cuda) as monitor, contextlib.ExitStack() as stack:
            writer: PredictionWriter | None = None
            for i, sid in enumerate(ids):
                pset = predict_split(
                    (net, normaliser),
                    store,
                    split,
                    settings=package.settings,
                    device=device,
                    sample_ids=[sid],
                )
                if writer is None:
                    writer = stack.enter_context(
                        PredictionWriter(
                            out, pset.task, pset.dataset, pset.dataset_version, split, pset.producer
                        )
                    )
                writer.add(pset.get(sid))
                status.send("progress", done=i + 1, total=len(ids), sample=sid)
        extra = {
            "runtime": "cellbench.training",
            "baseline": net.name,
            "device": device,
            "measured_parameters": n_params,
        }
        return {"usage": monitor.usage.to_dict(), "extra": extra}

    model: Any
    if kind == "torchscript":
        model = TorchScriptModel(model_path, device)
        n_params = int(sum(p.numel() for p in model.module.parameters()))
        runtime_info = {"runtime": "torch.jit", "device": str(model.device)}
    else:
        info = OnnxInfo(**job["onnx_info"])
        model = OnnxModel(model_path, info, device, Limits(**job["size_limits"]))
        n_params = _onnx_parameter_count(model_path)
        runtime_info = {"runtime": "onnxruntime", "providers": ",".join(model.providers)}
    n_classes = len(get_task(task).class_names(store))
    producer = {"kind": kind, "submission": job.get("name", ""), **runtime_info}
    writer = PredictionWriter(out, task, store.id, store.version, split, producer)
    with ResourceMonitor(cuda=cuda and kind == "torchscript") as monitor, writer:
        for i, sid in enumerate(ids):
            image = np.asarray(store.image(sid)[...])
            try:
                x = normalise(image, job["normalisation"])[None]
            except ValueError as err:
                raise ValidationError(
                    [f"sample {sid!r}: {err}"], context=f"{display} (normalisation)"
                ) from None
            try:
                outputs = model(x)
            except ValidationError as err:
                raise ValidationError(
                    [f"sample {sid!r}: {p}" for p in err.problems],
                    context=f"{display} (model run)",
                ) from None
            spatial = tuple(image.shape[1:])
            pred, problems = postprocess(task, sid, outputs, spatial, n_classes)
            if problems:
                raise ValidationError(problems, context=f"{display} (model output)")
            assert pred is not None
            writer.add(pred)
            status.send("progress", done=i + 1, total=len(ids), sample=sid)
    return {
        "usage": monitor.usage.to_dict(),
        "extra": {**runtime_info, "measured_parameters": n_params},
    }
