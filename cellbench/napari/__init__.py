"""napari plugin (npe2): open cellbench dataset stores and prediction sets, with error overlays.

napari's OME-Zarr reader opens one sample of a store, not the store root. This reader opens the
root: samples of equal shape become one stack (first axis = sample, in table order; the sample
ids are in each layer's ``metadata["sample_ids"]``), with the image (one layer per channel),
instance and semantic labels and targets as separate layers, scaled by the pixel size where it is
known. A prediction set (``cellbench predict`` output, canonical Zarr) opens the same way; for
instance segmentation, when the dataset it predicts is in the cache, it also opens two
widget-free *error overlay* layers: ground-truth objects filled and predicted objects outlined by
error class (correct, missed, false positive, split, merge, catastrophe), in the colours of the
leaderboard's overlays (:data:`cellbench.leaderboard.plots.ERROR_COLOURS`).

The manifest is ``napari.yaml`` beside this file, registered with the ``napari.manifest`` entry
point in ``pyproject.toml``; the functions here need neither napari nor Qt (layer data are
``(data, kwargs, layer_type)`` tuples), so they are tested through npe2 without a display.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]

_STORE_ATTR = "cellbench"
_PREDICTIONS_ATTR = "cellbench_predictions"


def _root_attrs(path: Path) -> dict[str, Any]:
    meta = path / "zarr.json"
    if not meta.is_file():
        return {}
    try:
        return dict(json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {})
    except (OSError, ValueError):
        return {}


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader for a cellbench store root or prediction set, or None for anything else."""
    if not isinstance(path, str | Path):
        return None
    attrs = _root_attrs(Path(path))
    if _PREDICTIONS_ATTR in attrs:
        return read_predictions
    if _STORE_ATTR in attrs:
        return read_store
    return None


class SampleStack:
    """Samples of one shape stacked lazily along a new first axis (read on indexing).

    Args:
        arrays: One array-like per sample (zarr arrays: nothing is read until indexed).
    """

    def __init__(self, arrays: Sequence[Any]) -> None:
        self.arrays = list(arrays)
        first = self.arrays[0]
        self.dtype = np.dtype(first.dtype)
        self.shape = (len(self.arrays), *tuple(first.shape))
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        head, rest = key[0], key[1:]
        if isinstance(head, int | np.integer):
            return np.asarray(self.arrays[int(head)][rest] if rest else self.arrays[int(head)][...])
        picked = range(len(self.arrays))[head]
        return np.stack(
            [np.asarray(self.arrays[i][rest] if rest else self.arrays[i][...]) for i in picked]
        )

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


def _groups(keys: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], list[int]]:
    out: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return out


def _scale(pixel: dict[str, float], axes: str) -> list[float]:
    """The napari scale of a stacked layer: 1 for the sample axis, the pixel size if known."""
    return [1.0, *(float(pixel.get(a, 1.0)) for a in axes)]


def read_store(path: str | Path) -> list[LayerData]:
    """Layers of a dataset store: per shape, the image, labels and targets as sample stacks."""
    from cellbench.store.zarr_store import DatasetStore

    store = DatasetStore.open(path)
    ids = store.sample_ids()
    metas = {s: (store.axes(s), store.channel_names(s), store.pixel_size(s)) for s in ids}
    keys = [(metas[s][0], tuple(store.image(s).shape)) for s in ids]
    groups = _groups(keys)
    layers: list[LayerData] = []
    for (axes, shape), members in groups.items():
        sids = [ids[i] for i in members]
        suffix = "" if len(groups) == 1 else f" {'x'.join(map(str, shape))}"
        pixel = metas[sids[0]][2]
        spatial = axes.replace("c", "")
        meta = {"sample_ids": sids, "dataset": f"{store.id}@{store.version}"}
        kwargs: dict[str, Any] = {
            "name": f"{store.id} image{suffix}",
            "metadata": meta,
            "scale": _scale(pixel, spatial),
        }
        if "c" in axes:
            names = metas[sids[0]][1]
            kwargs["channel_axis"] = 1 + axes.index("c")
            kwargs["name"] = [f"{store.id} {n}{suffix}" for n in names] or kwargs["name"]
        layers.append((SampleStack([store.image(s) for s in sids]), kwargs, "image"))
        for field in ("instances", "semantic"):
            if field in store.fields:
                stack = SampleStack([store.labels(s, field) for s in sids])
                layers.append(
                    (
                        stack,
                        {
                            "name": f"{store.id} {field}{suffix}",
                            "metadata": meta,
                            "scale": _scale(pixel, spatial),
                        },
                        "labels",
                    )
                )
        if "target" in store.fields:
            stack = SampleStack([store.target(s) for s in sids])
            target_axes = "c" + spatial.replace("t", "")
            layers.append(
                (
                    stack,
                    {
                        "name": f"{store.id} target{suffix}",
                        "metadata": meta,
                        "channel_axis": 1,
                        "scale": _scale(pixel, target_axes.replace("c", "")),
                    },
                    "image",
                )
            )
    return layers


def read_predictions(path: str | Path) -> list[LayerData]:
    """Layers of a prediction set: predicted masks or images, and error overlays when possible."""
    from cellbench.predictions import load_predictions

    pset = load_predictions(path)
    ids = pset.sample_ids
    preds = [pset.get(s) for s in ids]
    layers: list[LayerData] = []
    for field, kind in (("mask", "labels"), ("image", "image")):
        present = [(s, getattr(p, field)) for s, p in zip(ids, preds, strict=True)]
        present = [(s, a) for s, a in present if a is not None]
        groups = _groups([tuple(a.shape) for _, a in present])
        for shape, members in groups.items():
            sids = [present[i][0] for i in members]
            suffix = "" if len(groups) == 1 else f" {'x'.join(map(str, shape))}"
            kwargs: dict[str, Any] = {
                "name": f"predicted {field}{suffix}",
                "metadata": {"sample_ids": sids, "task": pset.task},
            }
            if kind == "image":
                kwargs["channel_axis"] = 1
            layers.append((np.stack([present[i][1] for i in members]), kwargs, kind))
    layers += error_overlay_layers(pset)
    return layers


def overlay_colormap() -> dict[Any, str]:
    """Label value -> colour of the error overlay layers (leaderboard colours; 0 transparent)."""
    from cellbench.leaderboard.plots import ERROR_COLOURS
    from cellbench.tasks.instance_segmentation.overlays import ERROR_CODES

    return {None: "transparent", 0: "transparent"} | {
        code: ERROR_COLOURS[name] for name, code in ERROR_CODES.items()
    }


def error_overlay_layers(pset: Any) -> list[LayerData]:
    """Two Labels layers of object error classes, when the task draws them and the data is cached.

    The task decides (:meth:`cellbench.tasks.base.Task.error_overlay`); tasks without object
    errors add no layer.
    """
    from cellbench.errors import CellbenchError
    from cellbench.registry import load
    from cellbench.tasks import get_task
    from cellbench.tasks.instance_segmentation.overlays import ERROR_CODES

    if not pset.dataset:
        return []
    try:
        task = get_task(pset.task)
        store = load(f"{pset.dataset}@{pset.dataset_version}")
    except (CellbenchError, KeyError):
        return []
    known = set(store.sample_ids())
    pairs = []
    for sid in pset.sample_ids:
        if sid not in known:
            continue
        painted = task.error_overlay(task.ground_truth(store, sid), pset.get(sid), sid)
        if painted is None:
            continue
        pairs.append((sid, *painted))
    groups = _groups([tuple(gt.shape) for _, gt, _ in pairs])
    layers: list[LayerData] = []
    colormap = overlay_colormap()
    for shape, members in groups.items():
        sids = [pairs[i][0] for i in members]
        suffix = "" if len(groups) == 1 else f" {'x'.join(map(str, shape))}"
        meta = {"sample_ids": sids, "codes": dict(ERROR_CODES)}
        for part, extra in (("ground truth", {"opacity": 0.45}), ("predicted", {"contour": 1})):
            index = 1 if part == "ground truth" else 2
            kwargs = {"name": f"errors: {part}{suffix}", "metadata": meta, "colormap": colormap}
            stack = np.stack([pairs[i][index] for i in members])
            layers.append((stack, kwargs | extra, "labels"))
    return layers
