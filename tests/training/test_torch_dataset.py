"""The public PyTorch dataset (``cellbench.torch``) and its Lightning data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cellbench.errors import CellbenchError
from cellbench.torch import CellbenchDataset, EpochShuffler
from cellbench.training.normalisation import Normaliser

# task -> (store kwargs, expected keys besides sample_id/frame/origin)
CASES = {
    "instance-segmentation": ({}, {"image", "mask"}),
    "semantic-segmentation": ({}, {"image", "mask"}),
    "classification": ({}, {"image", "label"}),
    "augmented-microscopy": ({}, {"image", "target"}),
    "tracking": ({}, {"image", "mask"}),
}


def _norm_image(store, sid: str, frame: int) -> np.ndarray:
    """The whole normalised image of a sample (frame), computed independently."""
    image = np.asarray(store.image(sid)[...])
    stats = Normaliser().image_stats(image, store.axes(sid).index("c"))
    if frame >= 0:
        image = image[frame]
    return (
        (image - stats[:, 0].reshape(-1, *[1] * (image.ndim - 1)))
        / stats[:, 1].reshape(-1, *[1] * (image.ndim - 1))
    ).astype(np.float32)


@pytest.mark.parametrize("task", sorted(CASES))
def test_keys_shapes_dtypes_per_task(make_store, task):
    kwargs, keys = CASES[task]
    store = make_store(task, **kwargs)
    ds = CellbenchDataset(store.path, "train", patch_size=16)  # task from the card
    assert ds.task == task
    assert set(ds.keys) == keys
    sample = ds[0]
    assert set(sample) == keys | {"sample_id", "frame", "origin"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (1, 16, 16)
    if "mask" in keys:
        assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (1, 16, 16)
    if "target" in keys:
        assert sample["target"].dtype == torch.float32 and sample["target"].shape == (1, 16, 16)
    if "label" in keys:
        assert sample["label"].dtype == torch.int64 and sample["label"].shape == ()
        assert int(sample["label"]) == store.label(sample["sample_id"])
    # the crop is the normalised image at its origin, with the store's labels
    sid, frame = sample["sample_id"], sample["frame"]
    assert (frame >= 0) == (task == "tracking")
    y, x = sample["origin"].tolist()
    full = _norm_image(store, sid, frame)
    np.testing.assert_allclose(sample["image"].numpy(), full[:, y : y + 16, x : x + 16], rtol=1e-5)
    if "mask" in keys:
        field = "semantic" if task == "semantic-segmentation" else "instances"
        lab = np.asarray(store.labels(sid, field)[...])
        lab = lab[frame] if frame >= 0 else lab
        assert np.array_equal(sample["mask"][0].numpy(), lab[y : y + 16, x : x + 16])


def test_3d_instance_crops(make_store):
    store = make_store("instance-segmentation", size=(8, 20, 24))
    sample = CellbenchDataset(store, "train", patch_size=(4, 8, 8))[1]
    assert sample["image"].shape == (1, 4, 8, 8) and sample["mask"].shape == (1, 4, 8, 8)


def test_eval_tiles_are_deterministic_and_cover_the_image(make_store):
    store = make_store("semantic-segmentation")  # 40 x 36 images
    ds = CellbenchDataset(store, "val", patch_size=16)
    assert not ds.train
    # 40 -> starts 0, 16, 24; 36 -> 0, 16, 20: 9 tiles per image, 2 val images
    assert len(ds) == 2 * 9
    again = CellbenchDataset(store, "val", patch_size=16)
    for i in range(len(ds)):
        a, b = ds[i], again[i]
        assert a["sample_id"] == b["sample_id"] and torch.equal(a["image"], b["image"])
    for sid in store.sample_ids("val"):
        covered = np.zeros((40, 36), bool)
        image = _norm_image(store, sid, -1)
        mask = np.asarray(store.labels(sid, "semantic")[...])
        for i in range(len(ds)):
            s = ds[i]
            if s["sample_id"] != sid:
                continue
            y, x = s["origin"].tolist()
            covered[y : y + 16, x : x + 16] = True
            np.testing.assert_allclose(
                s["image"][0].numpy(), image[0, y : y + 16, x : x + 16], rtol=1e-5
            )
            assert np.array_equal(s["mask"][0].numpy(), mask[y : y + 16, x : x + 16])
        assert covered.all()


def test_whole_images_and_padding(make_store):
    store = make_store("semantic-segmentation")
    whole = CellbenchDataset(store, "test")
    assert len(whole) == 1 and whole[0]["image"].shape == (1, 40, 36)
    big = CellbenchDataset(store, "test", patch_size=48)  # larger than the image: padded
    s = big[0]
    assert s["image"].shape == (1, 48, 48)
    assert (s["mask"][0, 40:] == -1).all() and (s["mask"][0, :, 36:] == -1).all()
    assert (s["image"][0, 40:] == 0).all()


def test_training_crops_seeded_worker_safe_and_inside(make_store):
    store = make_store("instance-segmentation")
    ds = CellbenchDataset(store, "train", patch_size=(16, 12), seed=3, samples_per_epoch=12)
    assert len(ds) == 12
    origins = [tuple(ds[i]["origin"].tolist()) for i in range(len(ds))]
    assert origins == [tuple(ds[i]["origin"].tolist()) for i in range(len(ds))]
    assert all(0 <= y <= 40 - 16 and 0 <= x <= 36 - 12 for y, x in origins)
    assert len(set(origins)) > 1
    ds.set_epoch(1)
    assert [tuple(ds[i]["origin"].tolist()) for i in range(len(ds))] != origins
    ds.set_epoch(0)
    # two worker processes give exactly the crops of the main process
    loader = DataLoader(ds, batch_size=4, num_workers=2, sampler=EpochShuffler(ds, False))
    batches = list(loader)
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 1, 16, 12)
    got = torch.cat([b["origin"] for b in batches]).tolist()
    assert [tuple(o) for o in got] == origins
    ids = [sid for b in batches for sid in b["sample_id"]]
    assert ids == [ds[i]["sample_id"] for i in range(12)]


def test_transform_and_errors(make_store):
    store = make_store("classification")
    ds = CellbenchDataset(store, "train", transform=lambda s: {**s, "image": s["image"] * 0})
    assert float(ds[0]["image"].abs().sum()) == 0
    with pytest.raises(CellbenchError, match="serves classification, not task"):
        CellbenchDataset(store, "train", task="semantic-segmentation")
    with pytest.raises(CellbenchError, match="no split 'nope'"):
        CellbenchDataset(store, "nope")
    with pytest.raises(CellbenchError, match="needs 2 positive sizes"):
        CellbenchDataset(store, "train", patch_size=(4, 4, 4))


def test_lightning_fast_dev_run(make_store, tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from cellbench.torch import CellbenchDataModule

    store = make_store("semantic-segmentation")

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
            self.seen: list[tuple[int, ...]] = []

        def training_step(self, batch, _):
            self.seen.append(tuple(batch["image"].shape))
            out = self.conv(batch["image"])
            return torch.nn.functional.cross_entropy(out, batch["mask"][:, 0], ignore_index=-1)

        def validation_step(self, batch, _):
            self.seen.append(tuple(batch["image"].shape))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    net = Net()
    dm = CellbenchDataModule(str(store.path), patch_size=16, batch_size=2)
    trainer = pl.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(net, datamodule=dm)
    assert net.seen == [(2, 1, 16, 16), (2, 1, 16, 16)]
    assert trainer.state.finished


def test_data_module_without_lightning_is_one_clear_error(monkeypatch):
    import sys

    import cellbench.torch as ct

    monkeypatch.setattr(ct, "_DATA_MODULE", None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(CellbenchError, match=r"pip install 'cellbench\[lightning\]'"):
        ct.CellbenchDataModule  # noqa: B018


def test_dataset_normalisation_modes(make_store):
    store = make_store("augmented-microscopy")
    ds = CellbenchDataset(
        store, "val", normalisation="dataset-meanstd", target_normalisation="dataset-meanstd"
    )
    ids = store.sample_ids("train")
    pixels = np.concatenate([np.asarray(store.image(s)[...], np.float64).ravel() for s in ids])
    mean, std = ds.normaliser.channel_stats[0]
    assert mean == pytest.approx(pixels.mean()) and std == pytest.approx(pixels.std())
    sample = ds[0]  # a whole image (no patch size)
    raw = np.asarray(store.image(sample["sample_id"])[...], np.float64)
    assert sample["origin"].tolist() == [0, 0]
    np.testing.assert_allclose(sample["image"].numpy(), (raw - mean) / std, rtol=1e-5)
    with pytest.raises(CellbenchError, match="normalisation mode 'zscore' not one of"):
        CellbenchDataset(store, "val", normalisation="zscore")


def test_dataset_pickles_for_spawned_workers(make_store):
    """Spawn and forkserver workers (macOS, Python 3.14 on Linux) get a pickled copy."""
    import pickle

    store = make_store("instance-segmentation")
    ds = CellbenchDataset(store, "train", patch_size=16, seed=5)
    ds.set_epoch(2)
    copy = pickle.loads(pickle.dumps(ds))
    a, b = ds[3], copy[3]
    assert a["sample_id"] == b["sample_id"] and torch.equal(a["image"], b["image"])
    assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["origin"], b["origin"])
