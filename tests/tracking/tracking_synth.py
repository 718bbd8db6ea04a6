"""Deterministic synthetic tracked sequences for the tracking tests and benchmark.

``simulate`` moves disc (2D) or ball (3D) cells with divisions, appearances and disappearances and
returns a valid CTC ground truth. ``perturb`` turns it into a plausible tracker result with the
usual errors (missed, extra, merged and split objects, identity swaps, broken links, missed and
shifted divisions, re-linked gaps, relabelled ids), built as node links and converted to CTC by
``TrackedSequence.from_links``. Everything depends only on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellbench.metrics.matching import present_ids
from cellbench.tracks import SegAnnotation, TrackedSequence


@dataclass
class _Cell:
    uid: int
    pos: np.ndarray
    vel: np.ndarray
    radius: float
    target_radius: float


def _render(shape: tuple[int, ...], cells: list[_Cell]) -> np.ndarray:
    """Draw cells as discs/balls; each pixel goes to the nearest centre within its radius."""
    out = np.zeros(shape, dtype=np.uint16)
    best = np.full(shape, np.inf)
    for c in cells:
        lo = [max(int(np.floor(p - c.radius)), 0) for p in c.pos]
        hi = [min(int(np.ceil(p + c.radius)) + 1, n) for p, n in zip(c.pos, shape, strict=True)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        grids = np.meshgrid(
            *[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij", sparse=True
        )
        d2 = sum((g - p) ** 2 for g, p in zip(grids, c.pos, strict=True))
        d2n = d2 / c.radius**2
        win = (d2 <= c.radius**2) & (d2n < best[sl])
        out[sl][win] = c.uid
        best[sl][win] = d2n[win]
    return out


def simulate(
    n_frames: int = 8,
    shape: tuple[int, ...] = (48, 48),
    n_cells: int = 6,
    n_divisions: int = 2,
    n_appear: int = 1,
    n_disappear: int = 1,
    radius: float = 4.0,
    speed: float = 1.0,
    seed: int = 0,
    name: str = "01",
    seg_every: int = 2,
) -> TrackedSequence:
    """Simulate a ground-truth sequence (valid CTC) of moving cells.

    Args:
        n_frames: Number of frames.
        shape: Spatial shape, ``(Y, X)`` or ``(Z, Y, X)``.
        n_cells: Cells at frame 0.
        n_divisions: Divisions (each parent ends, two daughters begin in the next frame).
        n_appear: Cells appearing (new track without parent) after frame 0.
        n_disappear: Cells disappearing (track ends without daughters) before the last frame.
        radius: Cell radius in pixels.
        speed: Typical displacement per frame in pixels.
        seed: Random seed.
        name: Sequence name.
        seg_every: SEG annotations (full frames) every this many frames, from frame 0.

    Returns:
        The ground truth with sparse SEG annotations.
    """
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    lo = np.full(ndim, radius + 1.0)
    hi = np.asarray(shape, dtype=float) - radius - 2.0
    min_dist = 2.0 * radius + 1.0
    next_uid = 1
    cells: list[_Cell] = []
    tracks: dict[int, list[int]] = {}

    def free_spot(existing: list[_Cell]) -> np.ndarray | None:
        for _ in range(200):
            p = lo + rng.random(ndim) * (hi - lo)
            if all(np.linalg.norm(p - c.pos) >= min_dist for c in existing):
                return p
        return None

    def new_cell(pos: np.ndarray, r: float, parent: int, t: int) -> _Cell:
        nonlocal next_uid
        vel = rng.normal(0.0, speed, ndim)
        c = _Cell(next_uid, pos, vel, r, radius)
        tracks[next_uid] = [next_uid, t, t, parent]
        next_uid += 1
        return c

    for _ in range(n_cells):
        p = free_spot(cells)
        if p is not None:
            cells.append(new_cell(p, radius, 0, 0))
    div_frames = sorted(rng.integers(1, max(n_frames - 1, 2), size=n_divisions).tolist())
    app_frames = sorted(rng.integers(1, max(n_frames, 2), size=n_appear).tolist())
    dis_frames = sorted(rng.integers(1, max(n_frames - 1, 2), size=n_disappear).tolist())
    frames = np.zeros((n_frames, *shape), dtype=np.uint16)
    for t in range(n_frames):
        if t > 0:
            # Divisions: the parent's last frame is t - 1, the daughters begin at t.
            for _ in range(div_frames.count(t)):
                if not cells:
                    break
                parent = cells[int(rng.integers(len(cells)))]
                axis = rng.normal(size=ndim)
                axis /= np.linalg.norm(axis)
                cells.remove(parent)
                for sign in (1.0, -1.0):
                    pos = np.clip(parent.pos + sign * 0.55 * radius * axis, lo, hi)
                    cells.append(new_cell(pos, 0.75 * radius, parent.uid, t))
            for _ in range(dis_frames.count(t)):
                if len(cells) > 1:
                    cells.pop(int(rng.integers(len(cells))))
            for _ in range(app_frames.count(t)):
                p = free_spot(cells)
                if p is not None:
                    cells.append(new_cell(p, radius, 0, t))
            # Motion with a soft repulsion and reflection at the borders.
            if cells:
                pos = np.stack([c.pos for c in cells])
                vel = np.stack([c.vel for c in cells])
                vel = 0.7 * vel + rng.normal(0.0, speed * 0.5, vel.shape)
                new = pos + np.clip(vel, -0.4 * radius, 0.4 * radius)
                diff = new[:, None, :] - pos[None, :, :]
                dist = np.linalg.norm(diff, axis=2)
                np.fill_diagonal(dist, np.inf)
                close = (dist < 0.9 * min_dist) & (dist > 1e-6)
                push = np.where(close[..., None], diff / np.maximum(dist, 1e-6)[..., None], 0.0)
                new = new + 0.5 * push.sum(axis=1)
                bounce = (new < lo) | (new > hi)
                vel[bounce] *= -1
                new = np.clip(new, lo, hi)
                for i, c in enumerate(cells):
                    c.pos, c.vel = new[i], vel[i]
                    c.radius = min(c.target_radius, c.radius + 0.15 * radius)
        frame = _render(shape, cells)
        present = set(np.unique(frame).tolist()) - {0}
        for c in list(cells):
            if c.uid not in present:  # fully hidden (rare): the cell leaves here
                cells.remove(c)
        frames[t] = frame
        for c in cells:
            tracks[c.uid][2] = t
    table = np.asarray([tracks[u] for u in sorted(tracks)], dtype=np.int64).reshape(-1, 4)
    # Drop tracks that never showed up (hidden at birth) and re-link their daughters.
    seen = {u for t in range(n_frames) for u in np.unique(frames[t]).tolist()} - {0}
    table = table[np.isin(table[:, 0], list(seen))]
    table[~np.isin(table[:, 3], table[:, 0]), 3] = 0
    # Begin/end from where each track is actually visible.
    pairs = [(t, u) for t in range(n_frames) for u in np.unique(frames[t]).tolist() if u]
    for row in table:
        present = [t for t, u in pairs if u == row[0]]
        row[1], row[2] = present[0], present[-1]
    seg = tuple(SegAnnotation(t, frames[t].copy()) for t in range(0, n_frames, seg_every))
    return TrackedSequence(labels=frames, tracks=table, seg=seg, name=name)


def _centroids(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids present in a frame and their centroids (``(n, ndim)``)."""
    flat = frame.ravel()
    ids = present_ids(frame)
    if ids.size == 0:
        return ids, np.zeros((0, frame.ndim))
    idx = np.searchsorted(ids, flat)
    fg = flat != 0
    n = np.bincount(idx[fg], minlength=ids.size)
    coords = np.indices(frame.shape).reshape(frame.ndim, -1)[:, fg]
    cents = np.stack(
        [np.bincount(idx[fg], weights=c, minlength=ids.size) / n for c in coords], axis=1
    )
    return ids, cents


@dataclass
class PerturbCounts:
    """How many of each perturbation ``perturb`` applied."""

    fn: int = 0
    fp: int = 0
    merge: int = 0
    split: int = 0
    swap: int = 0
    drop_link: int = 0
    miss_division: int = 0
    parent_link: int = 0
    gap_bridge: int = 0


def perturb(
    gt: TrackedSequence,
    seed: int = 0,
    p_fn: float = 0.03,
    p_fp: float = 0.03,
    p_merge: float = 0.02,
    p_split: float = 0.02,
    p_swap: float = 0.02,
    p_drop_link: float = 0.02,
    p_miss_division: float = 0.3,
    p_parent_link: float = 0.02,
    max_id: int | None = None,
    merges: bool = True,
) -> tuple[TrackedSequence, PerturbCounts]:
    """Make a plausible tracking result from a ground truth.

    Args:
        gt: The ground truth.
        seed: Random seed.
        p_fn: Probability to delete a detection (sometimes bridging its track over the gap).
        p_fp: Expected extra objects per frame (as a fraction of the detections).
        p_merge: Probability that a detection swallows a neighbour.
        p_split: Probability to cut a detection in two.
        p_swap: Probability per frame and track link to swap identities with a neighbour.
        p_drop_link: Probability to delete a track link.
        p_miss_division: Probability to miss a division (one daughter continues the parent).
        p_parent_link: Probability to turn a track link into a parent link (new id).
        max_id: If given, relabel result tracks with random unique ids up to this value.
        merges: Whether merges are allowed (traccuracy's division metrics refuse them).

    Returns:
        The result sequence (valid CTC) and the perturbation counts.
    """
    rng = np.random.default_rng(seed)
    counts = PerturbCounts()
    lab = gt.labels.astype(np.int64).copy()
    g = gt.graph()
    links = [list(r) for r in g.links().tolist()]
    next_id = int(lab.max(initial=0)) + 1
    n_frames = gt.n_frames
    ndim = lab.ndim - 1

    def drop_links_of(t: int, lbl: int) -> None:
        links[:] = [
            k for k in links if not ((k[0] == t and k[1] == lbl) or (k[2] == t and k[3] == lbl))
        ]

    # Missed detections.
    for t in range(n_frames):
        for lbl in present_ids(lab[t]).tolist():
            if lbl == 0 or rng.random() >= p_fn:
                continue
            preds = [k for k in links if k[2] == t and k[3] == lbl]
            succs = [k for k in links if k[0] == t and k[1] == lbl]
            lab[t][lab[t] == lbl] = 0
            drop_links_of(t, lbl)
            counts.fn += 1
            if len(preds) == 1 and len(succs) == 1 and rng.random() < 0.5:
                p, s = preds[0], succs[0]
                out = [k for k in links if k[0] == p[0] and k[1] == p[1]]
                if not out:
                    links.append([p[0], p[1], s[2], s[3], 0])
                    counts.gap_bridge += 1
    # Merges: a detection swallows its nearest neighbour in the same frame.
    if merges:
        for t in range(n_frames):
            ids, cents = _centroids(lab[t])
            alive = np.ones(ids.size, dtype=bool)
            for i in range(ids.size):
                if not alive[i] or rng.random() >= p_merge:
                    continue
                d = np.linalg.norm(cents - cents[i], axis=1)
                d[~alive] = np.inf
                d[i] = np.inf
                j = int(np.argmin(d))
                if not np.isfinite(d[j]):
                    continue
                lab[t][lab[t] == ids[j]] = ids[i]
                alive[j] = False
                drop_links_of(t, int(ids[j]))
                counts.merge += 1
    # Splits: cut a detection along its first axis at the centroid.
    for t in range(n_frames):
        for lbl in present_ids(lab[t]).tolist():
            if lbl == 0 or rng.random() >= p_split:
                continue
            coords = np.argwhere(lab[t] == lbl)
            c = coords.mean(axis=0)
            axis = int(rng.integers(ndim))
            cut = coords[coords[:, axis] < c[axis] + rng.normal(0, 1.0)]
            if 0 < len(cut) < len(coords):
                lab[t][tuple(cut.T)] = next_id
                next_id += 1
                counts.split += 1
    # Extra objects: small blobs in the background, sometimes lasting a few frames.
    r = max(2, round((np.count_nonzero(gt.labels[0]) / max(len(gt.frame_ids[0]), 1)) ** 0.5 / 3))
    r = max(1, min(r, min(lab.shape[1:]) // 3))
    for t in range(n_frames):
        n_extra = rng.poisson(p_fp * max(len(gt.frame_ids[t]), 1))
        for _ in range(n_extra):
            for _try in range(20):
                p = [int(rng.integers(r, n - r)) for n in lab.shape[1:]]
                sl = tuple(slice(q - r, q + r) for q in p)
                if not lab[t][sl].any():
                    break
            else:
                continue
            length = int(rng.integers(1, 4))
            prev = None
            for dt in range(length):
                if t + dt >= n_frames or lab[t + dt][sl].any():
                    break
                lab[t + dt][sl] = next_id
                if prev is not None:
                    links.append([t + dt - 1, prev, t + dt, next_id, 0])
                prev = next_id
                next_id += 1
            counts.fp += 1
    # Drop detections that vanished entirely from the link list.
    present = {(t, i) for t in range(n_frames) for i in present_ids(lab[t]).tolist()}
    links = [k for k in links if (k[0], k[1]) in present and (k[2], k[3]) in present]
    # Link errors.
    out_deg: dict[tuple[int, int], int] = {}
    for k in links:
        out_deg[(k[0], k[1])] = out_deg.get((k[0], k[1]), 0) + 1
    dividing = {src for src, d in out_deg.items() if d >= 2}
    new_links = []
    missed: dict[tuple[int, int], int] = {}
    for k in links:
        src = (k[0], k[1])
        if src in dividing:
            if src not in missed and rng.random() < p_miss_division:
                # Drop this daughter link; the other daughter either continues the parent's
                # track (track link, flag 0) or stays its single daughter (parent link, flag 1).
                counts.miss_division += 1
                out_deg[src] -= 1
                missed[src] = int(rng.random() < 0.5)
                continue
            new_links.append([*k[:4], missed.get(src, 1)])
            continue
        u = rng.random()
        if u < p_drop_link:
            counts.drop_link += 1
            out_deg[src] -= 1
            continue
        if u < p_drop_link + p_parent_link and k[2] == k[0] + 1:
            new_links.append([*k[:4], 1])
            counts.parent_link += 1
            continue
        new_links.append([*k[:4], 0])
    links = new_links
    # Identity swaps between two continuing tracks in the same frame pair.
    for t in range(n_frames - 1):
        cont = [i for i, k in enumerate(links) if k[0] == t and k[2] == t + 1]
        cont = [i for i in cont if out_deg.get((links[i][0], links[i][1]), 0) == 1]
        rng.shuffle(cont)
        for a, b in zip(cont[0::2], cont[1::2], strict=False):
            if rng.random() < p_swap:
                links[a][3], links[b][3] = links[b][3], links[a][3]
                counts.swap += 1
    arr = np.asarray(links, dtype=np.int64).reshape(-1, 5)
    res = TrackedSequence.from_links(lab, arr, name=gt.name)
    if max_id is not None and res.tracks.shape[0]:
        n = res.tracks.shape[0]
        new = rng.choice(np.arange(1, max_id + 1), size=n, replace=False)
        res = res.relabel(np.stack([res.tracks[:, 0], new], axis=1))
    return res, counts


def drop_mother_last_detection(
    seq: TrackedSequence, seed: int = 0, p: float = 0.7
) -> TrackedSequence:
    """Delete the last detection of dividing mothers: the parent link then skips a frame.

    Each mother whose track is longer than one frame loses its last detection with probability
    ``p``; its track ends a frame earlier, so its daughters begin two frames after it (a gap,
    valid CTC). The tracker "missed the mother just before it divided".
    """
    rng = np.random.default_rng(seed)
    lab = seq.labels.copy()
    tab = np.asarray(seq.tracks).copy()
    parents, cnt = np.unique(tab[tab[:, 3] > 0, 3], return_counts=True)
    for m in parents[cnt >= 2].tolist():
        row = int(np.flatnonzero(tab[:, 0] == m)[0])
        b, e = int(tab[row, 1]), int(tab[row, 2])
        if e > b and rng.random() < p:
            lab[e][lab[e] == m] = 0
            tab[row, 2] = e - 1
    return TrackedSequence(lab, tab, seg=seq.seg, name=seq.name)
