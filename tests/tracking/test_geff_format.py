"""The ``geff`` format: tracking samples to GEFF graphs + label images and back; scoring GEFF."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr
from tracking_synth import perturb, simulate

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.scoring import score
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from cellbench.tasks.tracking.ctc import write_ctc_result
from cellbench.tasks.tracking.geff import write_sequence_geff
from cellbench.tracks import TrackedSequence
from tests.factories import memory_available

pytest.importorskip("geff")
CARD = {"id": "geff-test", "version": "1", "tasks": ["tracking"]}


def _sample(sid: str, shape: tuple[int, ...], seed: int) -> Sample:
    gt = simulate(n_frames=6, shape=shape, n_cells=4, n_divisions=2, radius=3.0, seed=seed)
    image = np.random.default_rng(seed).integers(0, 999, (6, 1, *shape), dtype=np.uint16)
    return Sample(
        id=sid,
        image=image,
        axes="tczyx" if len(shape) == 3 else "tcyx",
        split="test",
        pixel_size={"x": 0.5, "y": 0.5},
        metadata={"well": "B03"},
        instances=gt.labels.astype(np.uint16),
        tracks=gt.tracks,
    )


@pytest.mark.parametrize("shape", [(32, 32), (6, 20, 20)])
def test_sample_geff_sample_round_trip(tmp_path: Path, shape: tuple[int, ...]) -> None:
    first = build_store(
        [_sample("01", shape, 1), _sample("02", shape, 2)], tmp_path / "a.zarr", CARD
    )
    write_samples("geff", first.samples(), tmp_path / "g")
    seq = tmp_path / "g" / "01"
    assert sorted(p.name for p in seq.iterdir() if not p.name.startswith(".")) == [
        "image",
        "labels",
        "tracks",
    ]
    attrs = json.loads((seq / "tracks" / ".zattrs").read_text())["geff"]
    assert {"type": "labels", "path": "../labels", "label_prop": "seg_id"} in attrs[
        "related_objects"
    ]
    # nodes carry t, (z), y, x and seg_id; edges include both daughters of each division
    props = seq / "tracks" / "nodes" / "props"
    assert {p.name for p in props.iterdir()} >= {"t", "y", "x", "seg_id", "track_id"}
    t = zarr.open_array(str(props / "t" / "values"))[...]
    sid = zarr.open_array(str(props / "seg_id" / "values"))[...]
    labels = zarr.open_array(str(seq / "labels"))[...]
    assert all(s in np.unique(labels[f]) for f, s in zip(t.tolist(), sid.tolist(), strict=True))
    edges = zarr.open_array(str(seq / "tracks" / "edges" / "ids"))[...]
    out_deg = np.bincount(edges[:, 0].astype(np.int64))
    assert (out_deg == 2).sum() == int((first.tracks("01")[:, 3] > 0).sum()) // 2
    back = build_store(read_samples("geff", tmp_path / "g"), tmp_path / "b.zarr", CARD)
    assert back.checksum == first.checksum
    (tmp_path / "g" / "cellbench.json").write_text("{not json")
    with pytest.raises(ValidationError, match=r"cellbench\.json: unreadable"):
        list(read_samples("geff", tmp_path / "g"))


def test_writer_refuses_more_than_two_daughters(tmp_path: Path) -> None:
    lab = np.zeros((2, 12, 12), np.uint16)
    lab[0, 2:8, 2:8] = 1
    lab[1, 0:3, 0:3], lab[1, 5:8, 5:8], lab[1, 9:12, 9:12] = 2, 3, 4
    tracks = np.array([[1, 0, 0, 0], [2, 1, 1, 1], [3, 1, 1, 1], [4, 1, 1, 1]])
    s = Sample(id="x", image=lab[:, None], axes="tcyx", instances=lab, tracks=tracks)
    with pytest.raises(ValidationError, match="track 1 has 3 daughters; a GEFF division"):
        write_samples("geff", [s], tmp_path / "g")


def test_validator_lists_graph_problems(tmp_path: Path) -> None:
    s = _sample("01", (32, 32), 1)
    seq = TrackedSequence(s.instances, s.tracks)
    write_sequence_geff(seq, tmp_path / "01", s.image)
    graph = tmp_path / "01" / "tracks"
    edges = zarr.open_array(str(graph / "edges" / "ids"), mode="r+")
    e = edges[...]
    # an edge to a missing node, and a third child for a dividing node
    parent = int(np.bincount(e[:, 0].astype(np.int64)).argmax())
    other = next(int(n) for n in e[:, 1] if n not in e[e[:, 0] == parent, 1])
    e[0, 1] = 9999
    e[1] = (parent, other)
    edges[...] = e
    sid = zarr.open_array(str(graph / "nodes" / "props" / "seg_id" / "values"), mode="r+")
    ids = sid[...]
    ids[3] = 777
    sid[...] = ids
    problems = get_format("geff").validate(tmp_path)
    text = "\n".join(problems)
    assert "refers to missing node(s) 9999" in text
    assert "has seg_id 777, which is not in the label image's frame" in text
    assert f"node {parent} has 3 children (a division has at most two)" in text
    with pytest.raises(ValidationError):
        list(read_samples("geff", tmp_path))


def test_geff_prediction_scored_like_the_same_ctc_result(
    tmp_path: Path, cli_cmd: list[str], cli_env: dict[str, str]
) -> None:
    s = _sample("01", (40, 40), 3)
    store = build_store([s], tmp_path / "store.zarr", CARD)
    gt = TrackedSequence(s.instances, s.tracks)
    res, counts = perturb(gt, seed=5, p_fn=0.15, p_fp=0.1, p_merge=0.0, p_split=0.1)
    assert counts.fn and counts.fp and counts.miss_division
    write_sequence_geff(res, tmp_path / "geff" / "01")
    write_ctc_result(res, tmp_path / "ctc" / "01_RES")
    from_geff = score("tracking", store, "test", tmp_path / "geff", n_bootstrap=0)
    from_ctc = score("tracking", store, "test", tmp_path / "ctc", n_bootstrap=0)
    assert from_geff.metrics == from_ctc.metrics
    assert 0.2 < from_geff.metrics["ctc/tra"] < 1.0
    # a graph from another tool: node ids not in CTC form (seg_id differs from the track
    # and changes per frame) is cut into CTC tracks and scores the same
    relabelled = res.labels.copy()
    for t in range(relabelled.shape[0]):
        nz = relabelled[t] > 0
        relabelled[t][nz] = relabelled[t][nz] + 100 * (t + 1)
    g = res.graph()
    links = g.links()
    links[:, 1] += 100 * (links[:, 0] + 1)
    links[:, 3] += 100 * (links[:, 2] + 1)
    other = TrackedSequence.from_links(relabelled, links)
    write_sequence_geff(other, tmp_path / "geff2" / "01")
    assert score("tracking", store, "test", tmp_path / "geff2", n_bootstrap=0).metrics == (
        from_ctc.metrics
    )
    # cellbench score (the CLI) reads the GEFF folder
    args = ["score", "--task", "tracking", "--dataset", str(tmp_path / "store.zarr")]
    args += [str(tmp_path / "geff"), "--bootstrap", "0", "--json", "-q", "--split", "test"]
    run = subprocess.run(
        [*cli_cmd, *args],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["metrics"]["ctc/tra"] == from_ctc.metrics["ctc/tra"]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("shape", [(32, 32), (6, 20, 20)])
def test_interoperates_with_the_geff_reference_implementation(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    """geff's own CTC -> GEFF converter is read back exactly; ours passes geff's validators."""
    import geff
    from geff.convert._ctc import from_ctc_to_geff
    from geff.core_io import read_to_memory
    from geff.validate.segmentation import has_valid_seg_id

    from cellbench.tasks.tracking.geff import read_sequence_geff

    s = _sample("01", shape, 7)
    seq = TrackedSequence(s.instances, s.tracks)
    write_ctc_result(seq, tmp_path / "01_RES")
    from_ctc_to_geff(tmp_path / "01_RES", tmp_path / "ref.geff", tmp_path / "ref_seg.zarr")
    back, image = read_sequence_geff(tmp_path / "ref.geff")
    assert image is None
    assert np.array_equal(back.labels, seq.labels) and back.tracks.tolist() == seq.tracks.tolist()
    write_sequence_geff(seq, tmp_path / "ours")
    geff.validate_structure(str(tmp_path / "ours" / "tracks"))
    ok, errors = has_valid_seg_id(read_to_memory(str(tmp_path / "ours" / "tracks")))
    assert ok, errors


def test_a_label_image_larger_than_the_memory_available_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The label image and image are read whole (absent chunks filled): checked first."""
    s = _sample("01", (32, 32), 1)
    write_sequence_geff(TrackedSequence(s.instances, s.tracks), tmp_path / "01", s.image)
    memory_available(monkeypatch, 1000)
    with pytest.raises(ValidationError) as err:
        list(read_samples("geff", tmp_path))
    assert err.value.problems == [
        "01: 01/tracks: label image labels unreadable (its 6 x 32 x 32 uint16 values need 12.0 KiB "
        "of memory to decode, more than the 1000 bytes available)",
        "01: 01/tracks: image image unreadable (its 6 x 1 x 32 x 32 uint16 values need 12.0 KiB of "
        "memory to decode, more than the 1000 bytes available)",
    ]
    memory_available(monkeypatch, 12288)
    assert [x.id for x in read_samples("geff", tmp_path)] == ["01"]
