"""Controls: each classical reference by hand, every task's controls scored on generated data."""

import json
import math

import numpy as np
import pytest

from cellbench.errors import ValidationError
from cellbench.leaderboard import BoardKey, LeaderboardStore, publish
from cellbench.leaderboard.controls import compute_controls, is_control, normalised
from cellbench.leaderboard.ranking import rank_entries
from cellbench.registry import pull
from cellbench.tasks.augmented_microscopy.controls import BLUR_SIGMA
from cellbench.tasks.classification.controls import majority_class
from cellbench.tasks.instance_segmentation.controls import otsu_watershed
from cellbench.tasks.semantic_segmentation.controls import background_index, majority_foreground
from cellbench.tasks.tracking.controls import link_nearest
from tests.leaderboard.helpers import make_entry

SMALL = {
    "synthetic-nuclei": {"n_images": 12},
    "synthetic-protein-localisation": {"n_images": 40},
    "synthetic-timelapse": {"n_sequences": 4, "n_frames": 8},
    "synthetic-label-free": {"n_images": 8},
}


def _disc(shape, centre, r):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r * r


def test_otsu_watershed_finds_separate_and_touching_discs():
    img = np.full((64, 64), 100.0)
    img[_disc(img.shape, (16, 16), 6)] = 1000
    img[_disc(img.shape, (45, 40), 7)] = 800
    img[_disc(img.shape, (45, 52), 7)] = 800  # touches the previous one
    labels, scores = otsu_watershed(img)
    assert labels.max() == 3 and sorted(scores) == [1, 2, 3]
    lone = np.bincount(labels[_disc(img.shape, (16, 16), 6)]).argmax()
    assert scores[int(lone)] == max(scores.values())  # the brightest object ranks first
    left = np.bincount(labels[_disc(img.shape, (45, 38), 3)]).argmax()
    right = np.bincount(labels[_disc(img.shape, (45, 54), 3)]).argmax()
    assert left != right and 0 not in (left, right)  # the watershed split the pair
    assert otsu_watershed(np.zeros((8, 8)))[0].max() == 0  # a blank image: no objects


def test_nearest_neighbour_linking_by_hand():
    shape = (20, 30)
    frames = []
    for t in range(4):
        lab = np.zeros(shape, np.int32)
        lab[_disc(shape, (5, 5 + t), 2)] = 7  # a cell moving right, any label value
        if t < 2:
            lab[_disc(shape, (14, 15), 2)] = 3  # a mother ...
        else:
            lab[_disc(shape, (14, 12), 2)] = 1  # ... dividing into two daughters
            lab[_disc(shape, (14, 18), 2)] = 2
        frames.append(lab)
    movie, tracks = link_nearest(frames)
    # new tracks are numbered in label order: the mother (label 3) is track 1, the moving cell
    # (label 7) track 2; the mother ends at frame 1, her daughters start at frame 2
    assert tracks.tolist() == [[1, 0, 1, 0], [2, 0, 3, 0], [3, 2, 3, 1], [4, 2, 3, 1]]
    assert set(np.unique(movie[0])) == {0, 1, 2} and set(np.unique(movie[3])) == {0, 2, 3, 4}
    assert np.array_equal(movie[2] == 2, frames[2] == 7)
    # far jumps are not linked: a new track starts
    far = [frames[0], np.roll(frames[0], 12, axis=1)]
    assert link_nearest(far)[1][:, 3].tolist() == [0, 0, 0, 0]


def test_majority_classes_by_hand():
    store = pull("synthetic-protein-localisation", options=SMALL["synthetic-protein-localisation"])
    train = [store.label(s) for s in store.sample_ids("train")]
    assert majority_class(store) == int(np.argmax(np.bincount(train, minlength=4)))
    nuclei = pull("synthetic-nuclei", options=SMALL["synthetic-nuclei"])
    bg = background_index(nuclei, ("background",))
    counts = sum(
        np.bincount(np.asarray(nuclei.labels(s, "semantic")[...]).ravel(), minlength=3)
        for s in nuclei.sample_ids("train")
    )
    assert bg == 0 and majority_foreground(nuclei, bg) == int(np.argmax(counts[1:]) + 1)


@pytest.mark.parametrize(
    ("dataset", "task", "expected"),
    [
        (
            "synthetic-nuclei",
            "instance-segmentation",
            {"control: Otsu + watershed": None, "control: perfect": 1.0, "control: empty": 0.0},
        ),
        (
            "synthetic-nuclei",
            "semantic-segmentation",
            {
                "control: Otsu threshold, one class": None,
                "control: perfect": 1.0,
                "control: empty": 0.0,
            },
        ),
        (
            "synthetic-protein-localisation",
            "classification",
            {"control: majority class": None, "control: perfect": 1.0},
        ),
        (
            "synthetic-label-free",
            "augmented-microscopy",
            {
                "control: input as prediction": None,
                "control: blurred input": None,
                "control: perfect": 1.0,
            },
        ),
        (
            "synthetic-timelapse",
            "tracking",
            {"control: Otsu + watershed, nearest-neighbour linking": None, "control: perfect": 1.0},
        ),
    ],
)
def test_controls_scored_on_generated_data(dataset, task, expected):
    store = pull(dataset, options=SMALL[dataset], progress=False)
    key = BoardKey(store.id, store.version, task, "test")
    controls = compute_controls(key, store, n_bootstrap=20)
    assert [c.name for c in controls] == list(expected)
    for c in controls:
        assert is_control(c) and c.manifest["authors"] == ["cellbench"] and not c.problems()
        assert c.report.provenance.dataset_checksum == store.checksum
        assert len(c.report.headline.replicates) == 20 and c.report.headline.resamples
        want = expected[c.name]
        value = c.report.headline.value
        if want is not None:
            assert value == pytest.approx(want)
        else:  # the classical reference: a real score strictly between empty and perfect
            assert math.isfinite(value) and -1.0 < value < 0.999
    ids = store.sample_ids("test")
    if task == "classification":  # majority class: accuracy = share of that class in test
        top = majority_class(store)
        share = np.mean([store.label(s) == top for s in ids])
        got = controls[0].report.metrics["classification/accuracy"]
        assert got == pytest.approx(share)
    if task == "augmented-microscopy":  # identity: Pearson of input and target, by hand
        r = []
        for s in ids:
            x = np.asarray(store.image(s)[0], float).ravel()
            for channel in np.asarray(store.target(s)[...], float):
                r.append(np.corrcoef(x, channel.ravel())[0, 1])
        assert controls[0].report.headline.value == pytest.approx(np.mean(r))
        assert (
            BLUR_SIGMA > 0
            and controls[1].report.headline.value != controls[0].report.headline.value
        )


def test_normalised_score_and_controls_on_the_board(tmp_path):
    key = BoardKey("toy", "1.0", "instance-segmentation", "test")
    store = LeaderboardStore(tmp_path / "lb")
    store.add(make_entry("model", 0.6))
    for name, kind, value in (
        ("Otsu", "reference", 0.4),
        ("perfect", "perfect", 1.0),
        ("empty", "empty", 0.0),
    ):
        c = make_entry(
            f"control: {name}",
            value,
            manifest={"kind": "control", "control": kind, "authors": ["cellbench"]},
        )
        store.put_control(c)
    with pytest.raises(ValidationError, match="reserved for the controls"):
        store.add(make_entry("sneaky", 0.9, manifest={"kind": "control", "control": "perfect"}))
    with pytest.raises(ValidationError, match="reserved for controls"):
        store.add(make_entry("Control: perfect", 0.9))
    board = rank_entries(key, store.entries(key), store.controls(key))
    assert [r.name for r in board.rows] == ["model"]
    assert [r.name for r in board.controls] == [
        "control: perfect",
        "control: Otsu",
        "control: empty",
    ]
    assert board.normalisation == {
        "zero": "control: Otsu",
        "zero_value": 0.4,
        "one": "control: perfect",
        "one_value": 1.0,
    }
    assert board.rows[0].normalised == pytest.approx((0.6 - 0.4) / (1.0 - 0.4))
    assert [c.normalised for c in board.controls] == pytest.approx([1.0, 0.0, -0.4 / 0.6])
    assert math.isnan(normalised(0.5, 0.4, 0.4))
    out = publish(store, tmp_path / "site", overlays=False).out
    data = json.loads((out / key.path / "leaderboard.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["model"]
    assert data["rows"][0]["normalised"] == pytest.approx(1 / 3)
    assert [c["control"] for c in data["controls"]] == ["perfect", "reference", "empty"]
    page = (out / key.path / "index.html").read_text()
    assert 'id="controls"' in page and "control: Otsu" in page
