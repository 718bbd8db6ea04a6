import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import ndimage

from cellbench.predictions import load_predictions
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from cellbench.training.baseline import Baseline, BaselineConfig, DataSpec, register
from cellbench.training.config import TrainConfig
from cellbench.training.engine import train
from cellbench.training.errors import TrainingError
from cellbench.training.inference import predict_image, predict_split, write_split_predictions
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings, load_package
from cellbench.training.tiles import overlap_step, tile_cores, tile_starts
from tests.training.toy_models import ToyConfig, ToyPointwise

CPU = torch.device("cpu")


@dataclass
class _Empty(BaselineConfig):
    pass


@register
class ThresholdInstances(Baseline):
    """Connected components of ``image > 0.5``; score = size / 100 (a purely local model)."""

    name = "test-threshold"
    tasks = ("instance-segmentation",)
    config_class = _Empty

    def loss(self, batch):
        return torch.zeros((), requires_grad=True), {}

    @torch.no_grad()
    def predict(self, image):
        labels, n = ndimage.label(image[0, 0].numpy() > 0.5)
        ids = np.arange(1, n + 1)
        sizes = ndimage.sum(np.ones_like(labels), labels, ids)
        return {"mask": labels, "object_ids": ids, "object_scores": np.asarray(sizes) / 100}


@register
class EchoImageModel(Baseline):
    """Image-mode semantic model that returns its input's first channel as the class mask."""

    name = "test-echo"
    tasks = ("semantic-segmentation",)
    config_class = _Empty
    sample_mode = "image"

    def loss(self, batch):
        return torch.zeros((), requires_grad=True), {}

    @torch.no_grad()
    def predict(self, image):
        return {"mask": image[0, 0].round().to(torch.int64).numpy()}


@pytest.mark.parametrize(
    "n,tile,overlap",
    [(100, 32, 0.25), (33, 32, 0.4), (512, 256, 0.1), (20, 32, 0.25), (97, 40, 0.0)],
)
def test_tiles_cover_the_axis_and_cores_partition_it(n, tile, overlap):
    t = min(tile, n)
    starts = tile_starts(n, t, overlap_step(t, overlap))
    assert starts[0] == 0 and starts[-1] == n - t
    cores = tile_cores(starts, t, n)
    assert cores[0][0] == 0 and cores[-1][1] == n
    for (_, end), (start, _) in itertools.pairwise(cores):
        assert end == start
    for s, (a, b) in zip(starts, cores, strict=True):
        assert s <= a < b <= s + t


def _semantic_model(n_classes=3, seed=0):
    torch.manual_seed(seed)
    spec = DataSpec(
        task="semantic-segmentation", in_channels=2, class_names=("a", "b", "c")[:n_classes]
    )
    return ToyPointwise(ToyConfig(), spec).eval()


def test_tiled_semantic_and_regression_equal_whole_image_prediction():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 5000, (2, 101, 77)).astype(np.uint16)
    norm = Normaliser()
    model = _semantic_model()
    whole = InferenceSettings(patch_size=[32, 32], tile_size=[])
    tiled = InferenceSettings(patch_size=[32, 32], tile_size=[40, 36], tile_overlap=0.25)
    a = predict_image(model, image, "cyx", norm, whole, CPU)
    b = predict_image(model, image, "cyx", norm, tiled, CPU)
    assert b["mask"].shape == (101, 77)
    np.testing.assert_array_equal(a["mask"], b["mask"])

    torch.manual_seed(1)
    spec = DataSpec(task="augmented-microscopy", in_channels=2, out_channels=3)
    reg = ToyPointwise(ToyConfig(), spec).eval()
    a = predict_image(reg, image, "cyx", norm, whole, CPU)
    b = predict_image(reg, image, "cyx", norm, tiled, CPU)
    assert b["image"].shape == (3, 101, 77)
    np.testing.assert_allclose(a["image"], b["image"], rtol=1e-5, atol=1e-5)


def test_tiled_instances_are_stitched_once_with_their_scores():
    rng = np.random.default_rng(3)
    yy, xx = np.indices((130, 110))
    image = np.zeros((1, 130, 110), np.float32)
    for cy in range(6, 124, 14):  # separate discs of diameter 9 on a jittered grid
        for cx in range(6, 104, 14):
            dy, dx = rng.integers(-2, 3, 2)
            image[0][(yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 <= 16] = 1
    model = ThresholdInstances(_Empty(), DataSpec(task="instance-segmentation", in_channels=1))
    norm = Normaliser(mode="none")
    whole = predict_image(model, image, "cyx", norm, InferenceSettings(), CPU)
    settings = InferenceSettings(patch_size=[24, 24], tile_size=[48, 48], tile_overlap=0.4)
    tiled = predict_image(model, image, "cyx", norm, settings, CPU)
    w, t = whole["mask"], tiled["mask"]
    assert (w > 0).sum() == (t > 0).sum()
    # same partition into objects: a bijection between whole-image and stitched ids
    pairs = {(int(a), int(b)) for a, b in zip(w[w > 0], t[w > 0], strict=True)}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    assert len(pairs) == int(w.max())
    score = dict(zip(tiled["object_ids"].tolist(), tiled["object_scores"].tolist(), strict=True))
    for obj in np.unique(t[t > 0]):
        assert score[int(obj)] == pytest.approx((t == obj).sum() / 100)


@pytest.mark.parametrize("shape,fit", [((13, 10), "pad"), ((21, 18), "pad"), ((8, 8), "resize")])
def test_image_mode_fit_is_undone_on_the_outputs(shape, fit):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 9, (1, *shape)).astype(np.uint16)
    if fit == "resize":  # bilinear up, nearest down: exact only where the image is smooth
        image[:] = np.kron(rng.integers(0, 9, (shape[0] // 4, shape[1] // 4)), np.ones((4, 4)))
    model = EchoImageModel(_Empty(), DataSpec(task="semantic-segmentation", in_channels=1))
    settings = InferenceSettings(sample_mode="image", image_size=[16, 16], image_fit=fit)
    out = predict_image(model, image, "cyx", Normaliser(mode="none"), settings, CPU)["mask"]
    assert out.shape == shape
    if fit == "resize":
        inner = (slice(1, 3), slice(5, 7))  # away from the block edges
        for sl in ((inner[0], inner[0]), (inner[0], inner[1]), (inner[1], inner[1])):
            np.testing.assert_array_equal(out[sl], image[0][sl])
    elif shape[0] <= 16:
        np.testing.assert_array_equal(out, image[0])
    else:  # centre-cropped to 16 x 16 for the model, zero outside the crop on the way back
        oy, ox = (shape[0] - 16) // 2, (shape[1] - 16) // 2
        np.testing.assert_array_equal(
            out[oy : oy + 16, ox : ox + 16], image[0, oy : oy + 16, ox : ox + 16]
        )
        assert out[:oy].sum() == 0


def _trained(make_store, tmp_path, task, baseline, **kw):
    store = make_store(task, **kw)
    cfg = TrainConfig(
        task=task,
        dataset=str(store.path),
        baseline=baseline,
        epochs=1,
        batch_size=4,
        patch_size=16,
        workers=0,
        val_metric=False,
    )
    train(cfg, tmp_path / "run", progress=False)
    return store, tmp_path / "run"


@pytest.mark.parametrize(
    "task,baseline",
    [
        ("semantic-segmentation", "toy-semantic"),
        ("instance-segmentation", "toy-instance"),
        ("tracking", "toy-tracker"),
        ("augmented-microscopy", "toy-regressor"),
        ("classification", "toy-classifier"),
    ],
)
def test_predict_split_from_a_package_for_every_task(make_store, tmp_path, task, baseline):
    store, run = _trained(make_store, tmp_path, task, baseline, n_test=2)
    pset = predict_split(run, store, "test")
    assert pset.task == task and sorted(pset.sample_ids) == store.sample_ids("test")
    assert (pset.dataset, pset.dataset_version, pset.split) == (store.id, store.version, "test")
    for sid in store.sample_ids("test"):
        p = pset.get(sid)
        shape = store.image(sid).shape
        if task == "classification":
            assert 0 <= p.label < 3 and p.scores.shape == (3,)
        elif task == "tracking":
            assert p.mask.shape == (shape[0], *shape[2:]) and p.tracks.shape[1] == 4
        elif task == "augmented-microscopy":
            assert p.image.shape == (1, *shape[1:]) and p.image.dtype == np.float32
        else:
            assert p.mask.shape == shape[1:]
    out = write_split_predictions(run, store, "test", tmp_path / "pred.zarr", progress=False)
    back = load_predictions(out)
    assert back.task == task and sorted(back.sample_ids) == sorted(pset.sample_ids)
    for sid in pset.sample_ids:
        a, b = pset.get(sid), back.get(sid)
        for name in ("label", "mask", "tracks", "image", "object_ids"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(TrainingError, match="already exists"):
        write_split_predictions(run, store, "test", out)
    if task == "augmented-microscopy":
        assert back.producer["target_scale"].startswith("normalised")


def test_package_settings_travel_with_the_model(make_store, tmp_path):
    store, run = _trained(make_store, tmp_path, "classification", "toy-classifier", size=(12, 14))
    package = load_package(run)
    assert package.settings.sample_mode == "image" and package.settings.image_size == [12, 14]
    from cellbench.training.package import load_model_package

    model, norm = load_model_package(run)
    a = predict_split((model, norm), store, "val")
    b = predict_split(package, store, "val")
    for sid in a.sample_ids:
        np.testing.assert_allclose(a.get(sid).scores, b.get(sid).scores)
    with pytest.raises(TrainingError, match="needs the normaliser"):
        predict_split(model, store, "val")


def test_wrong_channel_count_is_a_clean_error(make_store, tmp_path):
    _, run = _trained(make_store, tmp_path, "semantic-segmentation", "toy-semantic")
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            id="two-ch",
            image=rng.integers(0, 9, (2, 20, 20)).astype(np.uint16),
            semantic=np.zeros((20, 20), np.uint8),
            split="test",
        )
    ]
    other = build_store(
        samples,
        tmp_path / "other.zarr",
        {"id": "two", "version": "1", "tasks": ["semantic-segmentation"]},
    )
    with pytest.raises(
        TrainingError, match="sample 'two-ch': image has 2 channels, model 'toy-semantic' expects 1"
    ):
        predict_split(run, other, "test")
