"""Inference over a dataset split: whole images, fitted images or overlapping tiles.

:func:`predict_split` runs a model package (or a model with its normaliser) on every sample of
a split and returns a :class:`~cellbench.predictions.PredictionSet`;
:func:`write_split_predictions` streams the same predictions into the canonical on-disk format
(atomically). Both apply the training-time transforms recorded in the
:class:`~cellbench.training.package.ModelPackage`: the :class:`Normaliser` (statistics of the
whole image, as in training) and the :class:`InferenceSettings`. What differs between tasks
is the task's (:meth:`cellbench.tasks.base.Task.training`):

* sequence tasks (tracking): the whole normalised ``(T, C, [Z,] Y, X)`` sequence goes to
  ``model.predict``;
* image models (``sample_mode = "image"``): the image is fitted to the training size (pad or
  resize), predicted, and spatial outputs are mapped back to the original size;
* patch models whose ``tiling`` policy is ``"model"`` (the U-Nets) get whole images and tile
  inside ``predict`` (blending probabilities); for other patch models (Mask R-CNN) images no
  larger than ``tile_size`` are predicted whole, larger ones in tiles overlapping by
  ``tile_overlap`` (:class:`~cellbench.training.tiles.Tiler`), put back together by the task's
  :class:`~cellbench.tasks.training.TileStitcher` (class masks: each pixel from the tile whose
  core holds it; regression images: blended with weights ramping over the overlap; instances:
  kept from the tile whose core holds the object's first pixel, pasted once). Objects up to
  half the overlap in size are stitched exactly; larger ones can be cut at tile borders:
  raise ``tile_size`` (or ``tile_overlap``) for them.

Every prediction is checked with the task's one output check
(:meth:`~cellbench.tasks.base.Task.check_output`) before it is returned.

Stable API (used by submissions): :func:`predict_split`, :func:`iter_predictions`,
:func:`write_split_predictions`, :func:`predict_image`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench.predictions import Prediction, PredictionSet, PredictionWriter
from cellbench.registry import open_dataset
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks import get_task
from cellbench.tasks.training import TaskTraining, TileStitcher
from cellbench.training.baseline import Baseline
from cellbench.training.data.datasets import cut, fit_array
from cellbench.training.errors import TrainingError
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings, ModelPackage, load_package
from cellbench.training.tiles import Tiler

ModelLike = Baseline | ModelPackage | tuple[Baseline, Normaliser] | str | Path


def _resolve(
    model_or_package: ModelLike,
    normaliser: Normaliser | None,
    settings: InferenceSettings | None,
    device: str | torch.device | None,
) -> tuple[Baseline, Normaliser, InferenceSettings, torch.device, dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(model_or_package, str | Path):
        model_or_package = load_package(model_or_package, device or "cpu")
    if isinstance(model_or_package, ModelPackage):
        if model_or_package.path is not None:
            meta = {"package": str(model_or_package.path)}
        meta["baseline"] = model_or_package.model.name
        model = model_or_package.model
        normaliser = normaliser or model_or_package.normaliser
        settings = settings or model_or_package.settings
    elif isinstance(model_or_package, tuple):
        model, pkg_norm = model_or_package
        normaliser = normaliser or pkg_norm
    else:
        model = model_or_package
    if normaliser is None:
        raise TrainingError(
            "predict_split needs the normaliser the model was trained with "
            "(pass a package path, a ModelPackage or (model, normaliser))"
        )
    settings = settings or InferenceSettings.for_model(model)
    if device is not None:
        model.to(device)
    param = next(iter(model.parameters()), None)
    dev = (
        torch.device(device)
        if device is not None
        else (param.device if param is not None else torch.device("cpu"))
    )
    meta.setdefault("baseline", model.name)
    return model, normaliser, settings, dev, meta


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu").numpy()
    return value


def _call(
    model: Baseline, x: np.ndarray, device: torch.device, settings: InferenceSettings
) -> dict[str, Any]:
    tensor = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    amp = device.type == "cuda" and settings.precision == "bf16"
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    with torch.no_grad(), ctx:
        out = model.predict(tensor)
    return {k: _to_numpy(v) for k, v in out.items()}


def _predict_tiled(
    model: Baseline,
    x: np.ndarray,
    stitcher: TileStitcher,
    tiler: Tiler,
    device: torch.device,
    settings: InferenceSettings,
) -> dict[str, Any]:
    """Predict the tiles of a normalised image ``(C, *spatial)`` and stitch them."""
    for tile in tiler.tiles(x.shape[1:]):
        stitcher.add(tile, _call(model, x[(slice(None), *tile.slices)][None], device, settings))
    return stitcher.result()


def _unfit(
    res: dict[str, Any], shape: tuple[int, ...], settings: InferenceSettings
) -> dict[str, Any]:
    """Map spatial outputs predicted on a fitted image back to the original shape."""
    size = tuple(settings.image_size)
    if size == shape:
        return res
    out = dict(res)
    nd = len(shape)

    def back(data: np.ndarray, is_label: bool) -> np.ndarray:
        if settings.image_fit == "resize":
            return fit_array(data, shape, "resize", 0, is_label)
        origin = tuple(-((n - s) // 2) for n, s in zip(shape, size, strict=True))
        region = tuple(slice(0, s) for s in size)
        return cut(data, region, origin, shape, 0, data.dtype)

    if res.get("mask") is not None:
        out["mask"] = back(np.asarray(res["mask"]), True)
        if res.get("object_ids") is not None:
            present = np.isin(np.asarray(res["object_ids"]), out["mask"])
            out["object_ids"] = np.asarray(res["object_ids"])[present]
            if res.get("object_scores") is not None:
                out["object_scores"] = np.asarray(res["object_scores"])[present]
    if res.get("masks") is not None:
        stack = np.asarray(res["masks"])
        back_masks = (
            np.stack([back(m.astype(np.uint8), True) for m in stack])
            if len(stack)
            else np.zeros((0, *shape), bool)
        )
        keep = back_masks.reshape(len(back_masks), -1).any(axis=1)
        out["masks"] = back_masks[keep].astype(bool)
        if res.get("mask_scores") is not None:
            out["mask_scores"] = np.asarray(res["mask_scores"])[keep]
    if res.get("image") is not None:
        img = np.asarray(res["image"], dtype=np.float32)
        if img.ndim == nd + 2:
            img = img[0]
        out["image"] = back(img, False)
    return out


def _predict(
    model: Baseline,
    hooks: TaskTraining,
    image: np.ndarray,
    axes: str,
    normaliser: Normaliser,
    settings: InferenceSettings,
    device: torch.device,
    name: str,
    sample_id: str,
) -> tuple[dict[str, Any], Prediction]:
    """Predict one raw image; the checked prediction fields and the :class:`Prediction`."""
    c_axis = axes.index("c")
    n_channels = image.shape[c_axis]
    if n_channels != model.spec.in_channels:
        raise TrainingError(
            f"{name}: image has {n_channels} channels, model {model.name!r} expects "
            f"{model.spec.in_channels}"
        )
    stats = normaliser.image_stats(image, c_axis, name)
    x = Normaliser.apply(image, stats, c_axis)
    tiler = settings.tiler
    if hooks.sequences:
        res = _call(model, x, device, settings)
        shape = (x.shape[0], *x.shape[2:])
    else:
        shape = tuple(x.shape[1:])
        stitcher = None
        if settings.sample_mode == "patch" and tiler.applies(shape):
            stitcher = hooks.stitcher(shape)
        if settings.sample_mode == "image" and settings.image_size:
            fitted = fit_array(x, settings.image_size, settings.image_fit, 0.0, False)
            res = _unfit(_call(model, fitted[None], device, settings), shape, settings)
        elif stitcher is not None:
            res = _predict_tiled(model, x, stitcher, tiler, device, settings)
        else:
            res = _call(model, x[None], device, settings)
    res = hooks.postprocess(res, shape, normaliser)
    prediction = hooks.to_prediction(sample_id, res)
    where = f"{name} ({model.name})"
    expect = hooks.output_spec(shape, model.spec.n_classes, model.spec.out_channels)
    problems = hooks.task.check_output(prediction, expect, where)
    if problems:
        details = "; ".join(p.removeprefix(f"{where}: ") for p in problems)
        raise TrainingError(f"{where}: model output is invalid: {details}")
    return res, prediction


def predict_image(
    model: Baseline,
    image: np.ndarray,
    axes: str,
    normaliser: Normaliser,
    settings: InferenceSettings,
    device: torch.device,
    name: str = "image",
) -> dict[str, Any]:
    """Predict one raw image (as stored: axes ``c[z]yx`` or ``tc[z]yx``).

    Args:
        model: The model, in eval mode.
        image: Raw image.
        axes: Its axes.
        normaliser: Training normalisation.
        settings: Inference settings.
        device: Device of the model.
        name: Name for error messages.

    Returns:
        The :class:`~cellbench.predictions.Prediction` fields (NumPy, original shape).

    Raises:
        TrainingError: If the model's output fails the task's output check.
    """
    hooks = get_task(model.spec.task).training()
    res, _ = _predict(model, hooks, image, axes, normaliser, settings, device, name, name)
    return res


def iter_predictions(
    model_or_package: ModelLike,
    store: DatasetStore | str | Path,
    split: str,
    *,
    normaliser: Normaliser | None = None,
    settings: InferenceSettings | None = None,
    device: str | torch.device | None = None,
    sample_ids: Sequence[str] | None = None,
    progress: bool = False,
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per sample of a split (see :func:`predict_split`)."""
    from tqdm.auto import tqdm

    model, norm, sett, dev, _ = _resolve(model_or_package, normaliser, settings, device)
    ds = open_dataset(store)
    task = model.spec.task
    hooks = get_task(task).training()
    if ds.tasks and task not in ds.tasks:
        raise TrainingError(
            f"model {model.name!r} predicts {task}, dataset {ds.id}@{ds.version} serves "
            f"{', '.join(ds.tasks)}"
        )
    ids = list(sample_ids) if sample_ids is not None else ds.sample_ids(split)
    was_training = model.training
    model.eval()
    try:
        for sid in tqdm(
            ids, desc=f"predict {split}", unit="sample", disable=None if progress else True
        ):
            image = np.asarray(ds.image(sid)[...])
            _, prediction = _predict(
                model, hooks, image, ds.axes(sid), norm, sett, dev, f"sample {sid!r}", sid
            )
            yield prediction
    finally:
        model.train(was_training)


def predict_split(
    model_or_package: ModelLike,
    store: DatasetStore | str | Path,
    split: str,
    *,
    normaliser: Normaliser | None = None,
    settings: InferenceSettings | None = None,
    device: str | torch.device | None = None,
    sample_ids: Sequence[str] | None = None,
    progress: bool = False,
    producer: Mapping[str, Any] | None = None,
) -> PredictionSet:
    """Predict every sample of a split, in memory.

    Args:
        model_or_package: A package folder (run directory) or ``model.json`` path, a
            :class:`ModelPackage`, ``(model, normaliser)`` or a bare model (then pass
            ``normaliser``).
        store: The dataset (an open store, a store path or ``id[@version]``).
        split: Split to predict.
        normaliser: Overrides the package's normaliser.
        settings: Overrides the package's inference settings.
        device: Device to run on (default: where the model is; packages load on CPU).
        sample_ids: Predict only these samples (default: the whole split).
        progress: Show a progress bar.
        producer: Extra provenance recorded in the prediction set.

    Returns:
        The in-memory prediction set (what :func:`cellbench.scoring.score` takes).
    """
    model, norm, sett, dev, meta = _resolve(model_or_package, normaliser, settings, device)
    ds = open_dataset(store)
    preds = list(
        iter_predictions(
            (model, norm),
            ds,
            split,
            settings=sett,
            device=dev,
            sample_ids=sample_ids,
            progress=progress,
        )
    )
    prov = {**meta, **_provenance(model, norm), **dict(producer or {})}
    return PredictionSet.from_predictions(
        model.spec.task,
        preds,
        dataset=ds.id,
        dataset_version=ds.version,
        split=split,
        producer=prov,
    )


def _provenance(model: Baseline, norm: Normaliser) -> dict[str, Any]:
    """What the task records about predictions (e.g. the scale of predicted targets)."""
    return get_task(model.spec.task).training().provenance(norm)


def write_split_predictions(
    model_or_package: ModelLike,
    store: DatasetStore | str | Path,
    split: str,
    out: str | Path,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    producer: Mapping[str, Any] | None = None,
) -> Path:
    """Predict a split and write the canonical prediction set at ``out`` (atomically).

    Predictions are streamed to disk one sample at a time, so memory stays bounded.

    Raises:
        TrainingError: If ``out`` already exists.
    """
    out = Path(out)
    if out.exists():
        raise TrainingError(f"{out}: already exists; choose a new output path")
    model, norm, sett, dev, meta = _resolve(model_or_package, None, None, device)
    ds = open_dataset(store)
    prov = {**meta, **_provenance(model, norm), **dict(producer or {})}
    with PredictionWriter(out, model.spec.task, ds.id, ds.version, split, prov) as writer:
        for pred in iter_predictions(
            (model, norm), ds, split, settings=sett, device=dev, progress=progress
        ):
            writer.add(pred)
    return out


__all__ = [
    "iter_predictions",
    "predict_image",
    "predict_split",
    "write_split_predictions",
]
