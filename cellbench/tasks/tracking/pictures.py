"""Pictures of tracking boards: tracks over frames, and lineage trees with the errors marked.

For one test sequence (where the drawn entries do worst together), each drawn entry (and the
classical control) gets one figure:

* three frames (around the first division of the ground truth, else the start, middle and
  end): the image with every result object outlined in its track's colour and the track's
  path over the previous frames;
* the ground-truth lineage tree (time to the right, one lane per track, daughters joined to
  their mother), with the divisions the result missed (✕) and the reference links it lacks
  (|) marked;
* the result's lineage tree, with its false divisions (✕) and its wrong links (|: joining cells
  the reference does not join, or a track link where the reference divides) marked.

Errors are found as the CTC matching finds them (:func:`cellbench.metrics.tracking.
match_tracking`; a result object matches a reference object when it covers more than half of
it): a division counts as found when the mother's match divides into the daughters' matches in
the same frame (the division F1 on the board allows one frame of slack, so a few divisions
marked here may count as found there); a wrong link is a result link between two matched
objects that are not linked in the reference (or linked with the other link type), a missing
link a reference link between matched objects that the result lacks.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.leaderboard import figcache
from cellbench.leaderboard.html import FigureRef
from cellbench.leaderboard.pictures import (
    FONT,
    add_scale_bar,
    cache_inputs,
    display_image,
    open_store,
    outline,
    pick_samples,
    plain,
    prediction_sources,
    save,
)
from cellbench.leaderboard.plots import file_stem
from cellbench.leaderboard.ranking import Leaderboard

MISSED, FALSE, LINK = "#d55e00", "#cc79a7", "#e69f00"
#: Track colours (Okabe-Ito without the error colours), chosen from the track id.
TRACK_COLOURS = ("#0072b2", "#009e73", "#56b4e9", "#f0e442", "#000000", "#7f7f7f", "#1b9e77")
TRAIL = 5


def track_colour(track: int) -> str:
    """A stable colour for a track id."""
    return TRACK_COLOURS[zlib.crc32(str(int(track)).encode()) % len(TRACK_COLOURS)]


def errors(gt: Any, pred: Any) -> dict[str, list[tuple[int, int]]]:
    """Division and link errors of a result, as ``(frame, label)`` points on either tree.

    Returns:
        ``missed_divisions`` and ``missing_links`` (on the reference tree: the mother's last
        detection, the link's target), ``false_divisions`` and ``wrong_links`` (on the result
        tree: links between cells the reference does not link, or of the wrong type, a track
        link where the reference has a division link or the reverse).
    """
    from cellbench.metrics.tracking import match_tracking

    match = match_tracking(gt, pred)
    gg, pg = match.gt_graph, match.pred_graph
    g2p, p2g = match.unique_gt_to_pred, match.unique_pred_to_gt
    g_div = np.flatnonzero(gg.out_degree >= 2)
    p_div = set(np.flatnonzero(pg.out_degree >= 2).tolist())
    missed, used = [], set()
    for g in g_div.tolist():
        p = int(g2p[g])
        if p >= 0 and p in p_div:
            mapped = sorted(p2g[pg.successors(p)].tolist())
            if mapped == sorted(gg.successors(g).tolist()):
                used.add(p)
                continue
        missed.append((int(gg.frames[g]), int(gg.labels[g])))
    false = [(int(pg.frames[p]), int(pg.labels[p])) for p in sorted(p_div - used)]
    n_g = max(gg.n_nodes, 1)
    gt_type = dict(
        zip((gg.sources * n_g + gg.targets).tolist(), gg.is_parent_link.tolist(), strict=True)
    )
    s, d = p2g[pg.sources], p2g[pg.targets]
    wrong = []
    mapped_codes = set()
    for i in range(pg.n_edges):
        if s[i] < 0 or d[i] < 0:
            continue
        code = int(s[i]) * n_g + int(d[i])
        mapped_codes.add(code)
        if code not in gt_type or gt_type[code] != bool(pg.is_parent_link[i]):
            t = int(pg.targets[i])
            wrong.append((int(pg.frames[t]), int(pg.labels[t])))
    missing = []
    for i in range(gg.n_edges):
        code = int(gg.sources[i]) * n_g + int(gg.targets[i])
        src, dst = int(gg.sources[i]), int(gg.targets[i])
        if code not in mapped_codes and g2p[src] >= 0 and g2p[dst] >= 0:
            missing.append((int(gg.frames[dst]), int(gg.labels[dst])))
    return {
        "missed_divisions": missed,
        "missing_links": missing,
        "false_divisions": false,
        "wrong_links": wrong,
    }


def lanes(tracks: np.ndarray) -> dict[int, int]:
    """A lane (row) per track: depth-first from the roots, daughters right after mothers."""
    table = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    children: dict[int, list[int]] = {}
    for tid, _, _, parent in table.tolist():
        children.setdefault(int(parent), []).append(int(tid))
    start_of = {int(r[0]): int(r[1]) for r in table}
    order: list[int] = []
    stack = sorted(children.get(0, []), key=lambda t: (start_of[t], t), reverse=True)
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        order.append(t)
        stack += sorted(children.get(t, []), key=lambda c: (start_of[c], c), reverse=True)
    order += [int(t) for t in table[:, 0] if int(t) not in seen]
    return {t: i for i, t in enumerate(order)}


def draw_lineage(ax: Any, tracks: np.ndarray, marks: Sequence[tuple[list, str, str]], title: str):
    """Draw a lineage tree: one horizontal line per track, mothers joined to daughters."""
    table = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    lane = lanes(table)
    end_of = {int(r[0]): int(r[2]) for r in table}
    for tid, start, end, parent in table.tolist():
        y = lane[int(tid)]
        ax.plot([start, end + 0.8], [y, y], color=track_colour(tid), linewidth=1.6)
        if parent and parent in lane:
            ax.plot(
                [end_of[parent] + 0.8, start],
                [lane[parent], y],
                color="#888888",
                linewidth=0.8,
            )
    for points, colour, marker in marks:
        xs = [f + 0.4 for f, lab in points if lab in lane]
        ys = [lane[lab] for _, lab in points if lab in lane]
        if xs:
            ax.scatter(xs, ys, color=colour, marker=marker, s=60, linewidths=2, zorder=3)
    ax.set_ylim(len(lane) - 0.5 if lane else 0.5, -0.5)
    ax.set_yticks([])
    ax.set_xlabel("frame", fontsize=FONT - 1)
    ax.set_title(plain(title, 70), fontsize=FONT)
    ax.tick_params(labelsize=FONT - 2)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def pick_frames(tracks: np.ndarray, n_frames: int) -> list[int]:
    """Three frames around the first division of the reference, else start, middle and end."""
    table = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    births = sorted(int(r[1]) for r in table if r[3] > 0)
    if births:
        d = births[0]
        frames = [max(0, d - 1), d, min(n_frames - 1, d + 1)]
    else:
        frames = [0, n_frames // 2, n_frames - 1]
    return sorted(dict.fromkeys(frames))


def track_panel(ax: Any, image: np.ndarray, labels: np.ndarray, t: int, centroids: dict) -> None:
    """One frame: the image, each object outlined in its track's colour, recent paths."""
    from matplotlib.colors import to_rgb

    grey = display_image(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    frame = labels[t]
    edge = outline(frame)
    ids = np.unique(frame[edge])
    palette = np.zeros((int(frame.max()) + 1 if frame.size else 1, 3))
    for i in ids:
        palette[int(i)] = to_rgb(track_colour(int(i)))
    rgb[edge] = palette[frame[edge]]
    ax.imshow(rgb, interpolation="nearest")
    for track, path in centroids.items():
        pts = [(f, c) for f, c in path if t - TRAIL <= f <= t]
        if len(pts) > 1 and pts[-1][0] == t:
            ys = [c[0] for _, c in pts]
            xs = [c[1] for _, c in pts]
            ax.plot(xs, ys, color=track_colour(track), linewidth=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"frame {t}", fontsize=FONT - 1)


def _centroids(labels: np.ndarray) -> dict[int, list[tuple[int, tuple[float, float]]]]:
    from cellbench.tasks.tracking.controls import _centroids as per_frame

    out: dict[int, list[tuple[int, tuple[float, float]]]] = {}
    for t in range(labels.shape[0]):
        frame = labels[t]
        while frame.ndim > 2:
            frame = frame[frame.shape[0] // 2]
        ids, cents, _ = per_frame(frame)
        for i, c in zip(ids.tolist(), cents.tolist(), strict=True):
            out.setdefault(int(i), []).append((t, (c[0], c[1])))
    return out


def sequence_figure(store: Any, sid: str, label: str, pred: Any, path: Path) -> dict[str, int]:
    """Draw one source's figure (frames, reference and result lineages); return error counts."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from cellbench.tracks import TrackedSequence

    gt_labels = np.asarray(store.labels(sid, "instances")[...])
    gt_tracks = store.tracks(sid)
    gt = TrackedSequence(labels=gt_labels, tracks=gt_tracks, name=sid)
    tracks = np.zeros((0, 4), np.int64) if pred.tracks is None else np.asarray(pred.tracks)
    res = TrackedSequence(labels=np.asarray(pred.mask), tracks=tracks, name=label)
    found = errors(gt, res)
    image = store.image(sid)
    frames = pick_frames(gt_tracks, gt_labels.shape[0])
    res_labels = np.asarray(res.labels)
    while res_labels.ndim > 3:
        res_labels = res_labels[:, res_labels.shape[1] // 2]
    cents = _centroids(res_labels)
    n_lanes = max(len(gt_tracks), len(tracks), 1)
    lineage_h = min(5.0, 1.0 + 0.09 * n_lanes)
    fig = Figure(figsize=(7.2, 2.6 + 2 * lineage_h + 0.8))
    grid = fig.add_gridspec(3, len(frames), height_ratios=[2.4, lineage_h, lineage_h])
    for j, t in enumerate(frames):
        ax = fig.add_subplot(grid[0, j])
        frame_image = np.asarray(image[t, 0])
        track_panel(ax, frame_image, res_labels, t, cents)
        if j == 0:
            add_scale_bar(ax, store.pixel_size(sid), res_labels.shape[-1])
    ax_gt = fig.add_subplot(grid[1, :])
    draw_lineage(
        ax_gt,
        gt_tracks,
        [(found["missed_divisions"], MISSED, "x"), (found["missing_links"], LINK, "|")],
        f"ground truth: {_n(found['missed_divisions'], 'division')} missed, "
        f"{_n(found['missing_links'], 'link')} missing",
    )
    ax_res = fig.add_subplot(grid[2, :], sharex=ax_gt)
    draw_lineage(
        ax_res,
        tracks,
        [(found["false_divisions"], FALSE, "x"), (found["wrong_links"], LINK, "|")],
        f"result: {_n(found['false_divisions'], 'false division')}, "
        f"{_n(found['wrong_links'], 'wrong link')}",
    )
    handles = [
        Line2D([], [], color=MISSED, marker="x", linestyle="none", label="missed division"),
        Line2D([], [], color=FALSE, marker="x", linestyle="none", label="false division"),
        Line2D([], [], color=LINK, marker="|", linestyle="none", label="missing / wrong link"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=FONT - 2, frameon=False)
    fig.suptitle(plain(f"{label} on {sid}", 80), fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    save(fig, path)
    return {k: len(v) for k, v in found.items()}


def _n(items: Sequence[Any], word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"


def render_pictures(
    task: Any, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
) -> tuple[list[FigureRef], list[str]]:
    """Track overlays and lineage trees of the top entries and the classical control."""
    store, notes = open_store(board, "pictures")
    if store is None:
        return [], notes
    ids = store.sample_ids(board.key.split)
    if not ids:
        return [], [f"pictures skipped: split {board.key.split!r} is empty"]
    drawn = [r.replicates[0] for r in board.rows[:top_k]] + [
        c.replicates[0] for c in board.controls
    ]
    samples = pick_samples(drawn, ids, board.headline, board.direction)
    sources, why = prediction_sources(board, task, store, samples, top_k=top_k, base=base)
    notes += why
    sid = samples[0]
    figures = []
    for k, src in enumerate(sources):
        path = f"plots/picture-{file_stem(sid)}-{k}-{file_stem(src.entry.entry_id)}.png"
        inputs = cache_inputs(board, [src], [sid])
        figcache.draw(
            folder / path,
            "tracking-picture",
            inputs,
            lambda p, s=src: sequence_figure(store, sid, s.label, s.predict(sid), p),
        )
        figures.append(
            FigureRef(
                "pictures",
                path,
                f"{src.label} on test sequence {sid}. Top: three frames with each result cell "
                f"outlined in its track's colour and its path over the last {TRAIL} frames. "
                "Middle: the ground-truth lineage (time to the right, one lane per track), with "
                "the divisions this result missed (✕) and the links it lacks (|). Bottom: the "
                "result's lineage, with its false divisions (✕) and wrong links (|: joining the "
                "wrong cells, or continuing a cell where the reference divides). Divisions are "
                "compared at the same frame.",
                f"Tracks and lineage trees of {src.label} on {sid}",
            )
        )
    return figures, notes
