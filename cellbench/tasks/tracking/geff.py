"""GEFF (graph exchange file format) for tracks, in and out, with label images beside it.

GEFF (https://liveimagetrackingtools.org/geff, the ``geff`` package) stores a tracking graph in
Zarr: nodes (detections) with properties, edges (links forward in time; a node with two
successors divides). cellbench writes one folder per sequence, as the GEFF spec recommends
(related objects as siblings of the graph inside one Zarr group)::

    DEST/cellbench.json            split, axes, channel names, pixel sizes, metadata per sequence
    DEST/<sample_id>/              a Zarr group (format 2, GEFF's default)
        tracks/                    the GEFF graph
            nodes/ids              one node per (frame, label) detection
            nodes/props/t|z|y|x    frame and centroid (pixels)
            nodes/props/seg_id     the node's label in labels[t]
            nodes/props/track_id   the CTC track (tracklet) id
            edges/ids              (source, target) node ids, forward in time
            edges/props/parent_link  1 for a parent -> daughter link (CTC semantics)
        labels                     (T, [Z,] Y, X) label image (GEFF related object "labels",
                                   ``label_prop`` = seg_id)
        image                      (T, C, [Z,] Y, X) the raw image (related object "image")

Reading follows the metadata: the ``labels`` related object (any path) and its ``label_prop``
(default ``seg_id``) link nodes to label images and the axis of type ``time`` names the frame
property, so GEFF files written by other tools (geff's own CTC converter, trackers) are read.
A graph whose track ids, labels and links already form CTC tracks is read as it is (bit-exact
round trip); any other graph is cut into CTC tracks by
:meth:`~cellbench.tracks.TrackedSequence.from_links` (a node with several successors ends its
track; each successor starts a daughter track).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import array_memory_problem
from cellbench.formats.registry import Format, ItemList
from cellbench.store.sample import Sample
from cellbench.tasks.tracking.ctc import sidecar_record, write_sidecar
from cellbench.tracks import TrackedSequence

GRAPH = "tracks"
LABELS = "labels"
IMAGE = "image"


def _require_geff() -> Any:
    try:
        import geff
    except ImportError:
        from cellbench.errors import CellbenchError

        raise CellbenchError(
            "the GEFF format needs the 'geff' extra: pip install 'cellbench[geff]'"
        ) from None
    return geff


# ---------------------------------------------------------------------------- write
def _centroids(frame: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(n, ndim)`` float64 centroids of the labels ``ids`` in one frame."""
    flat = frame.ravel().astype(np.int64)
    n = int(ids.max(initial=0)) + 1
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    out = np.empty((ids.size, frame.ndim), dtype=np.float64)
    for axis in range(frame.ndim):
        shape = [1] * frame.ndim
        shape[axis] = frame.shape[axis]
        coord = np.broadcast_to(
            np.arange(frame.shape[axis], dtype=np.float64).reshape(shape), frame.shape
        ).ravel()
        out[:, axis] = np.bincount(flat, weights=coord, minlength=n)[ids] / counts[ids]
    return out


def write_sequence_geff(
    seq: TrackedSequence, folder: str | os.PathLike, image: np.ndarray | None = None
) -> Path:
    """Write one tracked sequence as a GEFF graph with its label image (and image) beside it.

    Args:
        seq: The sequence (labels and a valid CTC track table).
        folder: The sequence's folder (created; must not exist).
        image: Optional ``(T, C, [Z,] Y, X)`` raw image stored beside the graph.

    Returns:
        The folder.
    """
    geff = _require_geff()
    import zarr
    from geff.core_io import write_arrays
    from geff_spec import Axis, GeffMetadata, RelatedObject

    out = Path(folder)
    root = zarr.open_group(str(out), mode="w-", zarr_format=2)
    lab = np.asarray(seq.labels)
    root.create_array(
        LABELS, shape=lab.shape, dtype=lab.dtype, chunks=(1, *lab.shape[1:]), fill_value=0
    )[...] = lab
    related = [RelatedObject(type="labels", path=f"../{LABELS}", label_prop="seg_id")]
    if image is not None:
        root.create_array(
            IMAGE,
            shape=image.shape,
            dtype=image.dtype,
            chunks=(1, 1, *image.shape[2:]),
            fill_value=0,
        )[...] = image
        related.append(RelatedObject(type="image", path=f"../{IMAGE}"))

    g = seq.graph()
    spatial = ("z", "y", "x")[-(lab.ndim - 1) :]
    cents = np.zeros((g.n_nodes, lab.ndim - 1), dtype=np.float64)
    for t in range(seq.n_frames):
        a, b = int(g.frame_offsets[t]), int(g.frame_offsets[t + 1])
        if b > a:
            cents[a:b] = _centroids(lab[t], g.labels[a:b])
    node_ids = np.arange(g.n_nodes, dtype=np.uint64)
    props: dict[str, Any] = {
        "t": {"values": g.frames.astype(np.int64), "missing": None},
        "seg_id": {"values": g.labels.astype(np.int64), "missing": None},
        "track_id": {"values": g.labels.astype(np.int64), "missing": None},
    }
    for i, axis in enumerate(spatial):
        props[axis] = {"values": cents[:, i], "missing": None}
    edges = np.stack([g.sources, g.targets], axis=1).astype(np.uint64).reshape(-1, 2)
    metadata = GeffMetadata(
        geff_version=geff.__version__,
        directed=True,
        axes=[Axis(name="t", type="time")] + [Axis(name=a, type="space") for a in spatial],
        node_props_metadata={},
        edge_props_metadata={},
        track_node_props={"tracklet": "track_id"},
        related_objects=related,
    )
    write_arrays(
        str(out / GRAPH),
        node_ids,
        props,
        edges,
        {"parent_link": {"values": g.is_parent_link.astype(np.uint8), "missing": None}},
        metadata,
        zarr_format=2,
    )
    return out


def write_geff(samples: Iterable[Sample], dest: str | os.PathLike) -> None:
    """Write tracking samples as GEFF graphs, one folder per sequence (see the module doc).

    Args:
        samples: Tracking samples with ``instances`` and ``tracks``.
        dest: Destination folder (created; must not exist: callers write to a temporary folder
            and rename it).

    Raises:
        ValidationError: A sample without tracks or with CTC rule violations (all listed).
    """
    out = Path(dest)
    out.mkdir(parents=True)
    meta: dict[str, Any] = {}
    for sample in samples:
        where = f"sample {sample.id!r}"
        if sample.instances is None or sample.tracks is None:
            raise ValidationError([f"{where}: GEFF needs instances and tracks"], str(out))
        seq = TrackedSequence(sample.instances, sample.tracks, name=sample.id)
        problems = [f"{where}: {p}" for p in sample.problems() + seq.problems()]
        if sample.seg is not None:
            problems.append(f"{where}: has sparse SEG truth, which GEFF cannot hold (use ctc)")
        parents, n = np.unique(seq.tracks[seq.tracks[:, 3] > 0, 3], return_counts=True)
        for parent, count in zip(parents[n > 2].tolist(), n[n > 2].tolist(), strict=True):
            problems.append(
                f"{where}: track {parent} has {count} daughters; a GEFF division has at most "
                "two children (cellbench's GEFF validator and tracking tools expect it)"
            )
        if problems:
            raise ValidationError(problems, str(out))
        write_sequence_geff(seq, out / sample.id, sample.image)
        meta[sample.id] = sidecar_record(sample)
    write_sidecar(out, meta)


# ---------------------------------------------------------------------------- read
def _related(graph: Path, meta: Any, kind: str) -> tuple[Path | None, str | None]:
    for obj in meta.related_objects or []:
        if obj.type == kind:
            return (graph / obj.path).resolve(), obj.label_prop
    return None, None


def _whole(array: Any) -> np.ndarray:
    """A Zarr array read whole; first refused (ValueError) when it cannot fit in memory.

    Zarr allocates the declared shape and fills absent chunks, so a few bytes of metadata can
    declare more than the machine holds.
    """
    problem = array_memory_problem(array, "values")
    if problem:
        raise ValueError(problem)
    return np.asarray(array[...])


def _load(graph: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The graph, its label image and image, with every structural problem (never raises)."""
    _require_geff()
    import zarr
    from geff.core_io import read_to_memory

    name = graph.parent.name + "/" + graph.name
    try:
        mem = read_to_memory(str(graph))
    except Exception as err:  # geff raises ValueError/KeyError/... for broken graphs
        return None, [f"{name}: not a valid GEFF graph ({type(err).__name__}: {err})"]
    meta = mem["metadata"]
    problems: list[str] = []
    lab_path, label_prop = _related(graph, meta, "labels")
    label_prop = label_prop or "seg_id"
    # the time property is the axis of type "time" (trackers name it t, frame, time, ...)
    time_prop = next((a.name for a in meta.axes or [] if a.type == "time"), "t")
    props = mem["node_props"]
    for needed in (time_prop, label_prop):
        if needed not in props:
            problems.append(f"{name}: nodes lack the {needed!r} property")
    labels = None
    if lab_path is None:
        problems.append(f"{name}: no related object of type 'labels' (the label image)")
    else:
        try:
            labels = _whole(zarr.open_array(str(lab_path), mode="r"))
        except Exception as err:
            problems.append(f"{name}: label image {lab_path.name} unreadable ({err})")
    if labels is not None and (labels.dtype.kind not in "ui" or labels.ndim not in (3, 4)):
        problems.append(
            f"{name}: label image is {labels.dtype} {labels.shape}, expected integer (T, [Z,] Y, X)"
        )
        labels = None
    img_path, _ = _related(graph, meta, "image")
    image = None
    if img_path is not None:
        try:
            image = _whole(zarr.open_array(str(img_path), mode="r"))
        except Exception as err:
            problems.append(f"{name}: image {img_path.name} unreadable ({err})")
    if problems:
        return None, problems
    ids = np.asarray(mem["node_ids"]).astype(np.int64)
    t = np.asarray(props[time_prop]["values"])
    seg = np.asarray(props[label_prop]["values"])
    for what, arr in ((time_prop, t), (label_prop, seg)):
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            problems.append(f"{name}: node property {what!r} holds non-integer values")
    t, seg = t.astype(np.int64), seg.astype(np.int64)
    edges = np.asarray(mem["edge_ids"]).astype(np.int64).reshape(-1, 2)
    flags = mem["edge_props"].get("parent_link")
    track = props.get("track_id") or props.get(
        (meta.track_node_props or {}).get("tracklet", ""), None
    )
    return {
        "ids": ids,
        "t": t,
        "seg": seg,
        "edges": edges,
        "parent_link": None if flags is None else np.asarray(flags["values"]).astype(bool),
        "track": None if track is None else np.asarray(track["values"]).astype(np.int64),
        "labels": labels,
        "image": image,
        "name": name,
    }, problems


def _graph_problems(d: dict[str, Any]) -> list[str]:
    """Edges to missing nodes, seg_ids absent from their frame, merges, > 2 children."""
    name, ids, t, seg, edges, labels = (
        d["name"],
        d["ids"],
        d["t"],
        d["seg"],
        d["edges"],
        d["labels"],
    )
    out: list[str] = []
    uniq, counts = np.unique(ids, return_counts=True)
    for i in uniq[counts > 1][:10].tolist():
        out.append(f"{name}: node id {i} is defined more than once")
    index = {int(n): k for k, n in enumerate(ids.tolist())}
    bad_t = np.flatnonzero((t < 0) | (t >= labels.shape[0]))
    for k in bad_t[:10].tolist():
        out.append(
            f"{name}: node {int(ids[k])} has t={int(t[k])}, outside the label image's frames "
            f"0..{labels.shape[0] - 1}"
        )
    present = [set(np.unique(labels[f]).tolist()) - {0} for f in range(labels.shape[0])]
    missing = [
        k
        for k in range(ids.size)
        if 0 <= t[k] < labels.shape[0] and int(seg[k]) not in present[int(t[k])]
    ]
    for k in missing[:20]:
        out.append(
            f"{name}: node {int(ids[k])} (t={int(t[k])}) has seg_id {int(seg[k])}, which is "
            f"not in the label image's frame {int(t[k])}"
        )
    if len(missing) > 20:
        out.append(f"{name}: ... and {len(missing) - 20} more nodes whose seg_id is absent")
    pairs = {}
    for k in range(ids.size):
        key = (int(t[k]), int(seg[k]))
        if key in pairs:
            out.append(
                f"{name}: nodes {pairs[key]} and {int(ids[k])} both claim label {key[1]} in "
                f"frame {key[0]}"
            )
        pairs[key] = int(ids[k])
    src_ok = np.isin(edges[:, 0], ids)
    dst_ok = np.isin(edges[:, 1], ids)
    for e in np.flatnonzero(~(src_ok & dst_ok))[:20].tolist():
        gone = [int(n) for n, ok in zip(edges[e], (src_ok[e], dst_ok[e]), strict=True) if not ok]
        out.append(
            f"{name}: edge {e} ({int(edges[e, 0])} -> {int(edges[e, 1])}) refers to missing "
            f"node(s) {', '.join(map(str, gone))}"
        )
    good = edges[src_ok & dst_ok]
    if good.size:
        ts = t[[index[int(n)] for n in good[:, 0]]]
        td = t[[index[int(n)] for n in good[:, 1]]]
        for e in np.flatnonzero(td <= ts)[:20].tolist():
            out.append(
                f"{name}: edge {int(good[e, 0])} -> {int(good[e, 1])} goes from t={int(ts[e])} "
                f"to t={int(td[e])} (edges must go forward in time)"
            )
        src, n_out = np.unique(good[:, 0], return_counts=True)
        for n, c in zip(src[n_out > 2].tolist(), n_out[n_out > 2].tolist(), strict=True):
            out.append(f"{name}: node {n} has {c} children (a division has at most two)")
        dst, n_in = np.unique(good[:, 1], return_counts=True)
        for n, c in zip(dst[n_in > 1].tolist(), n_in[n_in > 1].tolist(), strict=True):
            out.append(f"{name}: node {n} has {c} parents (merges cannot be CTC tracks)")
    return out


def _to_sequence(d: dict[str, Any]) -> TrackedSequence:
    """The CTC sequence of a checked graph (as is when already CTC tracks, else cut)."""
    index = {int(n): k for k, n in enumerate(d["ids"].tolist())}
    src = np.asarray([index[int(n)] for n in d["edges"][:, 0]], dtype=np.int64)
    dst = np.asarray([index[int(n)] for n in d["edges"][:, 1]], dtype=np.int64)
    t, seg, labels = d["t"], d["seg"], d["labels"]
    links = np.stack([t[src], seg[src], t[dst], seg[dst]], axis=1).reshape(-1, 4)
    track = d["track"]
    if track is not None and np.array_equal(track, seg):
        table = []
        for tid in np.unique(track).tolist():
            mine = np.flatnonzero(track == tid)
            first = mine[np.argmin(t[mine])]
            parents = src[dst == first]
            parent = int(track[parents[0]]) if parents.size else 0
            table.append([tid, int(t[mine].min()), int(t[mine].max()), parent])
        seq = TrackedSequence(labels, np.asarray(table, dtype=np.int64).reshape(-1, 4))
        if not seq.problems():
            mine = {tuple(r) for r in seq.graph().links()[:, :4].tolist()}
            if mine == {tuple(r) for r in links.tolist()}:
                return seq
    if d["parent_link"] is not None:
        links = np.concatenate([links, d["parent_link"][:, None].astype(np.int64)], axis=1)
    # labels absent from the graph are detections without links (single-frame tracks)
    return TrackedSequence.from_links(labels, links, name=d["name"])


def read_sequence_geff(folder: str | os.PathLike) -> tuple[TrackedSequence, np.ndarray | None]:
    """Read one sequence folder (or a GEFF graph folder) as a CTC sequence and its image.

    Args:
        folder: ``<sample_id>/`` holding ``tracks/`` (or the GEFF graph itself).

    Returns:
        The tracked sequence and the image (``None`` when no image is linked).

    Raises:
        ValidationError: Listing every problem of the graph.
    """
    graph = _graph_path(Path(folder))
    d, problems = _load(graph)
    if d is not None:
        problems += _graph_problems(d)
    if problems or d is None:
        raise ValidationError(problems, context=str(folder))
    return _to_sequence(d), d["image"]


def _graph_path(folder: Path) -> Path:
    return folder / GRAPH if (folder / GRAPH).is_dir() else folder


def _sequence_folders(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.is_dir() and (p / GRAPH / "nodes").is_dir())


def read_geff(src: str | os.PathLike, *, split: str = "train") -> Iterator[Sample]:
    """Stream a folder of GEFF sequences (see the module doc) as tracking samples.

    Args:
        src: The folder (``<sample_id>/tracks`` per sequence).
        split: Split of every sample when no ``cellbench.json`` says.

    Yields:
        One sample per sequence, in name order. Problems of one sequence do not stop the check
        of the others: once any is found nothing more is yielded, and every problem (each line
        naming its sequence folder) is raised together at the end.

    Raises:
        ValidationError: Listing every problem of every sequence.
    """
    listing = geff_items(src, split=split)
    problems: list[str] = []
    for name in listing.items:
        sample, more = read_geff_item(src, name, split=split)
        problems += more
        if not problems and sample is not None:
            yield sample
    if problems:
        raise ValidationError(problems, listing.context)


def geff_items(src: str | os.PathLike, *, split: str = "train") -> ItemList:
    """The sequence folders of a GEFF folder (the per-item listing; see ``Format.items``).

    Raises:
        ValidationError: No GEFF graph found, or an unreadable ``cellbench.json``.
    """
    root = Path(src)
    folders = _sequence_folders(root) if root.is_dir() else []
    if not folders:
        raise ValidationError([f"{root}: no <sample_id>/{GRAPH} GEFF graphs found"])
    from cellbench.tasks.tracking.ctc import read_sidecar

    _, problems = read_sidecar(root)
    if problems:
        raise ValidationError(problems, str(root))
    return ItemList([f.name for f in folders], [], str(root))


def read_geff_item(
    src: str | os.PathLike, item: str, *, split: str = "train"
) -> tuple[Sample | None, list[str]]:
    """Sequence folder ``item`` as a tracking sample, and its problems (each naming ``item``)."""
    from cellbench.tasks.tracking.ctc import read_sidecar

    root = Path(src)
    folder = root / item
    try:
        seq, image = read_sequence_geff(folder)
    except ValidationError as err:
        return None, [f"{item}: {p}" for p in err.problems]
    if image is None:
        return None, [f"{item}: no image linked (related object 'image'); a sample needs one"]
    meta, _ = read_sidecar(root)
    info = meta.get(item, {})
    axes = str(info.get("axes", "tczyx" if image.ndim == 5 else "tcyx"))
    return Sample(
        id=item,
        image=image,
        axes=axes,
        channel_names=list(info.get("channel_names", [])),
        split=str(info.get("split", split)),
        pixel_size={k: float(v) for k, v in info.get("pixel_size", {}).items()},
        metadata=dict(info.get("metadata", {})),
        instances=seq.labels,
        tracks=seq.tracks,
    ), []


def geff_problems(src: str | os.PathLike, **_: Any) -> list[str]:
    """Every problem of a folder of GEFF sequences (or of one GEFF graph), never raising."""
    root = Path(src)
    if not root.is_dir():
        return [f"{root}: not a folder"]
    folders = _sequence_folders(root) or ([root] if (root / "nodes").is_dir() else [])
    if not folders:
        return [f"{root}: no <sample_id>/{GRAPH} GEFF graphs found"]
    out: list[str] = []
    for folder in folders:
        d, problems = _load(_graph_path(folder))
        out += problems
        if d is not None:
            out += _graph_problems(d)
    return out


FORMAT = Format(
    name="geff",
    description="GEFF tracking graphs (Zarr) with seg_id linking nodes to label images",
    tasks=("tracking",),
    read=read_geff,
    write=write_geff,
    validate=geff_problems,
    options={
        "split": "read only: split of every sequence when no cellbench.json says (default train)"
    },
    items=geff_items,
    read_item=read_geff_item,
)
