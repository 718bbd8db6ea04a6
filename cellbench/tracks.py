"""The canonical tracking object: label images over time plus a Cell Tracking Challenge track table.

A :class:`TrackedSequence` is what every tracking hand-off uses: the CTC reader
(:mod:`cellbench.tasks.tracking.ctc`) returns one, the store's tracking
:class:`~cellbench.store.sample.Sample` converts to and from one, and the tracking metrics
(:mod:`cellbench.metrics.tracking`) compare two.

It holds

* ``labels``: ``(T, [Z,] Y, X)`` integer instance ids per frame, 0 is background;
* ``tracks``: an ``(n, 4)`` int64 table ``track_id, start, end, parent`` with the meaning of the
  CTC ``man_track.txt`` / ``res_track.txt`` lines ``L B E P`` (label, first frame, last frame,
  parent label or 0);
* optional sparse SEG ground truth (:class:`SegAnnotation`): full label images for some frames, or
  single ``z`` slices of some frames of a 3D sequence, as CTC ``man_seg`` files provide.

The CTC rules a sequence must obey are checked by :meth:`TrackedSequence.problems`, which lists
every violation at once. The acyclic oriented graph the CTC measures compare (Matula et al. 2015)
is built by :meth:`TrackedSequence.graph`: nodes are ``(frame, label)`` detections, edges link a
label to itself in the next frame (*track links*) and a parent's last detection to each daughter's
first detection (*parent links*).

All arithmetic on ids is done in int64 (large uint16 ids never wrap, unlike tools that offset ids
inside a uint16 array); the label array itself keeps the dtype it was given, so a uint16 movie is
not quadrupled in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.matching import present_ids

#: Columns of the track table, as in the CTC ``man_track.txt`` (``L B E P``).
TRACK_COLUMNS = ("track_id", "start", "end", "parent")

FrameNamer = Callable[[int], str]
RowNamer = Callable[[int], str]


def format_ranges(values: Sequence[int] | np.ndarray, limit: int = 12) -> str:
    """Format sorted integers compactly, e.g. ``[1, 2, 3, 7]`` -> ``"1-3, 7"``.

    Args:
        values: Sorted integers.
        limit: Most ranges to spell out before summarising the rest.

    Returns:
        The compact text.
    """
    v = np.asarray(values, dtype=np.int64)
    if v.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(v) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks - 1, [v.size - 1]])
    parts = [str(v[s]) if s == e else f"{v[s]}-{v[e]}" for s, e in zip(starts, ends, strict=True)]
    if len(parts) > limit:
        rest = len(parts) - limit
        parts = [*parts[:limit], f"... ({rest} more ranges)"]
    return ", ".join(parts)


def _default_frame_name(t: int) -> str:
    return f"frame {t}"


def _frames_text(frames: np.ndarray, frame_name: FrameNamer) -> str:
    """``frames 3-5 (mask003.tif to mask005.tif)``-style text for a sorted frame list."""
    frames = np.asarray(frames, dtype=np.int64)
    word = "frame" if frames.size == 1 else "frames"
    text = f"{word} {format_ranges(frames)}"
    if frame_name is _default_frame_name:
        return text
    first, last = frame_name(int(frames[0])), frame_name(int(frames[-1]))
    files = first if frames.size == 1 else f"{first} to {last}"
    return f"{text} ({files})"


@dataclass(frozen=True, eq=False)
class SegAnnotation:
    """One SEG ground-truth label image (CTC ``man_seg``): a whole frame or one z slice of it.

    CTC segmentation ground truth is sparse: only some frames (2D+t) or some slices of some
    frames (3D+t) are annotated, and within them possibly only some objects. Only the objects
    present in these images count for SEG.

    Attributes:
        frame: Time index the annotation belongs to.
        labels: Instance ids (0 = background): the frame's spatial shape, or ``(Y, X)`` for a
            slice of a 3D sequence.
        z: Index of the annotated slice in a 3D sequence, or ``None`` for the whole frame.
    """

    frame: int
    labels: np.ndarray
    z: int | None = None


def seg_annotations(seg: Any, annotated: np.ndarray) -> tuple[SegAnnotation, ...]:
    """SEG annotations from a sparse label image and its ``(n, 2)`` table of ``frame, z``.

    Args:
        seg: ``(T, [Z,] Y, X)`` label image (a NumPy or lazy Zarr array: only the annotated
            frames or slices are read).
        annotated: Rows ``frame, z`` (``z = -1``: the whole frame), as stored by the canonical
            store (:attr:`cellbench.store.sample.Sample.seg_annotated`).

    Returns:
        One :class:`SegAnnotation` per row, in frame then slice order.
    """
    rows = sorted((int(t), int(z)) for t, z in np.asarray(annotated).reshape(-1, 2).tolist())
    return tuple(
        SegAnnotation(
            frame=t, labels=np.asarray(seg[t] if z < 0 else seg[t, z]), z=None if z < 0 else z
        )
        for t, z in rows
    )


def seg_arrays(
    seg: Sequence[SegAnnotation], labels_shape: tuple[int, ...], dtype: Any = np.uint16
) -> tuple[np.ndarray, np.ndarray]:
    """The store's sparse form of SEG annotations: a label image and its ``frame, z`` table.

    Args:
        seg: The annotations (whole frames or z slices).
        labels_shape: ``(T, [Z,] Y, X)`` of the sequence.
        dtype: Dtype of the label image.

    Returns:
        The ``(T, [Z,] Y, X)`` label image (0 outside the annotations) and the ``(n, 2)``
        int64 table (``z = -1``: a whole frame), sorted.
    """
    out = np.zeros(labels_shape, dtype=dtype)
    rows = []
    for a in sorted(seg, key=lambda a: (a.frame, -1 if a.z is None else a.z)):
        if a.z is None:
            out[a.frame] = a.labels
            rows.append((a.frame, -1))
        else:
            out[a.frame, a.z] = a.labels
            rows.append((a.frame, a.z))
    return out, np.asarray(rows, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class TrackGraph:
    """The acyclic oriented graph of a tracked sequence (CTC AOGM representation).

    Nodes are the ``(frame, label)`` detections present in the label images, sorted by frame then
    label. Edges go forward in time; ``is_parent_link`` is ``False`` for track links (the same
    label in consecutive frames) and ``True`` for parent links (a parent's last detection to a
    daughter's first detection, also when the parent has a single daughter, as in CTC).

    Attributes:
        frames: ``(N,)`` int64 frame of each node.
        labels: ``(N,)`` int64 label of each node.
        sources: ``(M,)`` int64 node index of each edge's source.
        targets: ``(M,)`` int64 node index of each edge's target.
        is_parent_link: ``(M,)`` bool, the edge semantics.
        frame_offsets: ``(T + 1,)`` int64; nodes of frame ``t`` are ``frame_offsets[t]:[t + 1]``.
    """

    frames: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    targets: np.ndarray
    is_parent_link: np.ndarray
    frame_offsets: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Number of nodes (detections)."""
        return int(self.frames.size)

    @property
    def n_edges(self) -> int:
        """Number of edges (track links plus parent links)."""
        return int(self.sources.size)

    @cached_property
    def _key_base(self) -> int:
        return int(self.labels.max(initial=0)) + 1

    @cached_property
    def _keys(self) -> np.ndarray:
        return self.frames * self._key_base + self.labels

    def node_index(self, frames: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Return the node index of each ``(frame, label)`` pair, or -1 where absent.

        Args:
            frames: Frame indices.
            labels: Labels, same shape as ``frames``.

        Returns:
            int64 node indices (-1 for pairs that are not nodes).
        """
        f = np.asarray(frames, dtype=np.int64)
        lab = np.asarray(labels, dtype=np.int64)
        out = np.full(f.shape, -1, dtype=np.int64)
        ok = (lab > 0) & (lab < self._key_base) & (f >= 0)
        if not ok.any() or self.n_nodes == 0:
            return out
        keys = f[ok] * self._key_base + lab[ok]
        pos = np.searchsorted(self._keys, keys)
        pos_c = np.minimum(pos, self.n_nodes - 1)
        hit = self._keys[pos_c] == keys
        out[np.flatnonzero(ok)[hit]] = pos_c[hit]
        return out

    @cached_property
    def predecessor(self) -> np.ndarray:
        """``(N,)`` int64 index of each node's incoming edge source, or -1 (at most one in CTC)."""
        pred = np.full(self.n_nodes, -1, dtype=np.int64)
        pred[self.targets] = self.sources
        return pred

    @cached_property
    def out_degree(self) -> np.ndarray:
        """``(N,)`` int64 number of outgoing edges of each node."""
        return np.bincount(self.sources, minlength=self.n_nodes).astype(np.int64)

    @cached_property
    def _succ_csr(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.sources, kind="stable")
        offsets = np.zeros(self.n_nodes + 1, dtype=np.int64)
        np.cumsum(self.out_degree, out=offsets[1:])
        return offsets, self.targets[order]

    def successors(self, node: int) -> np.ndarray:
        """Return the successor node indices of one node (int64)."""
        offsets, targets = self._succ_csr
        return targets[offsets[node] : offsets[node + 1]]

    def links(self) -> np.ndarray:
        """Return the edges as an ``(M, 5)`` int64 array ``t1, l1, t2, l2, is_parent_link``."""
        return np.stack(
            [
                self.frames[self.sources],
                self.labels[self.sources],
                self.frames[self.targets],
                self.labels[self.targets],
                self.is_parent_link.astype(np.int64),
            ],
            axis=1,
        ).reshape(-1, 5)


def _smallest_uint(max_value: int) -> np.dtype:
    for dt in (np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _relabel_frame(frame: np.ndarray, ids: np.ndarray, new_ids: np.ndarray, dtype: Any) -> Any:
    """Map sorted ``ids`` of one frame to ``new_ids`` (0 stays 0); other values become 0."""
    a = np.asarray(frame)
    if ids.size == 0:
        return np.zeros(a.shape, dtype=dtype)
    hi = int(ids[-1])
    if (a.dtype.kind == "u" and a.dtype.itemsize <= 2) or hi < max(1 << 20, 4 * a.size):
        lut = np.zeros(max(hi, int(a.max(initial=0))) + 1, dtype=dtype)
        lut[ids] = new_ids
        return lut[a]
    pos = np.searchsorted(ids, a)
    pos_c = np.minimum(pos, ids.size - 1)
    return np.where(ids[pos_c] == a, new_ids[pos_c], 0).astype(dtype)


@dataclass(frozen=True, eq=False)
class TrackedSequence:
    """A tracked sequence: label images over time, a CTC track table and optional SEG truth.

    Construct it directly, from a store :class:`~cellbench.store.sample.Sample`
    (:meth:`from_sample`), from CTC folders
    (:func:`cellbench.tasks.tracking.ctc.read_ctc_ground_truth`,
    :func:`cellbench.tasks.tracking.ctc.read_ctc_result`) or from a tracker's node links
    (:meth:`from_links`). Check it with :meth:`validate`.

    Attributes:
        labels: ``(T, [Z,] Y, X)`` integer instance ids per frame (0 = background). Kept in the
            given dtype; every id computation is done in int64.
        tracks: ``(n, 4)`` int64 table ``track_id, start, end, parent`` (CTC ``L B E P``).
        seg: Sparse SEG ground truth (empty for results or when none is annotated).
        name: Optional name used in messages (a sequence id or folder).
    """

    labels: np.ndarray
    tracks: np.ndarray
    seg: tuple[SegAnnotation, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        tracks = np.asarray(self.tracks)
        if tracks.size == 0:
            tracks = np.zeros((0, 4), dtype=np.int64)
        elif tracks.dtype.kind in "uib" or (
            tracks.dtype.kind == "f" and np.all(np.isfinite(tracks) & (tracks == np.round(tracks)))
        ):
            tracks = tracks.astype(np.int64)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "tracks", tracks)
        object.__setattr__(self, "seg", tuple(self.seg))

    # ------------------------------------------------------------------ basic properties
    @property
    def n_frames(self) -> int:
        """Number of frames ``T``."""
        return int(self.labels.shape[0]) if self.labels.ndim else 0

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of one frame, ``([Z,] Y, X)``."""
        return tuple(int(n) for n in self.labels.shape[1:])

    @property
    def is_3d(self) -> bool:
        """Whether frames are volumes ``(Z, Y, X)``."""
        return self.labels.ndim == 4

    @property
    def seg_frames(self) -> np.ndarray:
        """Frames that carry SEG ground truth (sorted, unique, int64)."""
        return np.unique(np.asarray([a.frame for a in self.seg], dtype=np.int64))

    @cached_property
    def frame_ids(self) -> tuple[np.ndarray, ...]:
        """Sorted non-zero ids present in each frame (int64), computed once."""
        return tuple(present_ids(self.labels[t]) for t in range(self.n_frames))

    def track_row(self, track_id: int) -> np.ndarray | None:
        """Return the table row ``(L, B, E, P)`` of a track id, or ``None``."""
        rows = np.flatnonzero(self.tracks[:, 0] == track_id) if self.tracks.ndim == 2 else []
        return self.tracks[rows[0]] if len(rows) else None

    # ------------------------------------------------------------------ graph
    @cached_property
    def _graph(self) -> TrackGraph:
        ids = self.frame_ids
        counts = np.asarray([i.size for i in ids], dtype=np.int64)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        frames = np.repeat(np.arange(len(ids), dtype=np.int64), counts)
        labels = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        labels = labels.astype(np.int64, copy=False)
        skeleton = TrackGraph(
            frames=frames,
            labels=labels,
            sources=np.zeros(0, dtype=np.int64),
            targets=np.zeros(0, dtype=np.int64),
            is_parent_link=np.zeros(0, dtype=bool),
            frame_offsets=offsets,
        )
        # Track links: the same label in consecutive frames (read from the masks, as CTC does).
        nxt = skeleton.node_index(frames + 1, labels)
        src_t = np.flatnonzero(nxt >= 0)
        dst_t = nxt[src_t]
        # Parent links: parent's last detection -> daughter's first detection.
        src_p = dst_p = np.zeros(0, dtype=np.int64)
        tab = self.tracks
        if tab.ndim == 2 and tab.shape[1] == 4 and tab.shape[0] and tab.dtype.kind in "iu":
            kids = tab[tab[:, 3] > 0]
            order = np.argsort(tab[:, 0], kind="stable")
            sorted_ids = tab[order, 0]
            pos = np.searchsorted(sorted_ids, kids[:, 3])
            pos_c = np.minimum(pos, max(sorted_ids.size - 1, 0))
            found = sorted_ids[pos_c] == kids[:, 3]
            parent_rows = tab[order[pos_c[found]]]
            kids = kids[found]
            s = skeleton.node_index(parent_rows[:, 2], parent_rows[:, 0])
            d = skeleton.node_index(kids[:, 1], kids[:, 0])
            ok = (s >= 0) & (d >= 0)
            src_p, dst_p = s[ok], d[ok]
        sources = np.concatenate([src_t, src_p]).astype(np.int64)
        targets = np.concatenate([dst_t, dst_p]).astype(np.int64)
        is_parent = np.concatenate([np.zeros(src_t.size, bool), np.ones(src_p.size, bool)])
        order = np.lexsort((targets, sources))
        return TrackGraph(
            frames=frames,
            labels=labels,
            sources=sources[order],
            targets=targets[order],
            is_parent_link=is_parent[order],
            frame_offsets=offsets,
        )

    def graph(self) -> TrackGraph:
        """Return the CTC acyclic oriented graph of this sequence (computed once).

        Track links are read from the label images (the same label present in consecutive
        frames) and parent links from the track table (parent's last frame to daughter's first
        frame, only where both detections exist), as the CTC evaluation does.
        """
        return self._graph

    # ------------------------------------------------------------------ validation
    def problems(
        self,
        frame_name: FrameNamer | None = None,
        row_name: RowNamer | None = None,
        table_name: str = "track table",
        skip_frames: Sequence[int] = (),
    ) -> list[str]:
        """Return every violation of the CTC rules (empty when valid).

        Checked: label array dtype/dimensionality/sign; track table shape and integer type;
        each row ``L >= 1``, ``0 <= B <= E < T``, ``P >= 0`` and ``P != L``; no duplicate track
        ids; the parent exists and ends before the daughter begins; every label in the images is
        in the table and present only within its ``B..E``; every track is present in every frame
        from ``B`` to ``E`` (a track that skips frames needs a new id with a parent link); SEG
        annotations in range and of the right shape.

        Args:
            frame_name: Names a frame in messages (e.g. ``lambda t: f"mask{t:03d}.tif"``).
            row_name: Names a table row in messages (e.g. a file line number).
            table_name: Names the table in messages (e.g. ``"res_track.txt"``).
            skip_frames: Frames whose images are unknown (missing files); not checked.

        Returns:
            One line per problem, grouped per label or track.
        """
        fname = frame_name or _default_frame_name
        rname = row_name or (lambda i: f"{table_name} row {i}")
        out: list[str] = []
        lab = self.labels
        labels_ok = True
        if lab.dtype.kind not in "uib":
            out.append(f"label images must have an integer dtype, got {lab.dtype}")
            labels_ok = False
        if lab.ndim not in (3, 4):
            out.append(
                f"label images must be (T, Y, X) or (T, Z, Y, X), got {lab.ndim} dims "
                f"with shape {lab.shape}"
            )
            labels_ok = False
        if labels_ok and lab.dtype.kind == "i" and lab.size and int(lab.min()) < 0:
            bad = [t for t in range(self.n_frames) if int(lab[t].min()) < 0]
            out.append(f"negative label ids in {_frames_text(np.asarray(bad), fname)}")
            labels_ok = False

        out.extend(
            track_table_problems(
                self.tracks,
                self.frame_ids if labels_ok else None,
                self.n_frames,
                frame_name=fname,
                row_name=rname,
                table_name=table_name,
                skip_frames=skip_frames,
            )
        )
        if labels_ok:
            out.extend(self._seg_problems())
        return out

    def _seg_problems(self) -> list[str]:
        out: list[str] = []
        shape = self.spatial_shape
        for a in self.seg:
            where = f"SEG annotation of frame {a.frame}" + (
                f" slice z={a.z}" if a.z is not None else ""
            )
            if not 0 <= a.frame < self.n_frames:
                out.append(f"{where}: frame is outside 0..{self.n_frames - 1}")
            arr = np.asarray(a.labels)
            if arr.dtype.kind not in "uib":
                out.append(f"{where}: labels must have an integer dtype, got {arr.dtype}")
            expected = shape if a.z is None else shape[1:]
            if a.z is not None and len(shape) != 3:
                out.append(f"{where}: slice annotations need a 3D sequence")
            elif a.z is not None and not 0 <= a.z < shape[0]:
                out.append(f"{where}: slice z={a.z} is outside 0..{shape[0] - 1}")
            if arr.shape != expected:
                out.append(f"{where}: shape {arr.shape} != expected {expected}")
        return out

    def validate(self, context: str | None = None, **names: Any) -> None:
        """Raise :class:`~cellbench.errors.ValidationError` listing every problem, if any.

        Args:
            context: What is validated (defaults to :attr:`name`).
            **names: Forwarded to :meth:`problems` (``frame_name``, ``row_name``, ...).

        Raises:
            ValidationError: When :meth:`problems` is not empty.
        """
        found = self.problems(**names)
        if found:
            raise ValidationError(found, context=context if context is not None else self.name)

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_sample(cls, sample: Any) -> TrackedSequence:
        """Build from a store tracking :class:`~cellbench.store.sample.Sample`.

        Args:
            sample: A sample with ``instances`` ``(T, [Z,] Y, X)`` and ``tracks`` ``(n, 4)``.

        Returns:
            The sequence, with the sample's sparse SEG truth when it has one.

        Raises:
            ValidationError: If the sample has no ``instances`` or ``tracks``.
        """
        missing = [n for n in ("instances", "tracks") if getattr(sample, n, None) is None]
        if missing:
            raise ValidationError(
                [
                    f"tracking sample needs {' and '.join(missing)} "
                    "((T, [Z,] Y, X) ids and an (n, 4) L B E P table)"
                ],
                context=f"sample {getattr(sample, 'id', '?')!r}",
            )
        seg: tuple[SegAnnotation, ...] = ()
        if getattr(sample, "seg", None) is not None and sample.seg_annotated is not None:
            seg = seg_annotations(sample.seg, sample.seg_annotated)
        return cls(labels=sample.instances, tracks=sample.tracks, seg=seg, name=str(sample.id))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return ``{"instances": labels, "tracks": tracks}``, the tracking fields of a Sample."""
        return {"instances": self.labels, "tracks": self.tracks}

    @classmethod
    def from_links(
        cls, labels: np.ndarray, links: np.ndarray, *, name: str = ""
    ) -> TrackedSequence:
        """Build a valid CTC sequence from per-frame detections and node links.

        Trackers often output a graph rather than CTC tracks. Here ``labels`` holds any ids per
        frame (a node is a ``(frame, id)`` pair present in the images) and ``links`` the edges.
        Tracks are cut where CTC needs it: a chain of single links between consecutive frames is
        one track; a node with several successors ends its track and each successor starts a
        daughter track; a link that skips frames (gap closing) or is flagged starts a new track
        with the source's track as parent. Track ids are assigned 1, 2, ... in order of first
        frame then original id, and the images are relabelled accordingly.

        Args:
            labels: ``(T, [Z,] Y, X)`` ids per frame; ids need not be consistent over time.
            links: ``(m, 4)`` ``t1, id1, t2, id2`` with ``t2 > t1``, or ``(m, 5)`` whose last
                column is 1 to force a parent link (a new track) even between consecutive frames.
            name: Name of the sequence.

        Returns:
            The relabelled, valid sequence.

        Raises:
            ValidationError: If a link endpoint is not a detection, goes backwards in time, or a
                node has more than one incoming link (merges cannot be represented in CTC).
        """
        raw = cls(labels=labels, tracks=np.zeros((0, 4), dtype=np.int64))
        g = raw.graph()
        lk = np.asarray(links, dtype=np.int64).reshape(-1, np.asarray(links).shape[-1] or 4)
        if lk.shape[1] not in (4, 5):
            raise ValidationError([f"links must be (m, 4) or (m, 5), got {lk.shape}"], name)
        force = lk[:, 4] != 0 if lk.shape[1] == 5 else np.zeros(lk.shape[0], dtype=bool)
        src = g.node_index(lk[:, 0], lk[:, 1])
        dst = g.node_index(lk[:, 2], lk[:, 3])
        problems = []
        for i in np.flatnonzero((src < 0) | (dst < 0)).tolist():
            problems.append(f"link {i} {lk[i, :4].tolist()}: an endpoint is not a detection")
        for i in np.flatnonzero(lk[:, 2] <= lk[:, 0]).tolist():
            problems.append(f"link {i} {lk[i, :4].tolist()}: does not go forward in time")
        ok = (src >= 0) & (dst >= 0)
        indeg = np.bincount(dst[ok], minlength=g.n_nodes)
        for n in np.flatnonzero(indeg > 1).tolist():
            problems.append(
                f"detection {int(g.labels[n])} in frame {int(g.frames[n])} has {int(indeg[n])} "
                "incoming links (merges cannot be written as CTC tracks)"
            )
        if problems:
            raise ValidationError(problems, context=name or "links")
        n = g.n_nodes
        pred = np.full(n, -1, dtype=np.int64)
        pred[dst] = src
        forced = np.zeros(n, dtype=bool)
        forced[dst] = force
        outdeg = np.bincount(src, minlength=n)
        has_pred = pred >= 0
        pp = np.where(has_pred, pred, 0)
        continues = has_pred & ~forced & (outdeg[pp] == 1) & (g.frames == g.frames[pp] + 1)
        root = np.where(continues, pred, np.arange(n))
        while True:
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        starts = np.flatnonzero(~continues)  # sorted by (frame, label): the id order
        track_of_start = np.zeros(n, dtype=np.int64)
        track_of_start[starts] = np.arange(1, starts.size + 1)
        track = track_of_start[root]
        begin = g.frames[starts]
        end = np.zeros(starts.size, dtype=np.int64)
        np.maximum.at(end, track - 1, g.frames)
        parent = np.where(has_pred[starts], track[pred[starts]] if n else 0, 0)
        table = np.stack([np.arange(1, starts.size + 1), begin, end, parent], axis=1)
        dtype = _smallest_uint(int(starts.size))
        lab = np.asarray(labels)
        out = np.zeros(lab.shape, dtype=dtype)
        for t in range(lab.shape[0]):
            a, b = int(g.frame_offsets[t]), int(g.frame_offsets[t + 1])
            out[t] = _relabel_frame(lab[t], g.labels[a:b], track[a:b], dtype)
        return cls(labels=out, tracks=table.astype(np.int64).reshape(-1, 4), name=name)

    def relabel(self, mapping: dict[int, int] | np.ndarray) -> TrackedSequence:
        """Return a copy with track ids renamed (images, table ids and parents).

        Args:
            mapping: ``{old: new}`` or an ``(n, 2)`` array of pairs; ids not mentioned are kept.
                New ids must stay unique.

        Returns:
            The relabelled sequence (same label dtype when the new ids fit, else wider).

        Raises:
            ValidationError: If the new ids are not unique or not positive.
        """
        pairs = (
            np.asarray(list(mapping.items()), dtype=np.int64).reshape(-1, 2)
            if isinstance(mapping, dict)
            else np.asarray(mapping, dtype=np.int64).reshape(-1, 2)
        )
        old_ids = self.tracks[:, 0]
        new_ids = old_ids.copy()
        order = np.argsort(pairs[:, 0])
        keys, vals = pairs[order, 0], pairs[order, 1]
        if keys.size:
            pos = np.minimum(np.searchsorted(keys, old_ids), keys.size - 1)
            hit = keys[pos] == old_ids
            new_ids[hit] = vals[pos[hit]]
        if np.unique(new_ids).size != new_ids.size or (new_ids.size and new_ids.min() < 1):
            raise ValidationError(["relabel: new track ids must be unique and >= 1"], self.name)

        def remap(values: np.ndarray) -> np.ndarray:
            if keys.size == 0:
                return values
            p = np.minimum(np.searchsorted(keys, values), keys.size - 1)
            h = keys[p] == values
            return np.where(h, vals[p], values)

        table = self.tracks.copy()
        table[:, 0] = new_ids
        table[:, 3] = np.where(table[:, 3] > 0, remap(table[:, 3]), 0)
        hi = int(new_ids.max(initial=0))
        dtype = self.labels.dtype if hi <= np.iinfo(self.labels.dtype).max else _smallest_uint(hi)
        out = np.zeros(self.labels.shape, dtype=dtype)
        for t, ids in enumerate(self.frame_ids):
            out[t] = _relabel_frame(self.labels[t], ids, remap(ids), dtype)
        return TrackedSequence(labels=out, tracks=table, seg=self.seg, name=self.name)


def track_table_problems(
    tracks: np.ndarray,
    frame_ids: Sequence[np.ndarray] | None,
    n_frames: int,
    *,
    frame_name: FrameNamer | None = None,
    row_name: RowNamer | None = None,
    table_name: str = "track table",
    skip_frames: Sequence[int] = (),
) -> list[str]:
    """The CTC rules on a track table and the ids present in each frame (empty when valid).

    What :meth:`TrackedSequence.problems` checks beyond the label array itself, from the ids
    alone, so a reader that streams frames (keeping only each frame's ids) checks the same.

    Args:
        tracks: The ``(n, 4)`` table ``L B E P``.
        frame_ids: Sorted non-zero ids present in each frame, or None when the label images
            are unusable (then only the table itself is checked).
        n_frames: Number of frames.
        frame_name: Names a frame in messages.
        row_name: Names a table row in messages.
        table_name: Names the table in messages.
        skip_frames: Frames whose images are unknown (missing or unreadable files).

    Returns:
        One line per problem.
    """
    fname = frame_name or _default_frame_name
    rname = row_name or (lambda i: f"{table_name} row {i}")
    labels_ok = frame_ids is not None
    skip = skip_frames
    out: list[str] = []
    tab = np.asarray(tracks)
    if tab.ndim != 2 or tab.shape[1] != 4:
        out.append(f"{table_name} must be an (n, 4) table L B E P, got shape {tab.shape}")
        return out
    if tab.dtype.kind not in "iu":
        out.append(f"{table_name} must hold integers, got {tab.dtype}")
        return out
    tab = tab.astype(np.int64)
    row_ok = np.ones(tab.shape[0], dtype=bool)
    for i, (lbl, b, e, p) in enumerate(tab.tolist()):
        where = f"{rname(i)} ({lbl} {b} {e} {p})"
        if lbl < 1:
            out.append(f"{where}: track id must be >= 1")
            row_ok[i] = False
        if b < 0:
            out.append(f"{where}: begin frame B={b} is negative")
            row_ok[i] = False
        if e < b:
            out.append(f"{where}: end frame E={e} is before begin frame B={b}")
            row_ok[i] = False
        if labels_ok and e >= n_frames:
            out.append(
                f"{where}: end frame E={e} is beyond the last frame {n_frames - 1} "
                f"({n_frames} frames)"
            )
        if p < 0:
            out.append(f"{where}: parent P={p} is negative")
        if p == lbl and lbl >= 1:
            out.append(f"{where}: track is its own parent")
    ids, first, counts = np.unique(tab[:, 0], return_index=True, return_counts=True)
    for tid, c in zip(ids[counts > 1].tolist(), counts[counts > 1].tolist(), strict=True):
        rows = np.flatnonzero(tab[:, 0] == tid)
        names = ", ".join(rname(int(r)) for r in rows)
        out.append(f"track id {tid} is defined {c} times ({names})")
    by_id = {int(t): tab[int(f)] for t, f in zip(ids, first, strict=True)}
    for i, (lbl, b, _e, p) in enumerate(tab.tolist()):
        if p <= 0 or p == lbl:
            continue
        where = f"{rname(i)} ({lbl} {b} {_e} {p})"
        parent = by_id.get(int(p))
        if parent is None:
            out.append(f"{where}: parent {p} is not a track in {table_name}")
        elif int(parent[2]) >= b:
            out.append(
                f"{where}: parent {p} ends at frame {int(parent[2])}, not before its "
                f"daughter {lbl} begins at frame {b}"
            )

    if labels_ok:
        out.extend(_consistency_problems(frame_ids, n_frames, tab, row_ok, fname, table_name, skip))
    return out


def _consistency_problems(
    ids: Sequence[np.ndarray],
    n_frames: int,
    tab: np.ndarray,
    row_ok: np.ndarray,
    fname: FrameNamer,
    table_name: str,
    skip_frames: Sequence[int],
) -> list[str]:
    out: list[str] = []
    counts = np.asarray([i.size for i in ids], dtype=np.int64)
    p_frames = np.repeat(np.arange(n_frames, dtype=np.int64), counts)
    p_labels = np.concatenate(ids).astype(np.int64) if len(ids) else np.zeros(0, dtype=np.int64)
    good = tab[row_ok]
    good = good[np.unique(good[:, 0], return_index=True)[1]]
    b = good[:, 1]
    e = np.minimum(good[:, 2], n_frames - 1)
    lengths = np.maximum(e - b + 1, 0)
    x_labels = np.repeat(good[:, 0], lengths)
    starts = np.repeat(b - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    x_frames = np.arange(x_labels.size, dtype=np.int64) + starts
    base = int(max(p_labels.max(initial=0), x_labels.max(initial=0))) + 1
    p_keys = p_frames * base + p_labels
    x_keys = x_frames * base + x_labels
    skip = np.asarray(sorted(set(int(s) for s in skip_frames)), dtype=np.int64)

    extra = np.setdiff1d(p_keys, x_keys, assume_unique=True)
    missing = np.setdiff1d(x_keys, p_keys, assume_unique=True)
    if skip.size:
        missing = missing[~np.isin(missing // base, skip)]
    known = set(good[:, 0].tolist())
    all_ids = set(tab[:, 0].tolist())
    span = {int(r[0]): (int(r[1]), int(r[2])) for r in good}
    for lbl, frames in _group(extra % base, extra // base):
        if lbl in known:
            b0, e0 = span[lbl]
            out.append(
                f"label {lbl} is present in {_frames_text(frames, fname)}, outside its "
                f"track span B={b0}..E={e0} in {table_name}"
            )
        elif lbl not in all_ids:
            out.append(
                f"label {lbl} is present in {_frames_text(frames, fname)} but is not a "
                f"track in {table_name}"
            )
    for lbl, frames in _group(missing % base, missing // base):
        b0, e0 = span[lbl]
        out.append(
            f"track {lbl} (B={b0}, E={e0} in {table_name}) is absent from "
            f"{_frames_text(frames, fname)} (a track must be present in every frame from "
            "B to E; after a gap, continue with a new id whose parent is this track)"
        )
    return out


def _group(labels: np.ndarray, frames: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Group ``frames`` by ``labels``: ``[(label, sorted frames), ...]`` sorted by label."""
    if labels.size == 0:
        return []
    order = np.lexsort((frames, labels))
    lab, fr = labels[order], frames[order]
    cuts = np.flatnonzero(np.diff(lab) != 0) + 1
    return [
        (int(ls[0]), fs) for ls, fs in zip(np.split(lab, cuts), np.split(fr, cuts), strict=True)
    ]
