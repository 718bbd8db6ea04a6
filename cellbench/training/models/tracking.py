"""Cell tracking by detection then linking, and the ``tracker`` baseline.

:func:`link` turns a movie of per-frame instance label images (from any detector, or the
ground truth) into tracks that obey the Cell Tracking Challenge (CTC) rules. It walks through
the movie once; for every pair of consecutive frames ``t -> t+1`` it solves:

1. **Frame-to-frame linking**: a linear assignment (``scipy.optimize.linear_sum_assignment``)
   between the objects of ``t`` and ``t+1``, augmented with one "death" option per object of
   ``t`` and one "birth" option per object of ``t+1`` (Jaqaman et al. 2008, Nat. Methods 5:695).
   Linking ``i -> j`` costs ``d_ij / max_distance + iou_weight * (1 - IoU_ij)``, where ``d_ij``
   is the centroid distance (in ``spacing`` units) and the IoU comes from
   :func:`cellbench.metrics.matching.label_overlap`; pairs farther than ``max_distance`` that do
   not overlap cannot be linked. A link is chosen only when it beats ``death_cost +
   birth_cost``.
2. **Divisions and gap closing**: every object of ``t+1`` left unlinked is then offered, in a
   second assignment, to be (a) the second daughter of an object of ``t`` whose track
   continues into ``t+1`` (the first daughter), (b) the continuation of a track lost during
   the last ``max_gap`` frames, or (c) the start of a new track (cost ``birth_cost``).

   (a) A division is allowed when the daughter's centroid lies within ``D`` of the mother's
   and the two daughters' sizes differ by at most a factor ``division_size_ratio``; ``D`` is
   ``division_max_distance`` or, by default, twice the mother's equivalent radius (radius of
   the disc or ball of its area or volume: daughters sit about one radius from the mother's
   centre, so unrelated cells appearing nearby are not taken for daughters). It costs ``d /
   D``, so it is preferred to a birth when ``d < birth_cost * D``. The mother's track then ends at
   ``t`` and both daughters start new tracks at ``t+1`` with the mother as parent.

   (b) Reappearing after ``g`` missing frames is allowed within ``max_distance * sqrt(g + 1)``
   and costs ``d / (max_distance * sqrt(g + 1)) + gap_penalty * g``. The CTC format requires a
   track to be present in every frame from its begin to its end, so a bridged gap is written the
   way the CTC ground truth writes it: the object after the gap starts a **new track whose
   parent is the track before the gap** (a parent with a single child is a plain link in the CTC
   measures, not a division). Masks are never invented to fill the gap.

Limitations: a division is recognised when at least one daughter is linked to the mother by
step 1 (the usual case, since a daughter overlaps its mother); a mother whose two daughters
are both farther than ``max_distance`` ends and the daughters start unrelated tracks.

Write the result in the CTC layout with :func:`cellbench.tasks.tracking.ctc.write_ctc_result`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from cellbench.errors import CellbenchError, ValidationError
from cellbench.metrics.matching import label_overlap
from cellbench.training.baseline import (
    Baseline,
    BaselineConfig,
    DataSpec,
    get_baseline,
    register,
)
from cellbench.training.models.common import check_input, check_range, raise_problems


@dataclass(frozen=True)
class _Frame:
    ids: np.ndarray  # (n,) int64 object ids in the frame
    centroids: np.ndarray  # (n, nd) float64, in spacing units
    areas: np.ndarray  # (n,) int64


def _frame_objects(frame: np.ndarray, spacing: np.ndarray) -> _Frame:
    """Ids, centroids and areas of the objects of one label image (vectorised)."""
    flat = frame.reshape(-1).astype(np.int64, copy=False)
    ids, inverse = np.unique(flat, return_inverse=True)
    areas = np.bincount(inverse, minlength=len(ids))
    centroids = np.empty((len(ids), frame.ndim), dtype=np.float64)
    for axis, n in enumerate(frame.shape):
        shape = [1] * frame.ndim
        shape[axis] = n
        coord = np.broadcast_to(np.arange(n, dtype=np.float64).reshape(shape), frame.shape)
        sums = np.bincount(inverse, weights=coord.reshape(-1), minlength=len(ids))
        centroids[:, axis] = sums / np.maximum(areas, 1) * spacing[axis]
    keep = ids != 0
    return _Frame(ids[keep], centroids[keep], areas[keep].astype(np.int64))


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _iou(prev: np.ndarray, cur: np.ndarray, fa: _Frame, fb: _Frame) -> np.ndarray:
    """IoU of every object of ``prev`` with every object of ``cur``, in frame order."""
    ov = label_overlap(prev, cur)
    iou = np.zeros((len(fa.ids), len(fb.ids)))
    if len(ov.gt_ids) and len(ov.pred_ids):
        rows = np.searchsorted(fa.ids, ov.gt_ids)
        cols = np.searchsorted(fb.ids, ov.pred_ids)
        iou[np.ix_(rows, cols)] = ov.iou()
    return iou


def _assign_with_birth_death(
    cost: np.ndarray, birth_cost: float, death_cost: float
) -> list[tuple[int, int]]:
    """Augmented linear assignment: (source, target) links cheaper than death + birth."""
    n, m = cost.shape
    if n == 0 or m == 0:
        return []
    big = np.full((n + m, m + n), np.inf)
    big[:n, :m] = cost
    big[:n, m:][np.diag_indices(n)] = death_cost
    big[n:, :m][np.diag_indices(m)] = birth_cost
    big[n:, m:] = 0.0
    rows, cols = linear_sum_assignment(big)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if r < n and c < m]


@dataclass
class _Track:
    id: int
    start: int
    end: int
    parent: int
    centroid: np.ndarray  # last centroid
    closed: bool = False  # ended by a division or already given a successor across a gap


def link(
    labels: np.ndarray,
    *,
    max_distance: float = 30.0,
    iou_weight: float = 1.0,
    birth_cost: float = 1.0,
    death_cost: float = 1.0,
    max_gap: int = 2,
    gap_penalty: float = 0.2,
    divisions: bool = True,
    division_max_distance: float | None = None,
    division_size_ratio: float = 2.5,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Link per-frame instance labels into CTC-valid tracks (see the module docstring).

    Args:
        labels: ``(T, [Z,] Y, X)`` instance ids per frame (0 = background; ids need not be
            consistent between frames).
        max_distance: Largest centroid displacement per frame for a link, in ``spacing`` units.
        iou_weight: Weight of ``1 - IoU`` in the frame-to-frame linking cost.
        birth_cost: Cost of starting a track.
        death_cost: Cost of ending a track.
        max_gap: Most consecutive missing frames bridged (0 disables gap closing).
        gap_penalty: Extra cost per missing frame of a bridged gap.
        divisions: Detect divisions.
        division_max_distance: Largest mother-daughter centroid distance (default: twice the
            mother's equivalent radius).
        division_size_ratio: Largest size ratio between the two daughters.
        spacing: Physical size per spatial axis (default 1 each), for anisotropic 3D data.

    Returns:
        ``(relabelled, tracks)``: int32 ``(T, [Z,] Y, X)`` where each object carries its track
        id (1..n), and the int64 ``(n, 4)`` table ``track_id, start, end, parent`` (CTC
        ``res_track.txt`` semantics; parent 0 = none), sorted by track id.

    Raises:
        ValidationError: For a non-integer, negative or too low-dimensional input or bad
            parameters.
    """
    labels = np.asarray(labels)
    problems = []
    if labels.ndim not in (3, 4):
        problems.append(f"labels must be (T, Y, X) or (T, Z, Y, X), got shape {labels.shape}")
    if labels.dtype.kind not in "ui":
        problems.append(f"labels must have an integer dtype, got {labels.dtype}")
    elif labels.size and labels.min() < 0:
        problems.append("labels have negative ids")
    if max_distance <= 0:
        problems.append(f"max_distance {max_distance} must be positive")
    if max_gap < 0:
        problems.append(f"max_gap {max_gap} must be >= 0")
    if division_size_ratio < 1:
        problems.append(f"division_size_ratio {division_size_ratio} must be >= 1")
    nd = labels.ndim - 1
    sp = np.ones(max(nd, 0)) if not spacing else np.asarray(spacing, dtype=np.float64)
    if len(sp) != nd:
        problems.append(f"spacing {list(sp)} must have one entry per spatial axis ({nd})")
    if problems:
        raise ValidationError(problems, context="link")
    scale = float(np.prod(sp)) if nd else 1.0

    n_frames = labels.shape[0]
    frames = [_frame_objects(labels[t], sp) for t in range(n_frames)]
    tracks: list[_Track] = []
    # track id of each object, per frame, in the order of frames[t].ids
    owner: list[np.ndarray] = [np.zeros(len(f.ids), dtype=np.int64) for f in frames]

    def new_track(t: int, j: int, parent: int) -> int:
        tid = len(tracks) + 1
        tracks.append(_Track(tid, t, t, parent, frames[t].centroids[j]))
        owner[t][j] = tid
        return tid

    for j in range(len(frames[0].ids)):
        new_track(0, j, 0)

    for t in range(n_frames - 1):
        fa, fb = frames[t], frames[t + 1]
        dist = _distances(fa.centroids, fb.centroids)
        iou = _iou(labels[t], labels[t + 1], fa, fb)
        cost = dist / max_distance + iou_weight * (1.0 - iou)
        cost[(dist > max_distance) & (iou <= 0)] = np.inf
        links = _assign_with_birth_death(cost, birth_cost, death_cost)
        linked_from = {}
        for i, j in links:
            tr = tracks[owner[t][i] - 1]
            tr.end, tr.centroid = t + 1, fb.centroids[j]
            owner[t + 1][j] = tr.id
            linked_from[j] = i
        unlinked = [j for j in range(len(fb.ids)) if owner[t + 1][j] == 0]
        if not unlinked:
            continue

        # second assignment: each unlinked object of t+1 is a second daughter of a mother
        # (an object of t continued by its first daughter j1), a track reappearing after a
        # gap, or a birth
        unl = np.asarray(unlinked)
        mothers = list(linked_from.items()) if divisions else []  # (j1, i)
        lost = [tr for tr in tracks if not tr.closed and 1 <= t - tr.end <= max_gap]
        n_u, n_m, n_g = len(unlinked), len(mothers), len(lost)
        second = np.full((n_u, n_m + n_g + n_u), np.inf)
        second[:, n_m + n_g :][np.diag_indices(n_u)] = birth_cost
        if n_m:
            j1 = np.array([m[0] for m in mothers])
            mi = np.array([m[1] for m in mothers])
            d = dist[mi][:, unl].T  # (n_u, n_m)
            if division_max_distance:
                reach = np.full(n_m, float(division_max_distance))
            else:
                size = fa.areas[mi] * scale
                radius = np.sqrt(size / np.pi) if nd == 2 else np.cbrt(0.75 * size / np.pi)
                reach = 2.0 * radius
            a = fb.areas[unl][:, None].astype(np.float64)
            b = fb.areas[j1][None, :].astype(np.float64)
            ok = (d <= reach[None, :]) & (
                np.maximum(a, b) <= division_size_ratio * np.minimum(a, b)
            )
            second[:, :n_m][ok] = (d / reach[None, :])[ok]
        if n_g:
            gaps = np.array([t - tr.end for tr in lost], dtype=np.float64)
            reach = max_distance * np.sqrt(gaps + 1.0)
            d = _distances(fb.centroids[unl], np.stack([tr.centroid for tr in lost]))
            ok = d <= reach[None, :]
            gap_cost = d / reach[None, :] + gap_penalty * gaps[None, :]
            second[:, n_m : n_m + n_g][ok] = gap_cost[ok]
        rows, cols = linear_sum_assignment(second)
        for r, c in zip(rows, cols, strict=True):
            j = unlinked[r]
            if c < n_m:  # division of mother i into j1 (already linked) and j
                j1, i = mothers[c]
                mother = tracks[owner[t][i] - 1]
                mother.end, mother.closed = t, True
                new_track(t + 1, j1, mother.id)
                new_track(t + 1, j, mother.id)
            elif c < n_m + n_g:  # reappearance after a gap: new track, parent = lost track
                before = lost[c - n_m]
                before.closed = True
                new_track(t + 1, j, before.id)
            else:
                new_track(t + 1, j, 0)

    relabelled = np.zeros(labels.shape, dtype=np.int32)
    for t, f in enumerate(frames):
        if len(f.ids) == 0:
            continue
        frame = labels[t].astype(np.int64, copy=False)
        position = np.minimum(np.searchsorted(f.ids, frame), len(f.ids) - 1)
        relabelled[t] = np.where(frame > 0, owner[t][position], 0)
    table = np.array([[tr.id, tr.start, tr.end, tr.parent] for tr in tracks], dtype=np.int64)
    return relabelled, table.reshape(-1, 4)


# --------------------------------------------------------------------------- baseline
@dataclass
class TrackerConfig(BaselineConfig):
    """Hyperparameters of the ``tracker`` baseline (a detector plus :func:`link`).

    Attributes:
        detector: Registry name of an instance segmentation baseline (``embedding-unet`` or
            ``maskrcnn``).
        detector_config: That baseline's config fields.
        patch_size: Training crop; empty uses the detector's (written back after construction).
        max_distance: See :func:`link`.
        iou_weight: See :func:`link`.
        birth_cost: See :func:`link`.
        death_cost: See :func:`link`.
        max_gap: See :func:`link`.
        gap_penalty: See :func:`link`.
        divisions: See :func:`link`.
        division_max_distance: See :func:`link` (0 = twice the mother's equivalent radius).
        division_size_ratio: See :func:`link`.
        spacing: See :func:`link` (empty = 1 per axis).
    """

    detector: str = "embedding-unet"
    detector_config: dict[str, Any] = field(default_factory=dict)
    patch_size: list[int] = field(default_factory=list)
    max_distance: float = 30.0
    iou_weight: float = 1.0
    birth_cost: float = 1.0
    death_cost: float = 1.0
    max_gap: int = 2
    gap_penalty: float = 0.2
    divisions: bool = True
    division_max_distance: float = 0.0
    division_size_ratio: float = 2.5
    spacing: list[float] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out: list[str] = []
        if not isinstance(self.detector_config, dict):
            out.append("detector_config must be a mapping of the detector's config fields")
        check_range(out, "max_distance", self.max_distance, 1e-9)
        for name in ("iou_weight", "birth_cost", "death_cost", "gap_penalty"):
            check_range(out, name, getattr(self, name), 0.0)
        check_range(out, "max_gap", self.max_gap, 0)
        check_range(out, "division_max_distance", self.division_max_distance, 0.0)
        check_range(out, "division_size_ratio", self.division_size_ratio, 1.0)
        return out

    def link_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`link`."""
        return {
            "max_distance": self.max_distance,
            "iou_weight": self.iou_weight,
            "birth_cost": self.birth_cost,
            "death_cost": self.death_cost,
            "max_gap": self.max_gap,
            "gap_penalty": self.gap_penalty,
            "divisions": self.divisions,
            "division_max_distance": self.division_max_distance or None,
            "division_size_ratio": self.division_size_ratio,
            "spacing": list(self.spacing) or None,
        }


@register
class Tracker(Baseline):
    """Detect-then-link tracker (``tracker``) wrapping an instance segmentation baseline.

    ``loss`` trains the detector on single frames (batches with ``image`` ``(B, C, ...)`` and
    ``instances`` ``(B, ...)``). ``predict`` takes a whole sequence ``(T, C, [Z,] Y, X)``, runs
    the detector frame by frame and links the label images with :func:`link`; it returns
    ``mask`` (int32 ``(T, [Z,] Y, X)``, one id per track) and ``tracks`` (int64 ``(n, 4)``).
    """

    name = "tracker"
    tasks = ("tracking",)
    config_class = TrackerConfig
    sample_mode = "patch"

    def __init__(self, config: TrackerConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: TrackerConfig = config
        raise_problems(config.problems(), "tracker config")
        cls = get_baseline(config.detector)
        if "instance-segmentation" not in cls.tasks:
            raise CellbenchError(
                f"tracker detector {config.detector!r} is not an instance segmentation baseline"
            )
        detector_fields = dict(config.detector_config)
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        if config.patch_size and "patch_size" in names and "patch_size" not in detector_fields:
            detector_fields["patch_size"] = list(config.patch_size)
        detector_config = cls.config_class.from_dict(detector_fields)
        self.detector = cls(
            detector_config, dataclasses.replace(spec, task="instance-segmentation")
        )
        # the detector resolves defaults and records loaded weights in its config: keep both
        config.detector_config = self.detector.config.to_dict()
        config.patch_size = list(getattr(self.detector.config, "patch_size", config.patch_size))

    def forward(self, image: torch.Tensor) -> Any:
        """The detector's forward pass on frames."""
        return self.detector(image)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The detector's loss on a batch of single frames."""
        return self.detector.loss(batch)

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Track the cells of one sequence ``(T, C, [Z,] Y, X)``."""
        check_input(image, self.spec, self.name, leading="T")
        frames = [self.detector.predict(image[t : t + 1])["mask"] for t in range(image.shape[0])]
        stacked = np.stack([np.asarray(f) for f in frames]).astype(np.int64, copy=False)
        relabelled, tracks = link(stacked, **self.config.link_params())
        return {"mask": relabelled, "tracks": tracks}
