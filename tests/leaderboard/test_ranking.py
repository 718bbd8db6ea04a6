import math

import pytest

from cellbench.leaderboard.entry import BoardKey
from cellbench.leaderboard.ranking import MIN_SEEDS, Summary, rank_entries
from tests.leaderboard.helpers import CHECKSUM, make_entry

KEY = BoardKey("toy", "1.0", "instance-segmentation", "test")


def _board_entries():
    return [
        make_entry("alpha", 0.80, 0, ci=(0.75, 0.85)),
        make_entry("alpha", 0.82, 1, ci=(0.77, 0.87)),
        make_entry("alpha", 0.84, 2, ci=(0.79, 0.89)),
        make_entry("beta", 0.82, 0, ci=(0.80, 0.84)),
        make_entry("gamma", 0.70, 0, ci=(0.68, 0.72)),
        make_entry("delta", 0.69, 0, ci=(0.60, 0.75)),
        make_entry("eps", float("nan"), 0, ci=(float("nan"), float("nan"))),
    ]


def test_replicates_mean_std_and_interval():
    board = rank_entries(KEY, _board_entries())
    alpha = next(r for r in board.rows if r.name == "alpha")
    assert alpha.seeds == [0, 1, 2]
    assert alpha.headline.mean == pytest.approx(0.82)
    # sample std of 0.80, 0.82, 0.84 (ddof=1) is exactly 0.02
    assert alpha.headline.std == pytest.approx(0.02)
    # interval = mean of the replicate bounds
    assert alpha.headline.ci_low == pytest.approx(0.77)
    assert alpha.headline.ci_high == pytest.approx(0.87)
    assert not alpha.few_seeds and not any("seed" in f for f in alpha.flags)
    beta = next(r for r in board.rows if r.name == "beta")
    assert math.isnan(beta.headline.std) and beta.few_seeds
    assert beta.flags == [f"1 seed (< {MIN_SEEDS})"]


def test_ranking_ties_overlaps_and_missing_values():
    board = rank_entries(KEY, _board_entries())
    order = [(r.rank, r.name, r.tied_with_above, r.overlaps_above) for r in board.rows]
    assert order == [
        (1, "alpha", False, False),
        (1, "beta", True, True),  # same mean 0.82: shared rank
        (3, "gamma", False, False),  # [0.68, 0.72] vs beta [0.80, 0.84]: disjoint
        (4, "delta", False, True),  # [0.60, 0.75] overlaps gamma's interval
        (5, "eps", False, False),  # NaN ranks last
    ]
    assert board.headline == "matching/f1@0.50" and board.direction == "higher"
    assert board.dataset_checksum == CHECKSUM


def test_lower_is_better_orders_ascending():
    entries = [
        make_entry("a", 3.0, headline="aogm/aogm", direction="lower", ci=(2.0, 4.0)),
        make_entry("b", 1.0, headline="aogm/aogm", direction="lower", ci=(0.5, 1.5)),
        make_entry("c", 2.0, headline="aogm/aogm", direction="lower", ci=(1.8, 2.2)),
    ]
    board = rank_entries(KEY, entries)
    assert [r.name for r in board.rows] == ["b", "c", "a"]
    assert [r.rank for r in board.rows] == [1, 2, 3]
    # c [1.8, 2.2] vs b [0.5, 1.5]: disjoint; a [2, 4] vs c [1.8, 2.2]: overlap
    assert [r.overlaps_above for r in board.rows] == [False, False, True]


def test_other_metrics_aggregated_and_flags():
    entries = [
        make_entry("a", 0.5, 0, metrics={"coco_ap/ap": 0.30}),
        make_entry("a", 0.7, 1, metrics={"coco_ap/ap": 0.40}, checksum="d" * 64),
        make_entry("b", 0.6, 0, metrics={"coco_ap/ap": 0.35}),
    ]
    board = rank_entries(KEY, entries)
    a = next(r for r in board.rows if r.name == "a")
    assert a.metrics["coco_ap/ap"].mean == pytest.approx(0.35)
    assert a.metrics["coco_ap/ap"].std == pytest.approx(math.sqrt(0.005))
    assert board.metric_keys == ["matching/f1@0.50", "coco_ap/ap"]
    assert any("different dataset build" in f and "[1]" in f for f in a.flags)


def test_summary_of_missing_values_is_nan():
    s = Summary.of([0.5, None])
    assert math.isnan(s.mean) and s.n == 2
    assert Summary.of([]).n == 0


def test_entries_of_another_board_refused():
    other = make_entry("x", 0.5, dataset="other")
    with pytest.raises(ValueError, match="do not belong"):
        rank_entries(KEY, [other])
    with pytest.raises(ValueError, match="no entries"):
        rank_entries(KEY, [])


def test_infinite_values_rank_as_values_and_serialise_like_reports():
    psnr = "image/psnr"
    entries = [
        make_entry("finite", 30.0, headline=psnr, ci=(29.0, 31.0)),
        make_entry("perfect", float("inf"), headline=psnr, ci=(float("inf"), float("inf"))),
        make_entry("missing", float("nan"), headline=psnr, ci=(float("nan"), float("nan"))),
    ]
    board = rank_entries(KEY, entries)
    assert [r.name for r in board.rows] == ["perfect", "finite", "missing"]
    row = board.to_dict()["rows"][0]
    assert row["headline"]["mean"] == "inf" and row["headline"]["values"] == ["inf"]
    assert board.to_dict()["rows"][2]["headline"]["mean"] is None
