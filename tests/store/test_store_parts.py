"""A store built from one-sample parts (``write_part`` + ``StoreWriter.adopt``, what parallel
ingest does) is the store ``build_store`` writes from the same samples: same digest."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.errors import ValidationError
from cellbench.store.zarr_store import DatasetStore, StoreWriter, build_store, write_part
from tests.factories import toy_samples

TASKS = ["classification", "instance-segmentation", "instance-3d", "tracking",
         "augmented-microscopy", "tracking+seg"]  # fmt: skip


def _samples(task: str) -> list:
    if task != "tracking+seg":
        return toy_samples(task, 4)
    samples = toy_samples("tracking", 4)
    seg = np.zeros_like(samples[2].instances)
    seg[1] = samples[2].instances[1]  # frame 1 annotated: the store switches to format 3
    samples[2].seg, samples[2].seg_annotated = seg, np.array([[1, -1]], np.int64)
    return samples


@pytest.mark.parametrize("task", TASKS)
def test_store_from_parts_has_the_digest_of_build_store(task, tmp_path):
    samples = _samples(task)
    task = task.split("+")[0]
    card = {"id": "toy", "version": "1", "tasks": [task]}
    classes = {"label": ["a", "b", "c"]} if task == "classification" else None
    reference = build_store(samples, tmp_path / "ref.zarr", card, classes)
    writer = StoreWriter(tmp_path / "parts.zarr", card, classes)
    for k, sample in enumerate(samples):
        part = write_part(tmp_path / f"part{k}", sample, {"id": "p", "version": "1"}, classes)
        writer.adopt(tmp_path / f"part{k}", part)
    writer.close()
    got = DatasetStore.open(tmp_path / "parts.zarr")
    assert got.manifest["format_version"] == reference.manifest["format_version"]
    assert got.checksum == reference.checksum
    assert got.sample_ids() == reference.sample_ids()
    assert got.verify() == []


def test_adopting_a_duplicate_id_is_refused(tmp_path):
    sample = toy_samples("instance-segmentation", 1)[0]
    writer = StoreWriter(tmp_path / "s.zarr", {"id": "toy", "version": "1"})
    for k in range(2):
        part = write_part(tmp_path / f"p{k}", sample, {"id": "p", "version": "1"})
        if k == 0:
            writer.adopt(tmp_path / f"p{k}", part)
    with pytest.raises(ValidationError, match=f"sample {sample.id!r}: duplicate id"):
        writer.adopt(tmp_path / "p1", part)
