"""Every task's board gets pictures of the same samples, from kept predictions and controls."""

import json
import zipfile

import numpy as np
import pytest
from matplotlib.image import imread

from cellbench.leaderboard import BoardKey, LeaderboardStore, publish
from cellbench.leaderboard.figcache import digest
from cellbench.leaderboard.pictures import nice_length, pick_samples
from cellbench.tasks.tracking.pictures import errors, lanes
from cellbench.tracks import TrackedSequence
from tests.leaderboard.boards import TASKS
from tests.leaderboard.helpers import make_entry
from tests.leaderboard.site_fixture import HOSTILE

PICTURES = {
    "instance-segmentation": "overlay-",
    "semantic-segmentation": "picture-",
    "classification": "picture-hardest-crops",
    "tracking": "picture-",
    "augmented-microscopy": "picture-",
}


def _board(site, task):
    folder = next(site.glob(f"*/{task}/test"))
    return folder, json.loads((folder / "leaderboard.json").read_text())


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_board_has_pictures_charts_and_controls(task_boards, task):
    _, site, result = task_boards
    folder, data = _board(site, task)
    names = sorted(p.name for p in (folder / "plots").iterdir())
    pictures = [n for n in names if n.startswith(PICTURES[task])]
    assert pictures, names
    for name in names:
        img = imread(folder / "plots" / name)
        assert img.ndim == 3 and min(img.shape[:2]) >= 60 and float(img[..., :3].std()) > 0.01
    page = (folder / "index.html").read_text()
    for name in pictures:
        assert f'src="plots/{name}"' in page
    assert f"plots/bar-{data['headline']['metric'].replace('/', '--')}" in page
    # the two entries' kept predictions and the classical control are drawn
    rows = [r["name"] for r in data["rows"]]
    assert set(rows) == {"Good model", HOSTILE}
    assert [c["control"] for c in data["controls"]].count("perfect") == 1
    reference = [c["name"] for c in data["controls"] if c["control"] == "reference"]
    assert reference and all(name in page for name in reference)
    assert data["normalisation"]["one"] == "control: perfect"
    assert "thumbnail.png" in names
    assert not [n for n in result.notes.get(data_path(data), []) if "pictures" in n]


def data_path(data):
    b = data["board"]
    return f"{b['dataset']}@{b['version']}/{b['task']}/{b['split']}"


def test_pictures_show_the_same_sample_for_every_entry(task_boards):
    _, site, _ = task_boards
    folder, _ = _board(site, "instance-segmentation")
    overlays = [p.name for p in (folder / "plots").glob("overlay-*.png")]
    samples = {n.rsplit("-", 2)[-2] + "-" + n.rsplit("-", 1)[-1] for n in overlays}
    assert len(overlays) == 3 and len(samples) == 1  # two entries and the Otsu control


def test_republishing_draws_nothing_and_gives_the_same_bytes(
    task_boards, tmp_path, monkeypatch, _session_cellbench_home
):
    root, site, first = task_boards
    monkeypatch.setenv("CELLBENCH_HOME", str(_session_cellbench_home))  # datasets and cache
    lines = []
    again = publish(LeaderboardStore(root), tmp_path / "again", progress=lines.append)
    assert again.boards == first.boards
    assert all(" 0 figures drawn" in line for line in lines[:-1]), lines
    a = {p.relative_to(site): p.read_bytes() for p in site.rglob("*.png")}
    b = {
        p.relative_to(tmp_path / "again"): p.read_bytes()
        for p in (tmp_path / "again").rglob("*.png")
    }
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert first.progress[-1].startswith("published 5 board(s)")


def test_entry_files_and_reproduce_commands(task_boards):
    root, site, _ = task_boards
    folder, data = _board(site, "augmented-microscopy")
    key = BoardKey(**data["board"])
    store = LeaderboardStore(root)
    entry = next(e for e in store.entries(key) if e.name == "Good model")
    receipt = folder / "entries" / entry.filename
    assert receipt.read_bytes() == (root / key.path / "entries" / entry.filename).read_bytes()
    manifest = (folder / "manifests" / f"{entry.entry_id}.yaml").read_text()
    assert "weights_url: https://example.org/weights.zip" in manifest
    name = entry.predictions_uri.rsplit("/", 1)[-1]
    kept = folder / "predictions" / f"{name}.zip"
    with zipfile.ZipFile(kept) as zf:
        assert f"{name}/zarr.json" in zf.namelist()
    page = (folder / "index.html").read_text()
    assert f'href="entries/{entry.filename}"' in page and f'href="predictions/{name}.zip"' in page
    assert 'href="https://example.org/weights.zip"' in page
    assert f"unzip {name}.zip" in page and f"cellbench score {name} --task" in page
    assert "git checkout abcdef1" in page
    assert "cellbench leaderboard controls synthetic-label-free@1.0 augmented-microscopy" in page


def test_pick_samples_and_scale_bar_by_hand():
    a = make_entry("a", 0.5)
    b = make_entry("b", 0.5)
    a.report.per_sample = {"s1": {"m": 0.9}, "s2": {"m": 0.2}, "s3": {"m": 0.5}}
    b.report.per_sample = {"s1": {"m": 0.8}, "s2": {"m": 0.6}, "s3": {"m": 0.1}}
    # mean 0.85, 0.4, 0.3: the worst together is s3 (higher is better), s1 when lower is
    assert pick_samples([a, b], ["s1", "s2", "s3"], "m", "higher", 2) == ["s3", "s2"]
    assert pick_samples([a, b], ["s1", "s2", "s3"], "m", "lower") == ["s1"]
    assert [nice_length(x) for x in (16.64, 9.9, 0.34, 100)] == [10.0, 5.0, 0.2, 100.0]
    assert digest("x", {"a": np.arange(3)}) == digest("x", {"a": [0, 1, 2]})


def test_tracking_errors_and_lanes_by_hand():
    labels = np.zeros((4, 10, 10), np.int32)
    labels[:2, 1:3, 1:3] = 1  # mother
    labels[2:, 1:3, 1:3] = 2  # daughters from frame 2
    labels[2:, 6:8, 6:8] = 3
    gt = TrackedSequence(labels, np.array([[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]]))
    # a result that keeps one cell going and starts the other without a mother
    res_labels = labels.copy()
    res_labels[labels == 2] = 1
    res = TrackedSequence(res_labels, np.array([[1, 0, 3, 0], [3, 2, 3, 0]]))
    found = errors(gt, res)
    assert found["missed_divisions"] == [(1, 1)]
    assert found["false_divisions"] == []
    # mother -> daughter 3 is missing; mother -> daughter 2 is there as a track link (wrong type)
    assert found["missing_links"] == [(2, 3)]
    assert found["wrong_links"] == [(2, 1)]
    assert lanes(np.array([[5, 0, 3, 0], [7, 4, 6, 5], [6, 4, 6, 5], [9, 1, 2, 0]])) == {
        5: 0,
        6: 1,
        7: 2,
        9: 3,
    }


def test_publishing_into_the_leaderboard_root_adds_nothing_to_its_data(tmp_path):
    from tests.leaderboard.site_fixture import build_store

    root = tmp_path / "lb"
    store = build_store(root)
    key = BoardKey("toy", "1.0", "instance-segmentation", "test")
    kept = root / key.path / "predictions" / "p.zarr"
    kept.mkdir(parents=True)
    (kept / "zarr.json").write_text("{}")
    entry = store.entries(key)[0]
    path = root / key.path / "entries" / entry.filename
    text = path.read_text().replace(
        '"predictions_uri": ""', f'"predictions_uri": "{key.path}/predictions/p.zarr"'
    )
    path.write_text(text)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    publish(store, root, overlays=False)
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before} == before  # entries, owners, predictions untouched
    assert not list(root.rglob("*.zip"))
    page = (root / key.path / "index.html").read_text()
    assert 'href="predictions/p.zarr"' in page
