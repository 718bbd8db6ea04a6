"""Recipe bbbc039: fake images.zip, masks.zip, metadata.zip (real layout) from 127.0.0.1."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from tests.datasets.recipe_check import card_of, pull_served, zip_bytes

BASE = "https://data.broadinstitute.org/bbbc/BBBC039/"


def fake_bbbc039(seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """The three archives with 5 fields (real names, dtypes; colour-coded RGB masks)."""
    rng = np.random.default_rng(seed)
    names = [
        f"IXMtest_{w}_s{s}_w1{h}"
        for w, s, h in (
            ("A02", 1, "051DCA1D-C1B1-47A5-9D0F-E2BD09B7A7F6"),
            ("A02", 7, "3F7B2A66-0B6D-4F3A-9A48-1E5BE1E0E2C1"),
            ("B12", 3, "8C2D5E77-6A3B-4C9D-B1E2-F3A4B5C6D7E8"),
            ("H06", 9, "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D"),
            ("P24", 2, "FEDCBA98-7654-4321-8FED-CBA987654321"),
        )
    ]
    images, masks, truth = {}, {}, {}
    for i, name in enumerate(names):
        img = rng.integers(0, 4096, (52, 70), dtype=np.uint16)
        lab = np.zeros((52, 70), np.uint16)
        colour = np.zeros((52, 70, 3), np.uint8)
        for k in range(1, 3 + i):
            r, c = 4 + 8 * (k % 5), 5 + 12 * (k // 5) + 3 * k
            lab[r : r + 5, c : c + 6] = k
            colour[r : r + 5, c : c + 6] = (k * 40 % 256, 255 - k * 30, 7 * k)
        buf = io.BytesIO()
        tifffile.imwrite(buf, img)
        images[f"images/{name}.tif"] = buf.getvalue()
        masks[f"masks/{name}.png"] = iio.imwrite("<bytes>", colour, extension=".png")
        truth[name] = lab
    split = {"training.txt": names[:2], "validation.txt": names[2:3], "test.txt": names[3:]}
    metadata = {
        f"metadata/{f}": "".join(f"{n}.png\n" for n in ns).encode() for f, ns in split.items()
    }
    served = {
        BASE + "images.zip": zip_bytes(images),
        BASE + "masks.zip": zip_bytes(masks),
        BASE + "metadata.zip": zip_bytes(metadata),
    }
    return served, {"names": names, **truth}


def test_recipe_builds_the_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert card_of("bbbc039")["license"] == "CC0-1.0"
    served, truth = fake_bbbc039()
    store = pull_served("bbbc039", served, tmp_path, monkeypatch)
    names = truth["names"]
    assert len(store) == 5
    assert store.sample_ids("train") == names[:2]
    assert store.sample_ids("val") == names[2:3]
    assert store.sample_ids("test") == names[3:]
    s = store.sample(names[3])
    assert s.image.shape == (1, 52, 70) and s.image.dtype == np.uint16
    assert s.metadata == {"source": "BBBC039v1", "well": "H06", "site": 9}
    # colour-coded objects come back as one id each, same regions as the truth
    got, want = s.instances, truth[names[3]]
    assert int(got.max()) == int(want.max()) == 5
    pairs = {(int(a), int(b)) for a, b in zip(got.ravel(), want.ravel(), strict=True)}
    assert len(pairs) == 6 and (0, 0) in pairs  # a bijection between ids, background kept
