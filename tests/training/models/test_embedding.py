import numpy as np
import pytest
import torch
from scipy import ndimage

from cellbench.errors import ValidationError
from cellbench.metrics.matching import label_overlap
from cellbench.training.baseline import DataSpec, get_baseline
from cellbench.training.models.embedding import (
    cluster_embeddings,
    discriminative_loss,
    seed_target,
)

from .helpers import assert_decreases, discs, instance_batch, round_trip, train

SPEC = DataSpec("instance-segmentation", 1)
TINY = {"depth": 3, "base_channels": 8, "patch_size": [32, 32], "min_object_size": 3}


def _naive_discriminative(emb, inst, dv, dd, a, b, g):
    """Per-instance loop implementation of De Brabandere et al. (2017), eqs. 1-4."""
    losses = []
    for i in range(emb.shape[0]):
        e = emb[i].reshape(emb.shape[1], -1)
        lab = inst[i].reshape(-1)
        ids = [k for k in torch.unique(lab).tolist() if k != 0]
        if not ids:
            continue
        means = [e[:, lab == k].mean(1) for k in ids]
        var = 0.0
        for k, mu in zip(ids, means, strict=True):
            x = e[:, lab == k]
            d = torch.linalg.norm(x - mu[:, None], dim=0)
            var = var + (torch.clamp(d - dv, min=0) ** 2).mean()
        var = var / len(ids)
        dist = 0.0
        for p, ma in enumerate(means):
            for q, mb in enumerate(means):
                if p != q:
                    dist = dist + torch.clamp(2 * dd - torch.linalg.norm(ma - mb), min=0) ** 2
        if len(ids) > 1:
            dist = dist / (len(ids) * (len(ids) - 1))
        reg = sum(torch.linalg.norm(mu) for mu in means) / len(ids)
        losses.append(a * var + b * dist + g * reg)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("shape", [(9, 11), (4, 6, 7)])
@pytest.mark.parametrize("params", [(0.5, 1.5, 1.0, 1.0, 0.001), (0.2, 3.0, 0.7, 2.0, 0.1)])
def test_discriminative_loss_equals_naive_loop(shape, params):
    gen = torch.Generator().manual_seed(sum(shape))
    b = 4
    emb = torch.randn(b, 5, *shape, generator=gen, dtype=torch.float64) * 1.5
    inst = torch.randint(0, 6, (b, *shape), generator=gen)
    inst[1] = 0  # no instance: skipped
    inst[2] = torch.where(inst[2] > 0, 4, 0)  # a single instance: no distance term
    ours, _ = discriminative_loss(emb, inst, *params)
    ref = _naive_discriminative(emb.float(), inst, *params)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-6)


def test_discriminative_loss_edge_cases_have_finite_gradients():
    emb = torch.zeros(2, 3, 6, 6, requires_grad=True)  # all means coincide
    inst = torch.zeros(2, 6, 6, dtype=torch.long)
    inst[0, :3] = 1
    inst[0, 3:] = 2
    loss, terms = discriminative_loss(emb, inst)
    loss.backward()
    assert torch.isfinite(emb.grad).all()
    assert float(terms["dist"]) == pytest.approx(3.0**2)  # (2 * 1.5 - 0)^2 per pair
    none, _ = discriminative_loss(emb, torch.zeros_like(inst))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_seed_target_peaks_at_centroids():
    labels = discs((30, 30), [(10, 10), (20, 22)], 4.0)
    target = seed_target(torch.from_numpy(labels)[None], sigma=0.5)[0].numpy()
    assert target[labels == 0].max() == 0 and target.max() == pytest.approx(1.0)
    for k in (1, 2):
        centre = np.round(ndimage.center_of_mass(labels == k)).astype(int)
        assert target[tuple(centre)] == pytest.approx(1.0)
        r = np.sqrt((labels == k).sum() / np.pi)
        edge = np.argwhere(labels == k)[0]
        d2 = ((edge - ndimage.center_of_mass(labels == k)) ** 2).sum()
        assert target[tuple(edge)] == pytest.approx(np.exp(-d2 / (2 * (0.5 * r) ** 2)), rel=1e-5)
    volume = seed_target(torch.from_numpy(discs((9, 9, 9), [(4, 4, 4)], 3.0))[None])
    assert float(volume.max()) == pytest.approx(1.0) and float(volume[0, 0, 0, 0]) == 0.0


def test_clustering_separates_touching_and_distant_lookalikes():
    rng = np.random.default_rng(0)
    gt = discs((40, 40), [(10, 10), (10, 17), (30, 30)], 3.7)  # 1 and 2 touch
    code = {1: (0.0, 0.0), 2: (3.0, 0.0), 3: (0.0, 0.0)}  # 3 looks like 1 but is far away
    emb = np.zeros((2, 40, 40))
    for k, v in code.items():
        emb[:, gt == k] = np.asarray(v)[:, None]
    emb += rng.normal(0, 0.1, emb.shape)
    seed = seed_target(torch.from_numpy(gt)[None])[0]
    labels, ids, scores = cluster_embeddings(
        torch.from_numpy(emb).float(), torch.from_numpy(gt > 0), seed, margin=1.5, min_size=3
    )
    ov = label_overlap(gt, labels)
    assert len(ids) == 3 and labels.dtype == np.int32
    np.testing.assert_array_equal(np.sort(ov.iou().max(1)), [1.0, 1.0, 1.0])
    assert np.all((scores > 0.9) & (scores <= 1.0))
    tiny = cluster_embeddings(
        torch.from_numpy(emb).float(), torch.from_numpy(gt > 0), seed, min_size=100
    )
    assert tiny[1].size == 0 and tiny[0].max() == 0


def test_embedding_unet_2d_trains_and_segments(tmp_path):
    torch.manual_seed(0)
    model = get_baseline("embedding-unet")(
        get_baseline("embedding-unet").config_class.from_dict(TINY), SPEC
    )
    batch = instance_batch(2, 32)
    losses = train(model, batch, 150, lr=5e-3)
    assert_decreases(losses, factor=0.1)
    out = model.predict(batch["image"][:1])
    assert set(out) == {"mask", "object_ids", "object_scores"}
    assert out["mask"].shape == (32, 32) and out["mask"].dtype == np.int32
    assert out["object_ids"].dtype == np.int64 and out["object_scores"].dtype == np.float64
    ov = label_overlap(batch["instances"][0].numpy(), out["mask"])
    assert len(ov.pred_ids) == 4 and ov.iou().max(1).min() > 0.8  # touching cells split
    back = round_trip("instance-segmentation", out, tmp_path)
    ids, scores = out["object_ids"].tolist(), out["object_scores"].tolist()
    assert back.score_of() == dict(zip(ids, scores, strict=True))


def test_embedding_unet_3d():
    torch.manual_seed(0)
    spec = DataSpec("instance-segmentation", 1, ndim=3)
    fields = {**TINY, "depth": 2, "patch_size": [8, 16, 16]}
    model = get_baseline("embedding-unet")(
        get_baseline("embedding-unet").config_class.from_dict(fields), spec
    )
    inst = torch.from_numpy(discs((8, 16, 16), [(4, 5, 5), (4, 10, 11)], 3.0))[None]
    batch = {"image": (inst > 0).float()[:, None] * 2 - 1, "instances": inst}
    assert_decreases(train(model, batch, 15, lr=5e-3), factor=0.7)
    out = model.predict(torch.randn(1, 1, 9, 18, 17))
    assert out["mask"].shape == (9, 18, 17) and out["mask"].dtype == np.int32
    assert len(out["object_ids"]) == len(out["object_scores"])


def test_config_problems_are_listed_together():
    cls = get_baseline("embedding-unet")
    with pytest.raises(ValidationError) as err:
        cls(cls.config_class.from_dict({"delta_v": 2.0, "delta_d": 1.0, "seed_threshold": 3}), SPEC)
    assert len(err.value.problems) == 2
