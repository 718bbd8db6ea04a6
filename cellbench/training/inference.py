"""Inference over a dataset split: whole images, fitted images or overlapping tiles.

:func:`predict_split` runs a model (or a model package) on every sample of a split and
returns a :class:`~cellbench.predictions.PredictionSet`; :func:`write_split_predictions`
streams the same predictions into the canonical on-disk format (atomically). Both apply the
training-time transforms recorded in the package: the :class:`Normaliser` (statistics of the
whole image, as in training) and the :class:`InferenceSettings`:

* tracking: the whole normalised ``(T, C, [Z,] Y, X)`` sequence goes to ``model.predict``;
* image models (``sample_mode = "image"``): the image is fitted to the training size (pad or
  resize), predicted, and spatial outputs are mapped back to the original size;
* patch models whose config has its own ``tile_size`` (the U-Nets) get whole images and tile
  inside ``predict`` (blending probabilities); for other patch models (Mask R-CNN) images no
  larger than ``tile_size`` are predicted whole, larger ones in tiles overlapping by
  ``tile_overlap``, stitched as follows: class masks take each pixel from
  the tile whose core (the tile minus half of each overlap) holds it; regression images are
  blended with weights ramping down over the overlap; instances are kept from the tile whose
  core holds the object's first pixel (bounding-box minimum corner) and pasted without
  overwriting, so an object seen whole by two tiles appears once. Objects up to half the
  overlap in size are stitched exactly; larger ones can be cut at tile borders: raise
  ``tile_size`` (or ``tile_overlap``) for them.

Stable API (used by submissions): :func:`predict_split`, :func:`iter_predictions`,
:func:`write_split_predictions`, :func:`predict_image`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench.predictions import Prediction, PredictionSet, PredictionWriter
from cellbench.store.zarr_store import DatasetStore
from cellbench.training.baseline import Baseline
from cellbench.training.data.datasets import cut, fit_array
from cellbench.training.errors import TrainingError
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings, ModelPackage, load_package, settings_of

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
        meta = {"package": str(model_or_package.path), "baseline": model_or_package.model.name}
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
    settings = settings or settings_of(model)
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


def _open(store: DatasetStore | str | Path) -> DatasetStore:
    if isinstance(store, DatasetStore):
        return store
    path = Path(store)
    if path.exists():
        return DatasetStore.open(path)
    from cellbench.registry import load

    return load(str(store))


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


def tile_starts(n: int, tile: int, overlap: float) -> list[int]:
    """Tile starts along one axis: step ``tile - round(tile * overlap)``, last tile flush."""
    if n <= tile:
        return [0]
    step = max(1, tile - round(tile * overlap))
    starts = list(range(0, n - tile, step))
    starts.append(n - tile)
    return sorted(set(starts))


def _cores(starts: list[int], tile: int, n: int) -> list[tuple[int, int]]:
    """Core interval of each tile: boundaries at the middle of each overlap."""
    bounds = [0]
    for a, b in itertools.pairwise(starts):
        bounds.append((b + min(a + tile, n)) // 2)
    bounds.append(n)
    return list(itertools.pairwise(bounds))


def _ramp(length: int, start: int, tile: int, n: int, overlap: int) -> np.ndarray:
    i = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    if overlap > 0:
        if start > 0:
            w = np.minimum(w, (i + 1) / (overlap + 1))
        if start + length < n:
            w = np.minimum(w, (length - i) / (overlap + 1))
    return w


def _first_corners(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the objects in a label image and each one's bounding-box minimum corner."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, labels.ndim), np.int64)
    ids, inverse = np.unique(flat[where], return_inverse=True)
    coords = np.unravel_index(where, labels.shape)
    corners = np.full((ids.size, labels.ndim), np.iinfo(np.int64).max, dtype=np.int64)
    for axis, c in enumerate(coords):
        np.minimum.at(corners[:, axis], inverse, c)
    return ids.astype(np.int64), corners


def _predict_tiled(
    model: Baseline,
    x: np.ndarray,
    task: str,
    tile: Sequence[int],
    overlap: float,
    device: torch.device,
    settings: InferenceSettings,
) -> dict[str, Any]:
    spatial = x.shape[1:]
    tile = [min(t, n) for t, n in zip(tile, spatial, strict=True)]
    per_axis = [tile_starts(n, t, overlap) for n, t in zip(spatial, tile, strict=True)]
    cores = [_cores(s, t, n) for s, t, n in zip(per_axis, tile, spatial, strict=True)]
    out: dict[str, Any] = {}
    acc = weight = None
    mask = None
    masks: list[np.ndarray] = []
    mask_scores: list[float] = []
    obj_scores: dict[int, float] = {}
    next_id = 1
    for combo in itertools.product(*[range(len(s)) for s in per_axis]):
        start = [per_axis[a][i] for a, i in enumerate(combo)]
        core = [cores[a][i] for a, i in enumerate(combo)]
        sl = tuple(slice(s, s + t) for s, t in zip(start, tile, strict=True))
        res = _call(model, x[(slice(None), *sl)][None], device, settings)
        if task == "augmented-microscopy":
            img = np.asarray(res["image"], dtype=np.float32)
            if img.ndim == len(spatial) + 2:
                img = img[0]
            if acc is None:
                acc = np.zeros((img.shape[0], *spatial), np.float64)
                weight = np.zeros(spatial, np.float64)
            w = np.ones(())
            for a, (s, t) in enumerate(zip(start, tile, strict=True)):
                ov = round(t * overlap)
                shape = [1] * len(spatial)
                shape[a] = t
                w = w * _ramp(t, s, t, spatial[a], ov).reshape(shape)
            acc[(slice(None), *sl)] += img * w
            weight[sl] += w
            continue
        if task == "semantic-segmentation":
            pred = np.asarray(res["mask"])
            if mask is None:
                mask = np.zeros(spatial, dtype=pred.dtype)
            dst = tuple(slice(a, b) for a, b in core)
            src = tuple(slice(a - s, b - s) for (a, b), s in zip(core, start, strict=True))
            mask[dst] = pred[src]
            continue
        # instance segmentation
        lo = np.array([a for a, _ in core])
        hi = np.array([b for _, b in core])
        offset = np.array(start)
        scored = {}
        if res.get("object_ids") is not None and res.get("object_scores") is not None:
            scored = dict(
                zip(
                    np.asarray(res["object_ids"]).ravel().tolist(),
                    np.asarray(res["object_scores"]).ravel().tolist(),
                    strict=True,
                )
            )
        if res.get("mask") is not None:
            pred = np.asarray(res["mask"])
            if mask is None:
                mask = np.zeros(spatial, dtype=np.int32)
            ids, corners = _first_corners(pred)
            g = corners + offset
            keep = np.all((g >= lo) & (g < hi), axis=1)
            kept = ids[keep]
            lut = np.zeros(int(pred.max()) + 1 if pred.size else 1, dtype=np.int32)
            lut[kept] = np.arange(next_id, next_id + kept.size, dtype=np.int32)
            for old, new in zip(kept.tolist(), lut[kept].tolist(), strict=True):
                if old in scored:
                    obj_scores[new] = scored[old]
            next_id += kept.size
            relabeled = lut[pred]
            region = mask[sl]
            write = (relabeled > 0) & (region == 0)
            region[write] = relabeled[write]
        if res.get("masks") is not None:
            stack = np.asarray(res["masks"], dtype=bool)
            scores = np.asarray(res.get("mask_scores", np.ones(len(stack))), dtype=np.float64)
            for m, sc in zip(stack, scores, strict=True):
                where = np.argwhere(m)
                if where.size == 0:
                    continue
                corner = where.min(axis=0) + offset
                if np.all((corner >= lo) & (corner < hi)):
                    full = np.zeros(spatial, dtype=bool)
                    full[sl] = m
                    masks.append(full)
                    mask_scores.append(float(sc))
    if task == "augmented-microscopy":
        assert acc is not None and weight is not None
        out["image"] = (acc / np.maximum(weight, 1e-12)).astype(np.float32)
        return out
    if mask is not None:
        out["mask"] = mask
    if task == "instance-segmentation":
        if obj_scores:
            ids = np.array(sorted(obj_scores), dtype=np.int64)
            out["object_ids"] = ids
            out["object_scores"] = np.array([obj_scores[i] for i in ids], dtype=np.float64)
        if masks:
            out["masks"] = np.stack(masks)
            out["mask_scores"] = np.array(mask_scores, dtype=np.float64)
    return out


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


def _check(task: str, res: dict[str, Any], shape: tuple[int, ...], where: str) -> None:
    problems = []
    if task == "classification":
        if res.get("label") is None:
            problems.append("no 'label'")
    elif task == "augmented-microscopy":
        img = res.get("image")
        if img is None or tuple(np.shape(img)[1:]) != shape:
            problems.append(f"'image' shape {np.shape(img)} is not (C, {shape})")
    elif task == "instance-segmentation":
        if res.get("mask") is None and res.get("masks") is None:
            problems.append("neither 'mask' nor 'masks'")
        if res.get("mask") is not None and tuple(np.shape(res["mask"])) != shape:
            problems.append(f"'mask' shape {np.shape(res['mask'])} is not {shape}")
    elif task in ("semantic-segmentation", "tracking"):
        if res.get("mask") is None or tuple(np.shape(res["mask"])) != shape:
            problems.append(f"'mask' shape {np.shape(res.get('mask'))} is not {shape}")
        if task == "tracking" and res.get("tracks") is None:
            problems.append("no 'tracks'")
    if problems:
        raise TrainingError(f"{where}: model output is invalid: {'; '.join(problems)}")


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
        TrainingError: If the model returns outputs of the wrong shape.
    """
    task = model.spec.task
    c_axis = axes.index("c")
    n_channels = image.shape[c_axis]
    if n_channels != model.spec.in_channels:
        raise TrainingError(
            f"{name}: image has {n_channels} channels, model {model.name!r} expects "
            f"{model.spec.in_channels}"
        )
    stats = normaliser.image_stats(image, c_axis, name)
    x = Normaliser.apply(image, stats, c_axis)
    if task == "tracking":
        res = _call(model, x, device, settings)
        shape = (x.shape[0], *x.shape[2:])
    else:
        shape = tuple(x.shape[1:])
        tile = list(settings.tile_size)
        if settings.sample_mode == "image" and settings.image_size:
            fitted = fit_array(x, settings.image_size, settings.image_fit, 0.0, False)
            res = _unfit(_call(model, fitted[None], device, settings), shape, settings)
        elif (
            task in ("semantic-segmentation", "instance-segmentation", "augmented-microscopy")
            and settings.sample_mode == "patch"
            and tile
            and any(n > t for n, t in zip(shape, tile, strict=True))
        ):
            res = _predict_tiled(model, x, task, tile, settings.tile_overlap, device, settings)
        else:
            res = _call(model, x[None], device, settings)
    if res.get("image") is not None:
        img = np.asarray(res["image"], dtype=np.float32)
        if img.ndim == len(shape) + 2:
            img = img[0]
        res["image"] = normaliser.denormalise_target(img)
    spatial_check = shape if task != "classification" else ()
    _check(task, res, spatial_check, f"{name} ({model.name})")
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
    ds = _open(store)
    task = model.spec.task
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
            res = predict_image(model, image, ds.axes(sid), norm, sett, dev, f"sample {sid!r}")
            yield _prediction(sid, task, res)
    finally:
        model.train(was_training)


def _prediction(sid: str, task: str, res: Mapping[str, Any]) -> Prediction:
    p = Prediction(sample_id=sid)
    if task == "classification":
        p.label = int(np.asarray(res["label"]).reshape(-1)[0])
        if res.get("scores") is not None:
            p.scores = np.asarray(res["scores"], dtype=np.float32).reshape(-1)
        return p
    for name in ("mask", "object_ids", "object_scores", "masks", "mask_scores", "tracks", "image"):
        if res.get(name) is not None:
            setattr(p, name, np.asarray(res[name]))
    if p.tracks is not None:
        p.tracks = np.asarray(p.tracks, dtype=np.int64).reshape(-1, 4)
    return p


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
    ds = _open(store)
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
    prov = {**meta, **_scale_note(model, norm), **dict(producer or {})}
    return PredictionSet.from_predictions(
        model.spec.task,
        preds,
        dataset=ds.id,
        dataset_version=ds.version,
        split=split,
        producer=prov,
    )


def _scale_note(model: Baseline, norm: Normaliser) -> dict[str, Any]:
    if model.spec.task != "augmented-microscopy":
        return {}
    return {"target_scale": norm.target_scale}


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
    ds = _open(store)
    prov = {**meta, **_scale_note(model, norm), **dict(producer or {})}
    with PredictionWriter(out, model.spec.task, ds.id, ds.version, split, prov) as writer:
        for pred in iter_predictions(
            (model, norm), ds, split, settings=sett, device=dev, progress=progress
        ):
            writer.add(pred)
    return out


def default_tile(patch: Sequence[int]) -> list[int]:
    """Default inference tile: twice the training patch per axis."""
    return [int(2 * p) for p in patch]


__all__ = [
    "default_tile",
    "iter_predictions",
    "predict_image",
    "predict_split",
    "tile_starts",
    "write_split_predictions",
]
