"""Tiny hand-made samples for every task, for store and registry tests."""

from __future__ import annotations

import numpy as np

from cellbench.store.sample import Sample


def _blobs(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    grids = np.indices(shape)
    for k in range(1, n + 1):
        centre = [rng.integers(min(3, s // 2), max(s - 3, s // 2 + 1)) for s in shape]
        dist = sum((g - c) ** 2 for g, c in zip(grids, centre, strict=True))
        labels[(dist <= 9) & (labels == 0)] = k
    return labels


def toy_samples(task: str, n: int = 4, seed: int = 0) -> list[Sample]:
    """Samples of one task with every field that task uses, small and deterministic."""
    rng = np.random.default_rng(seed)
    splits = ["train", "train", "val", "test"]
    out = []
    for i in range(n):
        md = {"plate": f"plate-{i % 2}", "site": i, "exposure_ms": 10.0 + i}
        common = {"id": f"{task[:4]}-{i:03d}", "split": splits[i % 4], "metadata": md}
        if task == "classification":
            out.append(
                Sample(
                    image=rng.integers(0, 60000, (2, 16, 16), dtype=np.uint16),
                    channel_names=["protein", "dapi"],
                    label=i % 3,
                    pixel_size={"y": 0.3, "x": 0.3},
                    **common,
                )
            )
        elif task in ("instance-segmentation", "semantic-segmentation"):
            inst = _blobs((40, 36), 5, rng)
            out.append(
                Sample(
                    image=rng.integers(0, 4096, (1, 40, 36), dtype=np.uint16),
                    channel_names=["nuclei"],
                    instances=inst,
                    semantic=(inst > 0).astype(np.uint8) * (1 + (inst % 2)).astype(np.uint8),
                    pixel_size={"y": 0.65, "x": 0.65},
                    **common,
                )
            )
        elif task == "instance-3d":
            inst = _blobs((6, 20, 24), 4, rng).astype(np.uint32)
            out.append(
                Sample(
                    image=rng.random((1, 6, 20, 24), dtype=np.float32),
                    axes="czyx",
                    channel_names=["nuclei"],
                    instances=inst,
                    pixel_size={"z": 2.0, "y": 0.5, "x": 0.5},
                    **common,
                )
            )
        elif task == "tracking":
            frames = np.stack([_blobs((24, 24), 3, rng) for _ in range(5)])
            tracks = np.array([[1, 0, 4, 0], [2, 0, 2, 0], [3, 3, 4, 2]], dtype=np.int64)
            frames[:] = 0
            frames[:, 2:5, 2:5] = 1
            frames[:3, 10:13, 10:13] = 2
            frames[3:, 15:18, 15:18] = 3
            out.append(
                Sample(
                    image=rng.integers(0, 255, (5, 1, 24, 24), dtype=np.uint8),
                    axes="tcyx",
                    channel_names=["h2b"],
                    instances=frames,
                    tracks=tracks,
                    pixel_size={"t": 300.0, "y": 1.0, "x": 1.0},
                    **common,
                )
            )
        elif task == "augmented-microscopy":
            out.append(
                Sample(
                    image=rng.integers(0, 4096, (1, 32, 32), dtype=np.uint16),
                    channel_names=["brightfield"],
                    target=rng.random((2, 32, 32), dtype=np.float32),
                    target_channel_names=["hoechst", "membrane"],
                    pixel_size={"y": 0.65, "x": 0.65},
                    **common,
                )
            )
        else:
            raise ValueError(task)
    return out


TASK_FIXTURES = (
    "classification",
    "instance-segmentation",
    "instance-3d",
    "tracking",
    "augmented-microscopy",
)


def assert_samples_equal(a: Sample, b: Sample) -> None:
    assert a.id == b.id and a.axes == b.axes and a.split == b.split
    assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
    assert a.channel_names == b.channel_names
    assert a.label == b.label
    for name in ("semantic", "instances", "tracks", "target"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), name
    assert a.metadata == b.metadata
    assert a.pixel_size == b.pixel_size


def reseal(path) -> None:
    """Rewrite a format 2 store's manifest after a test changed its content on purpose.

    Stores are checked against their manifest on every read, so a test that plants, say, a NaN
    in a target (which :class:`~cellbench.store.zarr_store.StoreWriter` would refuse) must
    re-seal the store to test what happens downstream of the integrity checks. Stores opened
    before the change keep the old manifest: open the store again afterwards.
    """
    import json
    from pathlib import Path

    import zarr

    from cellbench.store import checksums
    from cellbench.store.integrity import forget_verdicts

    path = Path(path)
    manifest = json.loads((path / checksums.MANIFEST_NAME).read_text())
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["cellbench"]
    entries = {}
    for apath, entry in manifest["arrays"].items():
        arr = zarr.open_array(str(path / apath), mode="r")
        entry = {**entry, "sha256": checksums.hash_zarr_array(arr)}
        entry["chunk_sha256"] = {
            key: checksums.file_sha256(path / apath / key)
            for key in checksums.expected_chunk_keys(arr)
            if (path / apath / key).is_file()
        }
        entries[apath] = entry
    nodes = {
        node: checksums.node_entry(json.loads((path / node / "zarr.json").read_text()))
        for node in manifest["nodes"]
    }
    checksums.write_manifest(path, entries, meta, manifest["format_version"], nodes)
    forget_verdicts()


def memory_available(monkeypatch, nbytes: int) -> None:
    """Make cellbench's whole-image readers see ``nbytes`` of available memory.

    Sizes under ``images.ALWAYS_FITS`` are otherwise never asked about; it is lowered to 0 so
    that the small arrays of a test are checked too.
    """
    import cellbench.formats.images as images

    monkeypatch.setattr(images, "ALWAYS_FITS", 0)
    monkeypatch.setattr(images, "available_memory", lambda: nbytes)
