"""Human metric names, units and definitions come from the metric docstrings."""

import json
from pathlib import Path

import pytest

from cellbench.leaderboard import BoardKey, LeaderboardStore, publish
from cellbench.leaderboard.glossary import describe, families, parse_glossary, problems
from tests.leaderboard.helpers import make_entry

REPO = Path(__file__).resolve().parents[2]


def test_every_metric_class_documents_its_values():
    assert problems() == []
    found = families()
    assert set(found) >= {
        "coco_ap",
        "matching_scores",
        "object_errors",
        "semantic_segmentation",
        "classification",
        "image_similarity",
        "ctc",
        "divisions",
        "complete_tracks",
        "branching_correctness",
        "mot",
    }
    assert found["coco_ap"].class_name == "CocoAP"
    assert found["coco_ap"].title.startswith("COCO mask average precision")


def test_every_committed_metric_key_has_a_name():
    keys = set()
    for path in (REPO / "leaderboards").glob("*/*/*/entries/*.json"):
        keys |= set(json.loads(path.read_text())["report"]["metrics"])
    assert len(keys) > 100
    assert sorted(k for k in keys if not describe(k).documented) == []


@pytest.mark.parametrize(
    ("key", "name", "unit", "kind"),
    [
        ("coco_ap/ap", "COCO AP", "fraction 0-1", "quality"),
        ("coco_ap/ap@0.75", "AP at IoU 0.75", "fraction 0-1", "quality"),
        ("coco_ap/ap_small", "AP, small objects", "fraction 0-1", "quality"),
        ("matching_scores/f1_pooled@0.50", "F1 at IoU 0.50, pooled", "fraction 0-1", "quality"),
        ("matching_scores/fn@0.50", "False negatives at IoU 0.50", "objects", "count"),
        ("image_similarity/mae/Hoechst", "MAE, Hoechst", "normalised intensity", "quality"),
        ("image_similarity/psnr", "PSNR", "dB", "quality"),
        ("ctc/aogm_0", "AOGM of an empty result", "weighted operations", "count"),
        ("ctc/op_ctb", "OP_CTB", "fraction 0-1", "quality"),
        ("object_errors/n_true", "Ground-truth objects", "objects", "count"),
        ("classification/top5_accuracy", "Top-5 accuracy", "fraction 0-1", "quality"),
        ("semantic_segmentation/dice_pooled/mitotic", "Dice, mitotic", "fraction 0-1", "quality"),
        ("branching_correctness/bc@2", "BC(2)", "fraction 0-1", "quality"),
    ],
)
def test_names_by_hand(key, name, unit, kind):
    info = describe(key)
    assert (info.name, info.unit, info.kind) == (name, unit, kind)
    assert info.definition.endswith(".") and info.documented


def test_placeholders_are_filled_and_unknown_keys_keep_their_name():
    assert "threshold 0.75" in describe("coco_ap/ap@0.75").definition
    assert describe("coco_ap/ap@0.75").generic == "AP at IoU t"
    unknown = describe("toy/some_value@0.5")
    assert unknown.name == "some_value@0.5" and not unknown.documented


def test_parser_reports_malformed_entries():
    doc = """Summary.

    Glossary:
        good (fraction 0-1; quality): Good value. What it is, over two
            lines.
        bad entry without a unit: Nope.
        also_bad (dB; colour): Wrong kind.

    Args:
        x: y.
    """
    values, issues = parse_glossary(doc, "fam", frozenset({"good"}))
    assert [(v.pattern, v.name, v.definition, v.direction) for v in values] == [
        ("good", "Good value", "What it is, over two lines.", "lower")
    ]
    assert len(issues) == 2 and all(i.startswith("fam: glossary entry") for i in issues)


def test_board_json_and_pages_show_counts_without_direction(tmp_path):
    store = LeaderboardStore(tmp_path / "lb")
    metrics = {"object_errors/missed": 12.0, "object_errors/recall": 0.75, "coco_ap/ap": 0.5}
    store.add(make_entry("a", 0.5, metrics=metrics, headline="coco_ap/ap"))
    out = publish(store, tmp_path / "site", overlays=False).out
    folder = out / BoardKey("toy", "1.0", "instance-segmentation", "test").path
    info = {m["key"]: m for m in json.loads((folder / "leaderboard.json").read_text())["metrics"]}
    assert info["object_errors/missed"]["kind"] == "count"
    assert info["object_errors/missed"]["direction"] is None
    assert info["object_errors/recall"]["direction"] == "higher"
    assert info["coco_ap/ap"]["name"] == "COCO AP"
    page = (folder / "index.html").read_text()
    assert ">Missed objects (count)</th>" in page and ">Object recall (↑)</th>" in page
    assert 'data-value="12.0">12</td>' in page
    md = (folder / "README.md").read_text()
    assert "| entry | Missed objects (count) | Object recall (↑) |" in md
    assert "| a | 12 | 0.7500 |" in md
    glossary = (out / "glossary.html").read_text()
    assert 'id="object_errors"' in glossary and "Missed objects" in glossary
