"""Recipe tissuenet (v1.1): a manual source; a fake archive with the real member names."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from cellbench.errors import FetchError
from cellbench.registry import pull
from tests.datasets.recipe_check import REPO, card_of, pull_manual, zip_bytes
from tests.formats.test_tissuenet_format import fake_tissuenet


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def test_manual_recipe_says_what_to_download_then_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = card_of("tissuenet")
    assert card["license"].startswith("LicenseRef-") and card["annotation"]["provenance"] == "mixed"
    monkeypatch.setenv("CELLBENCH_CATALOG", str(REPO / "datasets"))
    with pytest.raises(FetchError) as err:
        pull("tissuenet", progress=False)
    text = str(err.value)
    assert "must be downloaded by hand" in text and "https://datasets.deepcell.org/" in text
    assert "tissuenet_v1.1.zip" in text
    arrays = {
        s: fake_tissuenet(n, 16, i)
        for i, (s, n) in enumerate((("train", 3), ("val", 2), ("test", 2)))
    }
    archive = zip_bytes(
        {f"tissuenet_v1.1/tissuenet_v1.1_{s}.npz": _npz(a) for s, a in arrays.items()}
        | {"tissuenet_v1.1/README.txt": b"readme"}
    )
    store = pull_manual("tissuenet", {"tissuenet_v1.1.zip": archive}, tmp_path, monkeypatch)
    assert len(store) == 7
    assert store.sample_ids("val") == ["tissuenet-val-00000", "tissuenet-val-00001"]
    s = store.sample("tissuenet-test-00001")
    assert s.channel_names == ["nuclear", "membrane"] and s.image.dtype == np.float32
    assert np.array_equal(s.instances, arrays["test"]["y"][1, ..., 0])
    assert s.metadata["tissue"] == "lung" and s.metadata["platform"] == "mibi"
    assert s.metadata["target"] == "whole-cell"
