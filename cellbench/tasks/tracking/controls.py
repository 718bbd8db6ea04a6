"""Controls of tracking boards: classical detection with nearest-neighbour linking, and perfect.

The classical reference segments every frame on its own with Otsu + watershed (the instance
segmentation control, :func:`cellbench.tasks.instance_segmentation.controls.otsu_watershed`) and
links the detections frame to frame (:func:`link_nearest`): an optimal one-to-one assignment of
centroids (Hungarian, distances in pixels) within a gate of one typical object diameter; a
detection left over near a mother that was linked on becomes her second daughter (a division:
the mother's track ends and both daughters start new tracks); any other detection starts a new
track. The result obeys every Cell Tracking Challenge rule (tracks without gaps, parents end
before their daughters begin). The perfect control submits the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control


def _centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object ids, their centroids ``(n, ndim)`` and pixel counts of a label image."""
    flat = labels.ravel()
    ids = np.unique(flat)
    ids = ids[ids > 0]
    if ids.size == 0:
        return ids, np.zeros((0, labels.ndim)), np.zeros(0)
    index = np.zeros(int(flat.max()) + 1, dtype=np.int64)
    index[ids] = np.arange(ids.size)
    keep = flat > 0
    which = index[flat[keep]]
    counts = np.bincount(which, minlength=ids.size).astype(np.float64)
    coords = np.unravel_index(np.flatnonzero(keep), labels.shape)
    cents = np.stack(
        [np.bincount(which, weights=c, minlength=ids.size) / counts for c in coords], axis=1
    )
    return ids, cents, counts


def link_nearest(frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Link per-frame detections into tracks by nearest-neighbour assignment.

    Args:
        frames: One label image per frame (labels independent between frames).

    Returns:
        ``(movie, tracks)``: the label movie ``(t, [z,] y, x)`` whose labels are track ids, and
        the CTC track table ``(n, 4)``: track id, first frame, last frame, parent (0: none).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    movie = np.zeros((len(frames), *np.shape(frames[0])), dtype=np.int32)
    tracks: dict[int, list[int]] = {}  # id -> [start, end, parent]
    prev_tracks = np.zeros(0, dtype=np.int64)
    prev_cents = np.zeros((0, movie.ndim - 1))
    next_id = 1
    for t, labels in enumerate(frames):
        labels = np.asarray(labels)
        ids, cents, counts = _centroids(labels)
        assigned = np.zeros(ids.size, dtype=np.int64)
        if ids.size and prev_tracks.size:
            nd = labels.ndim
            radius = (
                np.sqrt(np.median(counts) / np.pi)
                if nd == 2
                else np.cbrt(3 * np.median(counts) / (4 * np.pi))
            )
            gate = 2.0 * radius
            dist = cdist(cents, prev_cents)
            cost = np.where(dist <= gate, dist, 1e9)
            rows, cols = linear_sum_assignment(cost)
            ok = dist[rows, cols] <= gate
            continued: dict[int, int] = {}  # previous index -> current index
            for r, c in zip(rows[ok], cols[ok], strict=True):
                assigned[r] = prev_tracks[c]
                continued[int(c)] = int(r)
            divided: set[int] = set()
            for r in np.flatnonzero(assigned == 0):
                near = np.flatnonzero(dist[r] <= gate)
                near = [c for c in near[np.argsort(dist[r, near])] if int(c) in continued]
                near = [c for c in near if int(c) not in divided]
                if not near:
                    continue
                c = int(near[0])
                mother = int(prev_tracks[c])
                tracks[mother][1] = t - 1  # the mother ends; both daughters start here
                for daughter in (continued[c], int(r)):
                    tracks[next_id] = [t, t, mother]
                    assigned[daughter] = next_id
                    next_id += 1
                divided.add(c)
        for r in np.flatnonzero(assigned == 0):
            tracks[next_id] = [t, t, 0]
            assigned[r] = next_id
            next_id += 1
        for track in assigned:
            tracks[int(track)][1] = t
        if ids.size:
            lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
            lut[ids] = assigned
            movie[t] = lut[labels]
        prev_tracks, prev_cents = assigned, cents
    table = np.array(
        [[k, s, e, p] for k, (s, e, p) in sorted(tracks.items())], dtype=np.int64
    ).reshape(-1, 4)
    return movie, table


def _classical(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    from cellbench.tasks.instance_segmentation.controls import otsu_watershed

    out = {}
    for sid in ids:
        image = store.image(sid)  # (t, c, [z,] y, x)
        frames = [otsu_watershed(np.asarray(image[t, 0]))[0] for t in range(image.shape[0])]
        movie, tracks = link_nearest(frames)
        out[sid] = Prediction(sid, mask=movie, tracks=tracks)
    return out


def _perfect(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    return {
        sid: Prediction(
            sid, mask=np.asarray(store.labels(sid, "instances")[...]), tracks=store.tracks(sid)
        )
        for sid in ids
    }


def tracking_controls() -> list[Control]:
    """Otsu + watershed detections linked by nearest neighbours, and the ground truth."""
    return [
        Control(
            "Otsu + watershed, nearest-neighbour linking",
            "reference",
            "each frame segmented by Otsu + watershed; centroids linked one-to-one (Hungarian) "
            "within one object diameter; a leftover detection next to a linked mother starts a "
            "division",
            _classical,
        ),
        Control(
            "perfect", "perfect", "the ground-truth masks and tracks as the prediction", _perfect
        ),
    ]
