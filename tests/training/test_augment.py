import numpy as np
import torch

from cellbench.training.augment import BatchAugmenter


def _blocks(n: int = 6, size: int = 32) -> dict[str, torch.Tensor]:
    """Batch whose image, target and labels all encode the same piecewise-constant map."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(1, 5, (n, size // 8, size // 8), generator=g)
    mask = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    return {
        "image": mask[:, None].float(),
        "target": 2 * mask[:, None].float(),
        "mask": mask.clone(),
        "instances": mask.clone() * 1000,
    }


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flips_and_rotations_are_exact_and_identical_for_all_keys():
    batch = _blocks()
    out = BatchAugmenter(["flip", "rot90"], 1.0, 2)(batch, _gen())
    assert torch.equal(out["image"][:, 0].long(), out["mask"])
    assert torch.equal(out["target"][:, 0] / 2, out["image"][:, 0])
    assert torch.equal(out["instances"], out["mask"] * 1000)
    changed = [not torch.equal(a, b) for a, b in zip(out["mask"], batch["mask"], strict=True)]
    assert any(changed)
    # each output is one of the 8 dihedral transforms of its input
    for a, b in zip(out["mask"], batch["mask"], strict=True):
        variants = [torch.rot90(v, k, (0, 1)) for v in (b, b.flip(1)) for k in range(4)]
        assert any(torch.equal(a, v) for v in variants)
    assert torch.equal(batch["mask"], _blocks()["mask"])  # inputs untouched


def test_affine_and_elastic_keep_labels_consistent_with_the_image():
    batch = _blocks(8)
    aug = BatchAugmenter(["affine", "elastic"], 2.0, 2)
    out = aug(batch, _gen(1))
    warped = [not torch.equal(a, b) for a, b in zip(out["mask"], batch["mask"], strict=True)]
    assert sum(warped) >= 4
    mask, image = out["mask"], out["image"][:, 0]
    outside = mask == -1
    assert torch.all(out["instances"][outside] == 0)
    # bilinear image samples blend with the zero padding within one pixel of the border
    near = torch.nn.functional.max_pool2d((~outside).float()[:, None], 3, 1, 1)[:, 0] > 0
    assert outside.any() and torch.all(image[outside & ~near] == 0)
    inside = ~outside
    agree = (image[inside] - mask[inside].float()).abs() < 0.5
    assert agree.float().mean() > 0.85  # only block edges differ (bilinear vs nearest)
    assert set(torch.unique(mask).tolist()) <= {-1, 1, 2, 3, 4}
    assert set(torch.unique(out["instances"]).tolist()) <= {0, 1000, 2000, 3000, 4000}


def test_nearest_resampling_keeps_large_instance_ids_exact():
    batch = _blocks(4)
    batch["instances"] = batch["mask"].long() + (2**40)
    out = BatchAugmenter(["affine"], 2.0, 2)(batch, _gen(2))
    values = set(torch.unique(out["instances"]).tolist())
    assert values <= {0} | {2**40 + k for k in range(1, 5)}


def test_strength_zero_is_identity_and_seeds_reproduce():
    batch = _blocks()
    assert BatchAugmenter(["flip", "affine", "noise"], 0.0, 2)(batch, _gen()) is batch
    aug = BatchAugmenter(["flip", "rot90", "affine", "intensity", "noise"], 1.0, 2)
    a, b = aug(batch, _gen(5)), aug(batch, _gen(5))
    for k in batch:
        assert torch.equal(a[k], b[k])
    c = aug(batch, _gen(6))
    assert not torch.equal(a["image"], c["image"])


def test_intensity_changes_only_the_image():
    batch = _blocks()
    out = BatchAugmenter(["intensity", "noise"], 1.0, 2)(batch, _gen(3))
    assert torch.equal(out["mask"], batch["mask"]) and torch.equal(out["target"], batch["target"])
    assert not torch.equal(out["image"], batch["image"])


def test_3d_rotates_in_yx_only_and_non_square_patches():
    g = torch.Generator().manual_seed(0)
    vol = torch.randint(0, 5, (4, 3, 8, 8), generator=g)
    batch = {"image": vol[:, None].float(), "mask": vol.clone()}
    out = BatchAugmenter(["flip", "rot90", "affine"], 1.0, 3)(batch, _gen(4))
    assert out["image"].shape == (4, 1, 3, 8, 8) and out["mask"].shape == (4, 3, 8, 8)
    rect = {"image": torch.rand(6, 2, 8, 12), "mask": torch.zeros(6, 8, 12, dtype=torch.long)}
    out = BatchAugmenter(["rot90"], 1.0, 2)(rect, _gen(0))
    assert out["image"].shape == (6, 2, 8, 12)
    for a, b in zip(out["image"], rect["image"], strict=True):
        assert torch.equal(a, b) or torch.equal(a, torch.rot90(b, 2, (1, 2)))
    assert np.isfinite(out["image"].numpy()).all()
