"""Export a training run's model as a BioImage.IO 0.5 model package (``cellbench export-model``).

The package folder holds::

    rdf.yaml               the model description (format 0.5): axes, pre/post-processing, ...
    weights.torchscript.pt the network as TorchScript (the baseline's ``export_network``)
    weights.onnx           the same network as ONNX (dynamic axes), when it reproduces
                           TorchScript in onnxruntime (``cellbench[models]``)
    test_input.npy         a raw test-split image (cropped to a valid size), float32
    test_output.npy        the network's output on it, preprocessed as ``rdf.yaml`` says
    sample_input.tif       the test input as TIFF (and sample_output.tif for image outputs)
    README.md              the documentation: task, dataset, training, normalisation, command
    cover.png              input beside output (2:1)

The input is ``(batch, channel, [z,] y, x)`` float32. Its preprocessing is the run's
normaliser, as the BioImage.IO operations that :mod:`cellbench.submissions.bioimageio` maps back
to the same normalisation when the package is submitted:

=========================  ==================================================================
run normalisation          rdf.yaml preprocessing
=========================  ==================================================================
``percentile``             ``scale_range`` (``min_percentile``, ``max_percentile``, per channel
                           over the spatial axes)
``none``                   ``ensure_dtype`` float32 alone
``dataset-meanstd``        ``fixed_zero_mean_unit_variance`` (the dataset's mean and std per
                           channel; submitted back as the ``affine`` normalisation)
``dataset-percentile``     ``scale_linear`` (gain ``1/scale``, offset ``-offset/scale``; likewise)
=========================  ==================================================================

The output is the task's first output of the model-submission convention
(:meth:`~cellbench.tasks.training.TaskTraining.export_output`): class logits, a predicted
target, or a label image; augmented-microscopy targets trained with ``dataset-meanstd``
normalisation get a ``scale_linear`` postprocessing back to target units.

ONNX weights come from the TorchScript module through torch's TorchScript-based exporter
(``dynamo=False``: the dynamo exporter needs ``onnxscript``, which no extra installs), and
are kept only when onnxruntime reproduces TorchScript on the test input and on a smaller
size (a traced module, whose control flow is fixed at one size, gets none).

The package is written to a temporary folder beside ``DEST`` and renamed into place; a
``DEST`` that exists and is not empty is refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cellbench._version import __version__
from cellbench.errors import CellbenchError
from cellbench.registry import open_dataset
from cellbench.submissions.bioimageio import RDF_FILE
from cellbench.tasks import get_task
from cellbench.tasks.training import ExportOutput
from cellbench.training.layout import RUN_CONFIG
from cellbench.training.models.tiling import PadToMultiple
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import ModelPackage, load_package

log = logging.getLogger("cellbench.training")

FORMAT_VERSION = "0.5.4"
WEIGHTS_FILE = "weights.torchscript.pt"
ONNX_FILE = "weights.onnx"
ONNX_OPSET = 17
TEST_INPUT = "test_input.npy"
TEST_OUTPUT = "test_output.npy"
COVER = "cover.png"
SAMPLE_INPUT = "sample_input.tif"
SAMPLE_OUTPUT = "sample_output.tif"
README = "README.md"
#: Spatial sizes the package accepts: ``SIZE_MIN + n * SIZE_STEP`` (see :func:`axis_min`).
SIZE_MIN, SIZE_STEP = 16, 8
#: Largest test image side (larger images are cropped from their origin).
TEST_MAX = 256
#: BioImage.IO's default ``eps`` of ``scale_range``.
SCALE_RANGE_EPS = 1e-6
#: Characters a BioImage.IO model name may not hold.
NAME_FORBIDDEN = r"[^A-Za-z0-9_+\- ()]"
CELLBENCH_CITE = {
    "text": "cellbench developers. cellbench: curated microscopy datasets, baselines, scoring "
    "and leaderboards for deep learning on cells.",
    "url": "https://github.com/cellbench/cellbench",
}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preprocessing(norm: Normaliser, spatial: list[str]) -> list[dict[str, Any]]:
    """The rdf.yaml input preprocessing equivalent to a run's normaliser (module table)."""
    steps: list[dict[str, Any]] = [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]
    if norm.mode == "percentile":
        steps.append(
            {
                "id": "scale_range",
                "kwargs": {
                    "axes": spatial,
                    "min_percentile": float(norm.low),
                    "max_percentile": float(norm.high),
                },
            }
        )
    elif norm.mode in ("dataset-meanstd", "dataset-percentile"):
        stats = np.asarray(norm.channel_stats, dtype=np.float64)
        offset, scale = stats[:, 0], stats[:, 1]
        if norm.mode == "dataset-meanstd":
            steps.append(
                {
                    "id": "fixed_zero_mean_unit_variance",
                    "kwargs": {"axis": "channel", "mean": offset.tolist(), "std": scale.tolist()},
                }
            )
        else:
            steps.append(
                {
                    "id": "scale_linear",
                    "kwargs": {
                        "axis": "channel",
                        "gain": (1.0 / scale).tolist(),
                        "offset": (-offset / scale).tolist(),
                    },
                }
            )
    return steps


def normalise_like_rdf(image: np.ndarray, norm: Normaliser) -> np.ndarray:
    """Apply :func:`preprocessing` to a raw ``(1, C, *spatial)`` image as BioImage.IO does."""
    x = image.astype(np.float32)
    if norm.mode == "percentile":
        flat = x.reshape(x.shape[1], -1).astype(np.float64)
        lo, hi = np.percentile(flat, [norm.low, norm.high], axis=1)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return ((x - lo.reshape(shape)) / (hi - lo + SCALE_RANGE_EPS).reshape(shape)).astype(
            np.float32
        )
    if norm.mode in ("dataset-meanstd", "dataset-percentile"):
        stats = np.asarray(norm.channel_stats, dtype=np.float64)
        return Normaliser.apply(x[0], stats, 0)[None].astype(np.float32)
    return x


def _postprocessing(norm: Normaliser, output: ExportOutput) -> list[dict[str, Any]]:
    if norm.target_mode == "dataset-meanstd" and norm.target_stats and output.channel_names:
        stats = np.asarray(norm.target_stats, dtype=np.float64)
        return [
            {
                "id": "scale_linear",
                "kwargs": {
                    "axis": "channel",
                    "gain": stats[:, 1].tolist(),
                    "offset": stats[:, 0].tolist(),
                },
            }
        ]
    return []


def axis_min(n: int) -> int:
    """Smallest size a package accepts along an axis whose test size is ``n``.

    :data:`SIZE_MIN`, or the test size itself for shorter axes (a few z-planes).
    """
    return min(SIZE_MIN, n)


def _valid_size(n: int) -> int:
    """The test image's size along an axis of size ``n``: ``axis_min + k * SIZE_STEP``."""
    low = axis_min(n)
    return low + (min(n, TEST_MAX) - low) // SIZE_STEP * SIZE_STEP


def _test_image(
    package: ModelPackage, run_config: dict[str, Any]
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """A raw image of the run's dataset (test split first), its sample id and the card.

    The image is float32 ``(1, C, *spatial)``, cropped to a size the package accepts.
    """
    dataset = dict(run_config.get("dataset") or {})
    ref = dataset.get("path") or dataset.get("ref") or package.meta.get("dataset")
    try:
        store = open_dataset(str(ref))
    except CellbenchError:
        store = open_dataset(str(dataset.get("ref") or package.meta.get("dataset")))
    for split in ("test", "val", "train"):
        ids = store.sample_ids(split) if split in store.splits else []
        if ids:
            break
    else:
        raise CellbenchError(f"dataset {store.id}@{store.version} has no samples")
    sid = ids[0]
    axes = store.axes(sid)
    if "t" in axes:
        raise CellbenchError(f"sample {sid!r} is a time sequence; exported models take images")
    image = np.asarray(store.image(sid)[...])
    if axes.index("c") != 0:
        image = np.moveaxis(image, axes.index("c"), 0)
    crop = tuple(slice(0, _valid_size(n)) for n in image.shape[1:])
    return image[(slice(None), *crop)][None].astype(np.float32), sid, store.card


def to_torchscript(
    network: torch.nn.Module, example: torch.Tensor
) -> tuple[torch.jit.ScriptModule, bool]:
    """The network as TorchScript, and whether it takes any size (else traced at one).

    Scripted when possible; a :class:`PadToMultiple` whose inner network cannot be scripted
    keeps its padding scripted around the traced network; anything else is traced.

    Raises:
        CellbenchError: If the TorchScript module does not reproduce the network on the
            example (and, for a size-free module, on a smaller input).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted, any_size = torch.jit.script(network), True
        except Exception:
            if isinstance(network, PadToMultiple):
                scripted, any_size = torch.jit.script(network.with_traced_net(example)), True
            else:  # control flow fixed at the example's size
                scripted, any_size = torch.jit.trace(network, example, check_trace=False), False
        checks = [example]
        if any_size:
            checks.append(_smaller(example))
        for x in checks:
            with torch.no_grad():
                want, got = network(x).float(), scripted(x).float()
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
                raise CellbenchError(
                    f"the TorchScript export of the network does not reproduce it on an input "
                    f"of shape {tuple(x.shape)}; it cannot be packaged"
                )
    return scripted, any_size


def _smaller(example: torch.Tensor) -> torch.Tensor:
    """The example cut one size step smaller per spatial axis (not below the minimum)."""
    cut = tuple(slice(0, max(axis_min(int(n)), int(n) - SIZE_STEP)) for n in example.shape[2:])
    return example[(..., *cut)].contiguous()


def _onnx(scripted: torch.jit.ScriptModule, example: torch.Tensor, path: Path) -> int | None:
    """Write ONNX weights with dynamic batch and spatial axes, if they reproduce TorchScript.

    Checked with onnxruntime on the example and on an example one size step smaller per
    axis; returns the opset written, or None (nothing left at ``path``) when onnxruntime is
    not installed, the export fails, or the outputs differ.
    """
    try:
        import onnxruntime
    except ImportError:
        return None
    dynamic = {0: "batch", **{i: f"space{i}" for i in range(2, example.dim())}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                scripted,
                (example,),
                str(path),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["raw"],
                output_names=["output"],
                dynamic_axes={"raw": dynamic, "output": dynamic},
            )
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for x in (example, _smaller(example)):
            with torch.no_grad():
                want = scripted(x).float().numpy()
            got = session.run(None, {"raw": x.numpy()})[0]
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
                raise ValueError("ONNX output differs from TorchScript")
    except Exception as err:  # ONNX is optional: the package keeps its TorchScript weights
        log.info("no ONNX weights: %s", str(err).splitlines()[0] if str(err) else type(err))
        path.unlink(missing_ok=True)
        return None
    return ONNX_OPSET


def _sample_tensors(raw: np.ndarray, out: np.ndarray, output: ExportOutput, folder: Path) -> None:
    """TIFF copies of the test input and (spatial) output for people and viewers (FAIR)."""
    import tifffile

    tifffile.imwrite(folder / SAMPLE_INPUT, raw[0], photometric="minisblack")
    if output.spatial:
        tifffile.imwrite(
            folder / SAMPLE_OUTPUT, out[0].astype(np.float32), photometric="minisblack"
        )


def _cover(raw: np.ndarray, out: np.ndarray, output: ExportOutput, path: Path) -> None:
    """Input (channel 0) beside the output (argmax of logits, else channel 0): 2:1, 8-bit RGB."""
    from matplotlib import colormaps
    from PIL import Image

    def plane(a: np.ndarray) -> np.ndarray:
        while a.ndim > 2:  # middle plane of a volume, first channel
            a = a[a.shape[0] // 2] if a.ndim > 3 or a.shape[0] > 1 else a[0]
        return a.astype(np.float64)

    def rgb(a: np.ndarray, cmap: str) -> np.ndarray:
        lo, hi = np.percentile(a, [1, 99.8])
        scaled = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        return (colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)

    left = rgb(plane(raw[0, 0]), "gray")
    if output.spatial and output.id == "logits":
        right = rgb(plane(out[0].argmax(0)), "viridis")
    elif output.spatial:
        right = rgb(plane(out[0] if output.channel_names is None else out[0, 0]), "magma")
    else:  # a class: a plain tile in the class's colour
        colour = np.array(colormaps["tab10"](int(np.argmax(out[0])) % 10)[:3]) * 255
        right = np.broadcast_to(colour.astype(np.uint8), left.shape).copy()
    h, w = left.shape[:2]
    canvas = np.zeros((max(h, w), 2 * max(h, w), 3), np.uint8)
    canvas[:h, :w] = left
    canvas[:h, max(h, w) : max(h, w) + w] = right
    Image.fromarray(canvas).save(path)


def _readme(package: ModelPackage, run_config: dict[str, Any], run_dir: Path) -> str:
    meta = package.meta
    cfg = dict(run_config.get("config") or {})
    best = dict(run_config.get("best") or {})
    dataset = dict(run_config.get("dataset") or {})
    spec = package.model.spec
    lines = [
        f"# {meta.get('baseline')} for {spec.task} on {meta.get('dataset')}",
        "",
        f"Exported from a cellbench {meta.get('cellbench_version')} training run "
        f"(`{run_dir.name}`) with `cellbench export-model`.",
        "",
        "## Training",
        "",
        f"- task: {spec.task}",
        f"- dataset: {dataset.get('ref', meta.get('dataset'))} (checksum "
        f"`{dataset.get('checksum', 'unknown')}`), split `train`",
        f"- baseline: `{meta.get('baseline')}` with config `{meta.get('config')}`",
        f"- epochs completed: {run_config.get('epochs_completed', 'unknown')}; best epoch "
        f"{best.get('epoch', 'unknown')} by {best.get('metric') or 'last epoch'}"
        + (f" = {best['value']:.4g}" if isinstance(best.get("value"), float) else ""),
        f"- seed: {cfg.get('seed', 'unknown')}",
        f"- input normalisation: {package.normaliser.describe()}",
        "",
        "## Input and output",
        "",
        f"Input `raw`: float32 `(batch, channel, {'z, ' if spec.ndim == 3 else ''}y, x)`, "
        f"channels {', '.join(spec.channel_names) or spec.in_channels}; any spatial size "
        f"{SIZE_MIN} + n * {SIZE_STEP} (fewer z-planes where the test image has fewer). "
        "The preprocessing in `rdf.yaml` is the training "
        "normalisation.",
        "",
    ]
    output = get_task(spec.task).training().export_output(spec)
    if output is not None:
        lines += [f"Output `{output.id}`: {output.description}.", ""]
    lines += [
        "## Validation",
        "",
        "`test_output.npy` is this network's output on `test_input.npy` (a raw image of the "
        "dataset), preprocessed as `rdf.yaml` says. Check the package with "
        "`bioimageio test rdf.yaml` (`bioimageio.core`); cellbench's tests validate packages "
        "exported this way with `bioimageio.spec` and reproduce them with `test_model`. To "
        "score the model on the dataset's test split, `cellbench submit` a manifest of "
        "`kind: bioimageio` whose `submission` is this folder.",
        "",
        "## Reproduce",
        "",
        "```bash",
        f"cellbench train {spec.task} --dataset {dataset.get('ref', meta.get('dataset'))} "
        f"--baseline {meta.get('baseline')} --config config.yaml",
        "```",
        "",
        "with the `config:` section of the run's `config.yaml` (kept in this package's "
        "`rdf.yaml` under `config.cellbench.run_config`).",
        "",
    ]
    return "\n".join(lines)


def _space_axes(ndim: int) -> list[str]:
    return ["z", "y", "x"][3 - ndim :]


def export_bioimageio(
    run_dir: str | Path,
    dest: str | Path,
    *,
    authors: list[str],
    license: str,
    name: str | None = None,
) -> Path:
    """Write a run's model as a BioImage.IO 0.5 model package folder at ``dest``.

    Args:
        run_dir: The training run directory (or any folder with a model package and the
            run's ``config.yaml``).
        dest: The package folder to create (must not exist, or be empty).
        authors: Author names for ``rdf.yaml``.
        license: SPDX license id of the model.
        name: Model name (default: ``<baseline> <task> <dataset>``).

    Returns:
        ``dest``.

    Raises:
        CellbenchError: For a ``dest`` that is not empty, a run without a model package, a
            model whose task or baseline cannot be exported, or no authors.
    """
    run_dir, dest = Path(run_dir), Path(dest)
    problems = []
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        problems.append(f"{dest}: exists and is not an empty folder; choose a new DEST")
    if not authors:
        problems.append("export-model: at least one --author is needed for rdf.yaml")
    if not license.strip():
        problems.append("export-model: --license (an SPDX id, e.g. MIT) is needed")
    if name is not None and re.search(NAME_FORBIDDEN, name):
        problems.append(
            f"export-model: --name {name!r} may hold only letters, digits, spaces and _+-()"
        )
    if problems:
        raise CellbenchError("; ".join(problems))
    package = load_package(run_dir)
    spec = package.model.spec
    output = get_task(spec.task).training().export_output(spec)
    if output is None:
        raise CellbenchError(f"task {spec.task} models are not exported as BioImage.IO packages")
    network = package.model.export_network().eval()
    config_path = run_dir / RUN_CONFIG
    run_config: dict[str, Any] = {}
    if config_path.is_file():
        run_config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    raw, sid, card = _test_image(package, run_config)
    norm = package.normaliser
    x = torch.from_numpy(normalise_like_rdf(raw, norm))
    scripted, any_size = to_torchscript(network, x)
    with torch.no_grad():
        out = scripted(x).float().numpy()
    post = _postprocessing(norm, output)
    if post:
        stats = np.asarray(norm.target_stats, dtype=np.float32)
        shape = (1, -1) + (1,) * (out.ndim - 2)
        out = out * stats[:, 1].reshape(shape) + stats[:, 0].reshape(shape)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        scripted.save(str(tmp / WEIGHTS_FILE))
        # traced modules fix the spatial size of their control flow: no ONNX from them
        opset = _onnx(scripted, x, tmp / ONNX_FILE) if any_size else None
        np.save(tmp / TEST_INPUT, raw, allow_pickle=False)
        np.save(tmp / TEST_OUTPUT, out.astype(np.float32), allow_pickle=False)
        _sample_tensors(raw, out, output, tmp)
        _cover(raw, out, output, tmp / COVER)
        (tmp / README).write_text(_readme(package, run_config, run_dir), encoding="utf-8")
        size = [int(n) for n in raw.shape[2:]]
        rdf = _rdf(
            package,
            output,
            tmp,
            post,
            run_config,
            authors,
            license,
            name,
            sid,
            card,
            size,
            not any_size,
        )
        if opset is not None:
            rdf["weights"]["onnx"] = {
                "source": ONNX_FILE,
                "sha256": _sha256(tmp / ONNX_FILE),
                "opset_version": opset,
                "parent": "torchscript",
            }
        (tmp / RDF_FILE).write_text(
            yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True), encoding="utf-8"
        )
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _rdf(
    package: ModelPackage,
    output: ExportOutput,
    folder: Path,
    post: list[dict[str, Any]],
    run_config: dict[str, Any],
    authors: list[str],
    license: str,
    name: str | None,
    sample_id: str,
    store_card: dict[str, Any],
    test_size: list[int],
    fixed: bool,
) -> dict[str, Any]:
    meta = package.meta
    spec = package.model.spec
    spatial = _space_axes(spec.ndim)
    channel_names = list(spec.channel_names) or [f"channel-{i}" for i in range(spec.in_channels)]
    in_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel", "channel_names": channel_names},
    ]
    # a traced network takes the test image's size only
    in_axes += [
        {
            "type": "space",
            "id": a,
            "size": {"min": axis_min(test_size[i]), "step": SIZE_STEP}
            if not fixed
            else test_size[i],
        }
        for i, a in enumerate(spatial)
    ]
    out_axes: list[dict[str, Any]] = [{"type": "batch"}]
    if output.channel_names is not None:
        out_axes.append({"type": "channel", "channel_names": list(output.channel_names)})
    if output.spatial:
        out_axes += [
            {"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}} for a in spatial
        ]
    dataset_ref = str(meta.get("dataset"))
    cite = [dict(CELLBENCH_CITE)]
    card = store_card
    if card.get("citation"):
        cite.append(
            {
                "text": str(card["citation"]),
                "url": str(card.get("homepage") or CELLBENCH_CITE["url"]),
            }
        )
    output_descr: dict[str, Any] = {
        "id": output.id,
        "description": output.description,
        "axes": out_axes,
        "test_tensor": {"source": TEST_OUTPUT, "sha256": _sha256(folder / TEST_OUTPUT)},
        "data": {"type": "float32"},
    }
    if (folder / SAMPLE_OUTPUT).is_file():
        output_descr["sample_tensor"] = {
            "source": SAMPLE_OUTPUT,
            "sha256": _sha256(folder / SAMPLE_OUTPUT),
        }
    if post:
        output_descr["postprocessing"] = post
    title = name or re.sub(
        NAME_FORBIDDEN, "-", f"{meta.get('baseline')} {spec.task} {dataset_ref.replace('@', ' v')}"
    )
    return {
        "type": "model",
        "format_version": FORMAT_VERSION,
        "name": title,
        "description": (
            f"{meta.get('baseline')} trained with cellbench for {spec.task} on {dataset_ref}"
        ),
        "authors": [{"name": a} for a in authors],
        "cite": cite,
        "license": license,
        "documentation": README,
        "covers": [COVER],
        "tags": ["cellbench", spec.task, str(meta.get("baseline")), f"{spec.ndim}d"],
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": [
            {
                "id": "raw",
                "description": f"raw image (test sample {sample_id!r} of {dataset_ref})",
                "axes": in_axes,
                "test_tensor": {"source": TEST_INPUT, "sha256": _sha256(folder / TEST_INPUT)},
                "sample_tensor": {
                    "source": SAMPLE_INPUT,
                    "sha256": _sha256(folder / SAMPLE_INPUT),
                },
                "data": {"type": "float32"},
                "preprocessing": preprocessing(package.normaliser, spatial),
            }
        ],
        "outputs": [output_descr],
        "weights": {
            "torchscript": {
                "source": WEIGHTS_FILE,
                "sha256": _sha256(folder / WEIGHTS_FILE),
                "pytorch_version": torch.__version__.split("+")[0],
            }
        },
        "config": {
            "cellbench": {
                "version": __version__,
                "task": spec.task,
                "dataset": dataset_ref,
                "baseline": meta.get("baseline"),
                "normalisation": package.normaliser.to_dict(),
                "run_config": {**run_config.get("config", {}), "dataset": dataset_ref},
            }
        },
    }


__all__ = ["export_bioimageio", "normalise_like_rdf", "preprocessing", "to_torchscript"]
