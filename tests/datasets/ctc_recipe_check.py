"""Pull a CTC recipe through a fake archive served on 127.0.0.1 and check the store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cellbench.registry import pull
from cellbench.scoring import score
from cellbench.settings import lock_file
from tests.data.ctc_training import make_ctc_zip
from tests.store.fetch_helpers import HTTPFileServer, sha

REPO = Path(__file__).resolve().parents[2]


def pull_fake_ctc(
    ident: str,
    name: str,
    three_d: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recipe of ``ident`` pulled from a fake ``name.zip`` on a local server."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = HTTPFileServer()
    try:
        data, seqs = make_ctc_zip(name, three_d=three_d)
        server.add(f"/training-datasets/{name}.zip", data)
        catalog = tmp_path / "catalog"
        shutil.copytree(REPO / "datasets" / ident, catalog / ident)
        card_file = catalog / ident / "card.yaml"
        card = yaml.safe_load(card_file.read_text())
        real = card["sources"]["training"]["url"]
        assert real == f"http://data.celltrackingchallenge.net/training-datasets/{name}.zip"
        card_file.write_text(
            card_file.read_text().replace(real, server.url(f"/training-datasets/{name}.zip"))
        )
        monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
        monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
        store = pull(ident, progress=False)
    finally:
        server.close()

    assert store.verify() == []
    assert store.format.version == "3"  # holds sparse SEG truth
    assert store.sample_ids("train") == ["01"] and store.sample_ids("test") == ["02"]
    lock = json.loads(lock_file().read_text())
    assert lock[f"{ident}@1.0"]["training"]["sha256"] == sha(data)
    for sid, fake in seqs.items():
        s = store.sample(sid)
        assert s.axes == ("tczyx" if three_d else "tcyx")
        assert np.array_equal(s.image[:, 0], fake.image)
        assert np.array_equal(s.instances, fake.labels)
        assert s.tracks.tolist() == fake.tracks.tolist()
        assert [tuple(r) for r in s.seg_annotated.tolist()] == sorted(fake.seg)
        for t, z in fake.seg:
            got = s.seg[t] if z < 0 else s.seg[t, z]
            assert np.array_equal(got, fake.seg[(t, z)])
        assert s.metadata["seg_truth"] == "gold" and s.metadata["dataset"] == name
    # the perfect result scores 1 on SEG (sparse truth) and TRA
    from cellbench.predictions import Prediction, PredictionSet

    test = store.sample("02")
    pset = PredictionSet.from_predictions(
        "tracking",
        [Prediction(sample_id="02", mask=test.instances, tracks=test.tracks)],
        store.id,
        store.version,
        "test",
    )
    report = score("tracking", store, "test", pset, n_bootstrap=0)
    assert report.metrics["ctc/seg"] == report.metrics["ctc/tra"] == 1.0
    # the silver-truth build: every frame annotated, computer-generated
    silver = pull(ident, progress=False, force=True, offline=True, options={"seg": "silver"})
    s = silver.sample("01")
    assert s.seg_annotated[:, 0].tolist() == list(range(s.image.shape[0]))
    assert s.metadata["seg_truth"] == "silver"
