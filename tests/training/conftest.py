"""Tiny synthetic stores with a learnable signal, for every task."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scipy import ndimage

import tests.training.toy_models  # noqa: F401  (registers the toy baselines)
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def baseline_runner() -> ModuleType:
    """``baselines/run_baselines.py`` imported as a module (it is a script, not a package)."""
    name = "cellbench_baseline_runner"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "baselines/run_baselines.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


def discs(shape: tuple[int, ...], n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Label image of ``n`` non-overlapping-first discs/balls."""
    labels = np.zeros(shape, dtype=np.int32)
    grids = np.indices(shape)
    for k in range(1, n + 1):
        centre = [rng.uniform(radius, s - radius) for s in shape]
        dist = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        labels[(dist <= radius**2) & (labels == 0)] = k
    return labels


def _splits(n_train: int, n_val: int, n_test: int) -> list[str]:
    return ["train"] * n_train + ["val"] * n_val + ["test"] * n_test


def toy_task_samples(
    task: str,
    n_train: int = 4,
    n_val: int = 2,
    n_test: int = 1,
    size: tuple[int, ...] = (40, 36),
    seed: int = 0,
    rare: bool = False,
) -> tuple[list[Sample], dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    out = []
    classes: dict[str, list[str]] = {}
    nd = len(size)
    axes = "cyx" if nd == 2 else "czyx"
    for i, split in enumerate(_splits(n_train, n_val, n_test)):
        sid = f"{task[:4]}-{i:03d}"
        md = {"plate": f"p{i % 2}"}
        if task == "classification":
            classes = {"label": ["left", "right", "top"]}
            label = i % 3
            img = rng.normal(100, 10, (1, *size))
            h, w = size[-2], size[-1]
            region = [
                (slice(None), slice(0, w // 2)),
                (slice(None), slice(w // 2, None)),
                (slice(0, h // 2), slice(None)),
            ][label]
            img[(0, *([slice(None)] * (nd - 2)), *region)] += 300
            out.append(
                Sample(
                    id=sid,
                    image=img.clip(0).astype(np.uint16),
                    axes=axes,
                    split=split,
                    label=label,
                    metadata=md,
                )
            )
            continue
        labels = discs(size, 4 if nd == 2 else 3, 5 if nd == 2 else 3, rng)
        image = rng.normal(200, 20, size) + 600 * (labels > 0)
        if task == "semantic-segmentation":
            classes = {"semantic": ["background", "nucleus", "mitotic"]}
            sem = np.where(labels > 0, 1, 0)
            if rare:
                sem[labels == 1] = 2 if i % 3 == 0 else 1
            else:
                sem[(labels > 0) & (labels % 2 == 0)] = 2
            image = image + 600 * (sem == 2)
            out.append(
                Sample(
                    id=sid,
                    image=image[None].clip(0).astype(np.uint16),
                    axes=axes,
                    split=split,
                    semantic=sem.astype(np.uint8),
                    metadata=md,
                )
            )
        elif task == "instance-segmentation":
            out.append(
                Sample(
                    id=sid,
                    image=image[None].clip(0).astype(np.uint16),
                    axes=axes,
                    split=split,
                    instances=labels.astype(np.uint16),
                    metadata=md,
                )
            )
        elif task == "augmented-microscopy":
            target = ndimage.gaussian_filter((labels > 0).astype(np.float32), 1.0) * 5 + 1
            out.append(
                Sample(
                    id=sid,
                    image=image[None].clip(0).astype(np.uint16),
                    axes=axes,
                    split=split,
                    target=target[None].astype(np.float32),
                    target_channel_names=["fluo"],
                    metadata=md,
                )
            )
        elif task == "tracking":
            n_frames = 4
            frames = np.zeros((n_frames, *size), dtype=np.uint16)
            movie = np.zeros((n_frames, 1, *size), dtype=np.float64)
            yy, xx = np.indices(size)
            for t in range(n_frames):
                for k, (cy, cx) in enumerate([(10 + 2 * t, 10), (25, 8 + 3 * t)], start=1):
                    frames[t][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = k
                movie[t, 0] = rng.normal(200, 20, size) + 600 * (frames[t] > 0)
            tracks = np.array([[1, 0, n_frames - 1, 0], [2, 0, n_frames - 1, 0]], dtype=np.int64)
            out.append(
                Sample(
                    id=sid,
                    image=movie.clip(0).astype(np.uint16),
                    axes="tcyx",
                    split=split,
                    instances=frames,
                    tracks=tracks,
                    metadata=md,
                )
            )
        else:
            raise ValueError(task)
    return out, classes


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP barrier stalls on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., DatasetStore]:
    """Factory: ``make_store(task, **kwargs)`` builds a tiny store under ``tmp_path``."""
    counter = [0]

    def make(task: str, **kwargs) -> DatasetStore:
        samples, classes = toy_task_samples(task, **kwargs)
        counter[0] += 1
        card = {"id": f"toy-{task[:4]}", "version": "1.0", "tasks": [task]}
        return build_store(samples, tmp_path / f"store{counter[0]}.zarr", card, classes)

    return make
