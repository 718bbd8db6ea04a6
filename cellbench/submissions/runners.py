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

RUNNABLE_TASKS = (
    "classification",
    "semantic-segmentation",
    "instance-segmentation",
    "augmented-microscopy",
)


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


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def postprocess(
    task: str,
    sample_id: str,
    outputs: Sequence[np.ndarray],
    spatial: tuple[int, ...],
    n_classes: int = 0,
) -> tuple[Prediction | None, list[str]]:
    """Turn raw model outputs into a :class:`Prediction` following the I/O convention.

    Args:
        task: Task name.
        sample_id: Sample predicted (for messages).
        outputs: Model outputs as arrays, in order.
        spatial: The input's ``([Z,] Y, X)`` shape.
        n_classes: Classes of the dataset (classification, semantic segmentation).

    Returns:
        ``(prediction, problems)``; the prediction is None when there are problems.
    """
    where = f"sample {sample_id!r}"
    if not outputs:
        return None, [f"{where}: model returned no output"]
    out0 = np.asarray(outputs[0])
    nd = len(spatial)
    if task == "classification":
        want = (1, n_classes) if n_classes else (1, "K")
        if out0.ndim != 2 or out0.shape[0] != 1 or (n_classes and out0.shape[1] != n_classes):
            return None, [f"{where}: output 0 has shape {out0.shape}, expected logits {want}"]
        logits = out0[0].astype(np.float64)
        if not np.isfinite(logits).all():
            return None, [f"{where}: logits contain NaN or infinity"]
        scores = _softmax(logits).astype(np.float32)
        return Prediction(sample_id, label=int(np.argmax(logits)), scores=scores), []
    if task == "semantic-segmentation":
        ok = out0.ndim == nd + 2 and out0.shape[0] == 1 and tuple(out0.shape[2:]) == spatial
        if not ok or (n_classes and out0.shape[1] != n_classes):
            k = n_classes or "K"
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected logits (1, {k}, "
                f"{', '.join(map(str, spatial))})"
            ]
        if not np.isfinite(out0).all():
            return None, [f"{where}: logits contain NaN or infinity"]
        mask = np.argmax(out0[0], axis=0)
        dtype = np.uint8 if out0.shape[1] <= 256 else np.uint16
        return Prediction(sample_id, mask=mask.astype(dtype)), []
    if task == "instance-segmentation":
        labels = out0
        if labels.ndim == nd + 2 and labels.shape[:2] == (1, 1):
            labels = labels[0, 0]
        elif labels.ndim == nd + 1 and labels.shape[0] == 1:
            labels = labels[0]
        else:
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected a label image "
                f"(1, {', '.join(map(str, spatial))}) or (1, 1, {', '.join(map(str, spatial))})"
            ]
        problems = []
        if tuple(labels.shape) != spatial:
            problems.append(f"{where}: label image shape {labels.shape} != input {spatial}")
        if labels.dtype.kind == "f":
            if not np.isfinite(labels).all():
                problems.append(f"{where}: label image contains NaN or infinity")
            elif not np.array_equal(labels, np.round(labels)):
                problems.append(f"{where}: label image must hold integer values")
        elif labels.dtype.kind not in "iub":
            problems.append(f"{where}: label image dtype {labels.dtype} is not numeric")
        if not problems and labels.size and labels.min() < 0:
            problems.append(f"{where}: label image has negative labels")
        if not problems and labels.size and labels.max() > np.iinfo(np.int32).max:
            problems.append(f"{where}: labels exceed int32")
        if problems:
            return None, problems
        labels = labels.astype(np.int32)
        pred = Prediction(sample_id, mask=labels)
        if len(outputs) > 1:
            scores = np.asarray(outputs[1], dtype=np.float64).reshape(-1)
            ids = np.unique(labels)
            ids = ids[ids > 0]
            if ids.size and scores.size < int(ids.max()):
                return None, [
                    f"{where}: output 1 holds {scores.size} scores but the largest label is "
                    f"{int(ids.max())} (score of label k at index k-1)"
                ]
            if not np.isfinite(scores[ids - 1]).all():
                return None, [f"{where}: object scores contain NaN or infinity"]
            pred.object_ids = ids.astype(np.int64)
            pred.object_scores = scores[ids - 1]
        return pred, []
    if task == "augmented-microscopy":
        if out0.ndim != nd + 2 or out0.shape[0] != 1 or tuple(out0.shape[2:]) != spatial:
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected (1, C_out, "
                f"{', '.join(map(str, spatial))})"
            ]
        if not np.isfinite(out0).all():
            return None, [f"{where}: prediction contains NaN or infinity"]
        return Prediction(sample_id, image=out0[0].astype(np.float32)), []
    return None, [f"task {task!r}: cellbench does not run models for it (submit predictions)"]


ModelFn = Callable[[np.ndarray], list[np.ndarray]]


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
        """Run the model on one normalised input."""
        torch = self.torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        if isinstance(out, torch.Tensor):
            out = [out]
        elif isinstance(out, dict):
            out = list(out.values())
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
        return [np.asarray(o) for o in self.session.run(None, {self.info.input_name: x})]
