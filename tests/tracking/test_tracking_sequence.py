"""TrackedSequence: CTC validation, the track graph, conversions."""

from __future__ import annotations

import numpy as np
import pytest
from tracking_cases import BASE_TABLE, base_gt, base_objects, paint

from cellbench.errors import ValidationError
from cellbench.metrics.matching import present_ids
from cellbench.store.sample import Sample
from cellbench.tracks import TrackedSequence, format_ranges


def test_base_is_valid_and_graph_is_as_drawn() -> None:
    gt = base_gt()
    assert gt.problems() == []
    g = gt.graph()
    assert g.n_nodes == 14 and g.n_edges == 10
    links = {tuple(r) for r in g.links().tolist()}
    assert (1, 2, 2, 3, 1) in links and (1, 2, 2, 4, 1) in links  # division: parent links
    assert (0, 1, 1, 1, 0) in links and (2, 5, 3, 5, 0) in links  # track links
    assert int(g.is_parent_link.sum()) == 2
    b1 = int(g.node_index(np.array([1]), np.array([2]))[0])
    assert g.out_degree[b1] == 2
    assert sorted(g.labels[g.successors(b1)].tolist()) == [3, 4]
    assert g.predecessor[int(g.node_index(np.array([2]), np.array([3]))[0])] == b1
    assert g.node_index(np.array([0, 3]), np.array([5, 99])).tolist() == [-1, -1]


def test_every_rule_is_reported_at_once() -> None:
    lab = paint(base_objects())
    lab[2][lab[2] == 1] = 0  # A jumps over frame 2 without a parent link
    lab[0, 18:20, 0:2] = 9  # label not in the table
    table = [
        [1, 0, 3, 0],
        [2, 0, 2, 0],  # ends at 2 but is absent there (and its daughters begin at 2)
        [3, 2, 3, 2],
        [4, 2, 3, 2],
        [5, 1, 3, 0],
        [6, 0, 0, 0],
        [6, 0, 0, 0],  # duplicate id
        [7, 3, 2, 0],  # ends before it begins
        [8, 1, 1, 42],  # parent does not exist
        [10, 0, 7, 0],  # beyond the last frame
        [11, 1, 1, 11],  # own parent
    ]
    p = TrackedSequence(lab, table).problems()
    text = "\n".join(p)
    assert "track 1 (B=0, E=3 in track table) is absent from frame 2" in text
    assert "label 9 is present in frame 0 but is not a track" in text
    assert "parent 2 ends at frame 2, not before its daughter 3 begins at frame 2" in text
    assert "parent 2 ends at frame 2, not before its daughter 4 begins at frame 2" in text
    assert "track id 6 is defined 2 times" in text
    assert "end frame E=2 is before begin frame B=3" in text
    assert "parent 42 is not a track" in text
    assert "end frame E=7 is beyond the last frame 3" in text
    assert "track is its own parent" in text
    assert "track 2 (B=0, E=2 in track table) is absent from frame 2" in text
    assert "track 8 (B=1, E=1 in track table) is absent from frame 1" in text
    with pytest.raises(ValidationError) as err:
        TrackedSequence(lab, table, name="seq").validate()
    assert err.value.context == "seq" and len(err.value.problems) == len(p) >= 12


def test_label_outside_span_and_types() -> None:
    lab = paint(base_objects())
    lab[3, 16:19, 10:13] = 6  # F reappears after its end
    assert any(
        "label 6 is present in frame 3, outside its track span B=0..E=0" in s
        for s in TrackedSequence(lab, BASE_TABLE).problems()
    )
    bad = TrackedSequence(lab.astype(np.float32), BASE_TABLE).problems()
    assert bad == ["label images must have an integer dtype, got float32"]
    assert "must be an (n, 4) table" in TrackedSequence(lab, [[1, 2, 3]]).problems()[0]
    assert "must hold integers" in TrackedSequence(lab, [[1.5, 0, 0, 0]]).problems()[0]
    neg = lab.astype(np.int32)
    neg[1, 0, 0] = -3
    assert any(
        "negative label ids in frame 1" in s for s in TrackedSequence(neg, BASE_TABLE).problems()
    )
    assert "2 dims" in TrackedSequence(lab[0], BASE_TABLE).problems()[0]


def test_present_ids_and_ranges() -> None:
    a = np.array([[0, 3, 3], [65535, 0, 7]], dtype=np.uint16)
    assert present_ids(a).tolist() == [3, 7, 65535]
    assert present_ids(a.astype(np.int64) * 2**33).tolist() == [3 * 2**33, 7 * 2**33, 65535 * 2**33]
    assert present_ids(np.zeros((0, 3), np.uint16)).tolist() == []
    assert format_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_from_links_cuts_tracks_as_ctc_needs() -> None:
    # Detections with arbitrary per-frame ids; a division, a gap closing and a forced link.
    lab = np.zeros((5, 10, 10), dtype=np.uint16)
    lab[0, 0:2, 0:2] = 7
    lab[1, 0:2, 0:2] = 3
    lab[2, 0:2, 0:2] = 1
    lab[2, 5:7, 5:7] = 2
    lab[4, 0:2, 0:2] = 4  # gap: 1@2 -> 4@4
    lab[3, 5:7, 5:7] = 5
    lab[4, 5:7, 5:7] = 6
    links = [
        [0, 7, 1, 3, 0],
        [1, 3, 2, 1, 0],
        [1, 3, 2, 2, 0],  # division at frame 1
        [2, 1, 4, 4, 0],  # gap closing
        [2, 2, 3, 5, 0],
        [3, 5, 4, 6, 1],  # forced parent link
    ]
    seq = TrackedSequence.from_links(lab, links)
    assert seq.problems() == []
    assert seq.tracks.tolist() == [
        [1, 0, 1, 0],
        [2, 2, 2, 1],
        [3, 2, 3, 1],
        [4, 4, 4, 2],
        [5, 4, 4, 3],
    ]
    assert seq.labels[4, 0, 0] == 4 and seq.labels[3, 5, 5] == 3
    with pytest.raises(ValidationError) as err:
        TrackedSequence.from_links(lab, [[0, 7, 1, 3], [1, 9, 2, 1], [2, 1, 1, 3], [1, 3, 2, 2]])
    text = str(err.value)
    assert "an endpoint is not a detection" in text and "does not go forward" in text
    assert "2 incoming links" in text


def test_relabel_and_sample_round_trip() -> None:
    gt = base_gt()
    big = gt.relabel({2: 65535, 3: 40000})
    assert big.problems() == []
    assert big.labels.dtype == np.uint16
    assert big.track_row(3) is None and big.track_row(40000).tolist() == [40000, 2, 3, 65535]
    with pytest.raises(ValidationError):
        gt.relabel({1: 2})
    sample = Sample(
        id="seq-1",
        image=np.zeros((4, 1, 20, 20), dtype=np.uint8),
        axes="tcyx",
        split="test",
        instances=gt.labels,
        tracks=gt.tracks,
    )
    assert sample.problems() == []
    back = TrackedSequence.from_sample(sample)
    assert back.name == "seq-1" and back.problems() == []
    arrays = back.to_arrays()
    assert np.array_equal(arrays["instances"], gt.labels)
    assert arrays["tracks"].dtype == np.int64 and arrays["tracks"].tolist() == BASE_TABLE
    with pytest.raises(ValidationError, match="needs instances and tracks"):
        TrackedSequence.from_sample(Sample(id="x", image=np.zeros((1, 2, 2))))
