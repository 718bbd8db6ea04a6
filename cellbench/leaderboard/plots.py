"""Static plots for the leaderboard pages (matplotlib's Agg canvas, PNG files).

Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state), so they
are safe in any process and never need a display. PNGs are written without the software tag
so that re-publishing unchanged results gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cellbench.leaderboard.formatting import direction_word, fmt_count, is_number, visible_text
from cellbench.leaderboard.ranking import Leaderboard

_BAR = "#3b6ea8"
_BAR_TOP = "#d08c2c"
#: Overlay colours per object error class (colour-blind-safe Okabe-Ito palette).
ERROR_COLOURS = {
    "correct": "#009e73",
    "missed": "#d55e00",
    "false_positive": "#cc79a7",
    "split": "#f0e442",
    "merge": "#56b4e9",
    "catastrophe": "#e69f00",
}


def plain(text: Any, max_len: int = 40) -> str:
    """User text made safe for matplotlib (no mathtext ``$``), shortened to ``max_len``."""
    s = " ".join(visible_text(text).split()).replace("$", r"\$")
    return s if len(s) <= max_len else s[: max_len - 1] + "…"


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=96, metadata={"Software": None}, bbox_inches="tight")
    return path


#: Longest stem :func:`file_stem` returns (file names stay far below the 255-byte limit).
MAX_STEM = 80


def file_stem(key: str) -> str:
    """File-name-safe stem of a metric key (``coco_ap/ap50`` -> ``coco_ap--ap50``).

    Stems longer than :data:`MAX_STEM` are cut and end with a short hash of the full key, so
    long keys (and keys that differ only past the cut) still give distinct, valid file names.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", key.replace("/", "--")).strip("-.") or "metric"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        stem = f"{stem[: MAX_STEM - 11].rstrip('-.')}-{digest}"
    return stem


def bar_chart(board: Leaderboard, key: str, path: Path) -> Path:
    """Horizontal bar chart of one metric for every entry, best at the top.

    Whiskers show the headline's bootstrap interval for the headline metric and ± one standard
    deviation over seeds for the other metrics (none for single-seed entries).

    Args:
        board: The ranked leaderboard.
        key: Metric key to plot.
        path: PNG file to write.

    Returns:
        ``path``.
    """
    rows = board.rows
    n = len(rows)
    fig = Figure(figsize=(6.4, 0.9 + 0.38 * n))
    ax = fig.add_subplot(1, 1, 1)
    means = np.array([r.metrics[key].mean if key in r.metrics else np.nan for r in rows], float)
    lo = np.zeros(n)
    hi = np.zeros(n)
    whisker = "95% interval" if key == board.headline else "± std over seeds"
    for i, r in enumerate(rows):
        s = r.metrics.get(key)
        if s is None or not is_number(s.mean):
            continue
        if key == board.headline and is_number(s.ci_low) and is_number(s.ci_high):
            lo[i] = max(0.0, s.mean - s.ci_low)
            hi[i] = max(0.0, s.ci_high - s.mean)
        elif is_number(s.std):
            lo[i] = hi[i] = s.std
    y = np.arange(n)
    heights = np.where(np.isfinite(means), means, 0.0)
    colours = [_BAR_TOP if r.rank == 1 else _BAR for r in rows]
    ax.barh(y, heights, color=colours, height=0.6)
    ax.errorbar(heights, y, xerr=np.vstack([lo, hi]), fmt="none", ecolor="black", capsize=3)
    for i in np.flatnonzero(~np.isfinite(means)):
        label = " missing" if np.isnan(means[i]) else (" +∞" if means[i] > 0 else " −∞")
        ax.text(0, y[i], label, va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels([plain(r.name) for r in rows], fontsize=8)
    ax.invert_yaxis()
    direction = board.directions.get(key, "higher")
    ax.set_title(f"{plain(key, 60)} ({direction_word(direction)})", fontsize=10)
    ax.set_xlabel(f"mean over seeds; whiskers: {whisker}", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def curves_chart(
    board: Leaderboard,
    family: str,
    series: Mapping[str, Sequence[tuple[float, str]]],
    path: Path,
    top_k: int = 5,
) -> Path:
    """Metric-versus-threshold curves (e.g. precision and recall vs IoU) for the top entries.

    Args:
        board: The ranked leaderboard.
        family: Metric name shown in the title (e.g. ``matching``).
        series: ``{base: [(threshold, key), ...]}`` of that metric (see
            :func:`cellbench.leaderboard.layout.curve_series`).
        path: PNG file to write.
        top_k: Number of best entries drawn.

    Returns:
        ``path``.
    """
    names = list(series)
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig = Figure(figsize=(3.3 * ncol, 2.8 * nrow + 0.5))
    rows = board.rows[:top_k]
    for i, base in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        points = series[base]
        xs = [t for t, _ in points]
        for r in rows:
            ys = [r.metrics[k].mean if k in r.metrics else np.nan for _, k in points]
            ax.plot(xs, ys, marker="o", markersize=3, label=plain(r.name, 28))
        ax.set_title(plain(base.split("/", 1)[-1], 40), fontsize=9)
        ax.set_xlabel("threshold", fontsize=8)
        unit = all(
            0 <= r.metrics[k].mean <= 1
            for r in rows
            for _, k in points
            if k in r.metrics and is_number(r.metrics[k].mean)
        )
        if unit:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=7)
    fig.suptitle(f"{plain(family)}: value vs threshold (top {len(rows)})", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return _save(fig, path)


def confusion_chart(
    matrix: Sequence[Sequence[float]], class_names: Sequence[str], title: str, path: Path
) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    Cells are coloured by the row-normalised rate and annotated with the count when there are
    at most 12 classes.

    Returns:
        ``path``.
    """
    counts = np.asarray(matrix, dtype=float)
    k = counts.shape[0]
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = min(9.0, 2.2 + 0.45 * k)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    names = (
        [plain(c, 18) for c in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted class", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    fmt_count(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_title(plain(title, 60), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def display_image(image: np.ndarray) -> np.ndarray:
    """2D float image in [0, 1] for display: first channel, middle plane, 1-99.8 percentile."""
    img = np.asarray(image, dtype=np.float32)
    while img.ndim > 2:
        img = img[img.shape[0] // 2] if img.ndim > 3 else img[0]
    lo, hi = np.percentile(img, (1.0, 99.8)) if img.size else (0.0, 1.0)
    return np.clip((img - lo) / max(float(hi - lo), 1e-12), 0, 1)


def _outline(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of object boundary pixels of a 2D label image (vectorised)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return edge & (lab > 0)


def overlay_rgb(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    gt_classes: Mapping[int, str],
    pred_classes: Mapping[int, str],
    alpha: float = 0.45,
) -> np.ndarray:
    """The overlay as an RGB float image (vectorised, one lookup table per label image).

    Ground-truth objects are blended with their class colour (``alpha``); predicted objects'
    boundary pixels are painted in their class colour (white when unclassified).

    Args:
        image: Input image (any shape; reduced with :func:`display_image`).
        gt: Ground-truth 2D label image.
        pred: Predicted 2D label image.
        gt_classes: Error class of each GT object id (``missed``, ``split``, ``merge``, ...).
        pred_classes: Error class of each predicted id (``false_positive``, ``split``, ...).
        alpha: Opacity of the GT fill.

    Returns:
        ``(Y, X, 3)`` float array in [0, 1].
    """
    from matplotlib.colors import to_rgb

    base = display_image(image)
    rgb = np.repeat(base[..., None], 3, axis=2)
    classes = list(ERROR_COLOURS)
    code = {c: i + 1 for i, c in enumerate(classes)}
    palette = np.array([[1.0, 1.0, 1.0]] + [to_rgb(ERROR_COLOURS[c]) for c in classes], float)

    def lut(labels: np.ndarray, mapping: Mapping[int, str]) -> np.ndarray:
        size = int(labels.max()) + 1 if labels.size else 1
        table = np.zeros(size, dtype=np.int64)
        for obj, cls in mapping.items():
            if 0 < int(obj) < size and cls in code:
                table[int(obj)] = code[cls]
        return table[labels]

    gt2 = np.asarray(gt).astype(np.int64)
    pr2 = np.asarray(pred).astype(np.int64)
    fill = lut(gt2, gt_classes)
    m = fill > 0
    rgb[m] = (1 - alpha) * rgb[m] + alpha * palette[fill[m]]
    edges = _outline(pr2)
    rgb[edges] = palette[lut(pr2, pred_classes)[edges]]
    return rgb


def overlay_chart(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    gt_classes: Mapping[int, str],
    pred_classes: Mapping[int, str],
    title: str,
    path: Path,
) -> Path:
    """Draw object errors on an image (see :func:`overlay_rgb`) with a legend; write a PNG.

    Returns:
        ``path``.
    """
    from matplotlib.patches import Patch

    rgb = overlay_rgb(image, gt, pred, gt_classes, pred_classes)
    h, w = rgb.shape[:2]
    scale = 5.0 / max(h, w)
    fig = Figure(figsize=(max(3.0, w * scale) + 1.8, max(3.0, h * scale) + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(plain(title, 60), fontsize=9)
    classes = list(ERROR_COLOURS)
    present = sorted(
        {*gt_classes.values(), *pred_classes.values()} & set(classes), key=classes.index
    )
    handles = [Patch(color=ERROR_COLOURS[c], label=c.replace("_", " ")) for c in present]
    if handles:
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=7,
            title="fill: GT, outline: prediction",
            title_fontsize=6,
        )
    fig.tight_layout()
    return _save(fig, path)
