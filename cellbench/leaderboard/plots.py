"""Charts of the leaderboard pages (matplotlib's Agg canvas, PNG files), drawn from plain data.

A board gets a handful of charts, each answering one question (see
:mod:`cellbench.leaderboard.figures`, which chooses them): how the entries compare on the
headline with their intervals (:func:`forest_chart`), whether that holds in every group of a
metadata field (:func:`group_chart`), how a score falls with the IoU threshold
(:func:`curves_chart`), which errors the entries make (:func:`breakdown_chart`) and which
classes they confuse (:func:`confusion_chart`).

Every function takes plain numbers and text, so a chart is fully determined by its inputs and
can be cached by their digest (:mod:`cellbench.leaderboard.figcache`). Text is at least 10 pt
in a figure about 5.5 inches wide, readable when the page shows it 360 px wide on a phone.
Figures are built on :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state); PNGs are
written without the software tag so unchanged inputs give identical bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.leaderboard.formatting import fmt_count, fmt_tally
from cellbench.leaderboard.pictures import (
    ERROR_COLOURS,
    display_image,
    outline,
    plain,
    save,
)

FONT = 11
#: Chart width (inches at 100 dpi: 440 px, shown at ~340 px on a phone, text stays >= 9 px).
WIDTH = 4.4
#: Height per entry row (inches).
ROW = 0.5
#: Entry colours: the leader, the other entries, controls (Okabe-Ito based).
LEADER, ENTRY, CONTROL = "#d55e00", "#0072b2", "#7f7f7f"
#: Colours of series (groups, curves, error classes): colour-blind-safe Okabe-Ito palette.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")
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


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(float(x))


def _style(ax: Any) -> None:
    ax.tick_params(labelsize=FONT - 1)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def forest_chart(
    rows: Sequence[Mapping[str, Any]],
    xlabel: str,
    title: str,
    path: Path,
    *,
    whisker: str,
    unit_range: tuple[float, float] | None = None,
) -> Path:
    """One dot per entry with its interval, best at the top; controls grey, below a line.

    Args:
        rows: ``{"label", "mean", "low", "high", "role"}`` per entry in display order, ``role``
            one of ``leader``, ``entry``, ``control``. Missing bounds: dot only. A missing or
            infinite mean is written as text.
        xlabel: Axis label (the metric's name, unit and direction).
        title: Chart title.
        path: PNG to write.
        whisker: What the whiskers are (shown in the x label).
        unit_range: Axis limits to use when every value lies inside them (e.g. ``(0, 1)``).

    Returns:
        ``path``.
    """
    n = len(rows)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 1.2 + ROW * n))
    ax = fig.add_subplot(1, 1, 1)
    finite = [float(r["mean"]) for r in rows if _finite(r.get("mean"))]
    for i, r in enumerate(rows):
        colour = {"leader": LEADER, "control": CONTROL}.get(r.get("role", ""), ENTRY)
        mean = r.get("mean")
        if not _finite(mean):
            text = "missing" if mean is None or mean != mean else ("+∞" if mean > 0 else "−∞")
            ax.text(
                0.99,
                i,
                text,
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="center",
                fontsize=FONT - 1,
            )
            continue
        lo, hi = r.get("low"), r.get("high")
        if _finite(lo) and _finite(hi):
            ax.plot([lo, hi], [i, i], color=colour, linewidth=2.4, solid_capstyle="butt")
        marker = "D" if r.get("role") == "control" else "o"
        ax.plot([mean], [i], marker=marker, color=colour, markersize=7, linestyle="none")
    controls = [i for i, r in enumerate(rows) if r.get("role") == "control"]
    if controls and controls[0] > 0:
        ax.axhline(controls[0] - 0.86, color="#bbbbbb", linewidth=0.8)
    _row_labels(ax, [r["label"] for r in rows], [r.get("role", "") for r in rows])
    values = finite + [float(r[k]) for r in rows for k in ("low", "high") if _finite(r.get(k))]
    if unit_range and values and unit_range[0] <= min(values) and max(values) <= unit_range[1]:
        span = unit_range[1] - unit_range[0]
        ax.set_xlim(unit_range[0] - 0.02 * span, unit_range[1] + 0.02 * span)
    ax.set_xlabel(f"{plain(xlabel, 48)}\n{whisker}", fontsize=FONT - 1)
    ax.set_title(plain(title, 44), fontsize=FONT + 1)
    ax.grid(axis="x", alpha=0.3)
    _style(ax)
    fig.tight_layout()
    return save(fig, path)


def _row_labels(ax: Any, labels: Sequence[str], roles: Sequence[str]) -> None:
    """Entry names written above their row (the plot keeps the full width on a phone)."""
    n = len(labels)
    ax.set_yticks([])
    ax.set_ylim(n - 0.4, -0.75)
    for i, (label, role) in enumerate(zip(labels, roles, strict=True)):
        ax.text(
            0.0,
            i - 0.36,
            plain(label, 48),
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=FONT - 1,
            color="#555555" if role == "control" else "#1d2733",
            fontstyle="italic" if role == "control" else "normal",
            fontweight="bold" if role == "leader" else "normal",
        )


def group_chart(
    names: Sequence[str],
    groups: Sequence[str],
    values: Sequence[Sequence[float | None]],
    xlabel: str,
    title: str,
    path: Path,
) -> Path:
    """The headline of every entry in every group of one metadata field (a dot plot).

    Args:
        names: Entry names, top to bottom.
        groups: The field's levels (one colour each).
        values: ``values[i][j]``: entry ``i`` in group ``j`` (None when absent).
        xlabel: Axis label.
        title: Chart title.
        path: PNG to write.

    Returns:
        ``path``.
    """
    n = len(names)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 1.7 + ROW * n))
    ax = fig.add_subplot(1, 1, 1)
    for i, row in enumerate(values):
        pts = [v for v in row if _finite(v)]
        if len(pts) > 1:
            ax.plot([min(pts), max(pts)], [i, i], color="#cccccc", linewidth=2, zorder=1)
    for j, g in enumerate(groups):
        xs = [values[i][j] for i in range(n)]
        ys = [i for i in range(n) if _finite(xs[i])]
        ax.scatter(
            [xs[i] for i in ys],
            ys,
            color=PALETTE[j % len(PALETTE)],
            marker="osD^v<>p"[j % 8],
            s=46,
            label=plain(g, 24),
            zorder=2,
        )
    _row_labels(ax, names, ["control" if x.startswith("control: ") else "" for x in names])
    ax.set_xlabel(plain(xlabel, 48), fontsize=FONT - 1)
    ax.set_title(plain(title, 44), fontsize=FONT + 1)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        fontsize=FONT - 1,
        loc="lower center",
        ncol=min(3, len(groups)),
        frameon=False,
    )
    _style(ax)
    rows_legend = math.ceil(len(groups) / 3)
    fig.tight_layout(rect=(0, min(0.3, (0.22 * rows_legend + 0.12) / (1.7 + ROW * n)), 1, 1))
    return save(fig, path)


def curves_chart(
    panels: Sequence[Mapping[str, Any]],
    title: str,
    path: Path,
) -> Path:
    """Score-versus-threshold curves of the top entries, one panel per score.

    Args:
        panels: ``{"title", "thresholds", "lines": [(entry, [values])], "unit": bool}`` per
            panel; ``unit`` fixes the y axis to [0, 1].
        title: Figure title.
        path: PNG to write.

    Returns:
        ``path``.
    """
    ncol = min(2, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.5 * ncol + 0.3, 2.4 * nrow + 1.1))
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        for k, (name, ys) in enumerate(panel["lines"]):
            ax.plot(
                panel["thresholds"],
                [np.nan if v is None else v for v in ys],
                marker="o",
                markersize=3,
                color=PALETTE[k % len(PALETTE)],
                label=plain(name, 26),
            )
        ax.set_title(plain(panel["title"], 34), fontsize=FONT - 1)
        ax.set_xlabel(plain(panel.get("xlabel", "IoU threshold"), 30), fontsize=FONT - 2)
        if panel.get("unit"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _style(ax)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(2, len(labels)), fontsize=FONT - 1)
    fig.suptitle(plain(title, 56), fontsize=FONT + 1)
    fig.tight_layout(rect=(0, 0.08 + 0.03 * math.ceil(len(labels) / 2), 1, 0.95))
    return save(fig, path)


def breakdown_chart(
    names: Sequence[str],
    labels: Sequence[str],
    counts: Sequence[Sequence[float | None]],
    title: str,
    xlabel: str,
    path: Path,
) -> Path:
    """Error counts of every entry as one stacked horizontal bar each.

    Args:
        names: Entry names, top to bottom.
        labels: The error kinds (one colour each).
        counts: ``counts[i][j]``: errors of kind ``j`` made by entry ``i`` (None: unknown).
        title: Chart title.
        xlabel: Axis label (what is counted).
        path: PNG to write.

    Returns:
        ``path``.
    """
    n = len(names)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 1.9 + ROW * n))
    ax = fig.add_subplot(1, 1, 1)
    left = np.zeros(n)
    data = np.array([[0.0 if v is None else float(v) for v in row] for row in counts]).reshape(
        n, len(labels)
    )
    for j, label in enumerate(labels):
        ax.barh(
            range(n),
            data[:, j],
            left=left,
            height=0.45,
            color=PALETTE[j % len(PALETTE)],
            label=plain(label, 24),
            edgecolor="white",
            linewidth=0.5,
        )
        left += data[:, j]
    for i, total in enumerate(left):
        ax.text(total, i, f" {fmt_tally(total)}", va="center", fontsize=FONT - 2)
    _row_labels(ax, names, ["control" if x.startswith("control: ") else "" for x in names])
    ax.set_xlim(0, max(1.0, float(left.max()) * 1.18) if n else 1.0)
    ax.set_xlabel(plain(xlabel, 48), fontsize=FONT - 1)
    ax.set_title(plain(title, 44), fontsize=FONT + 1)
    handles, names_ = ax.get_legend_handles_labels()
    fig.legend(
        handles,
        names_,
        fontsize=FONT - 1,
        loc="lower center",
        ncol=min(3, len(labels)),
        frameon=False,
    )
    _style(ax)
    rows_legend = math.ceil(len(labels) / 3)
    fig.tight_layout(rect=(0, min(0.35, (0.22 * rows_legend + 0.12) / (1.9 + ROW * n)), 1, 1))
    return save(fig, path)


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
    size = min(8.0, 2.8 + 0.5 * k)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    names = (
        [plain(c, 18) for c in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    )
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=FONT - 1)
    ax.set_yticklabels(names, fontsize=FONT - 1)
    ax.set_xlabel("predicted class", fontsize=FONT - 1)
    ax.set_ylabel("true class", fontsize=FONT - 1)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    fmt_count(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=FONT - 2,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cb.set_label("fraction of the true class", fontsize=FONT - 2)
    cb.ax.tick_params(labelsize=FONT - 2)
    ax.set_title(plain(title, 50), fontsize=FONT)
    fig.tight_layout()
    return save(fig, path)


def thumbnail(image: np.ndarray, path: Path, size_px: int = 160) -> Path:
    """A small square-ish grey picture of a dataset image (first channel, middle plane)."""
    img = display_image(image)
    h, w = img.shape
    inches = size_px / 100
    from matplotlib.figure import Figure

    fig = Figure(figsize=(inches * min(1.0, w / max(h, 1)), inches * min(1.0, h / max(w, 1))))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def overlay_rgb(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    gt_classes: Mapping[int, str],
    pred_classes: Mapping[int, str],
    alpha: float = 0.45,
) -> np.ndarray:
    """The object-error overlay as an RGB float image (one lookup table per label image).

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
    edges = outline(pr2)
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
    pixel_size: Mapping[str, float] | None = None,
) -> Path:
    """Draw object errors on an image (see :func:`overlay_rgb`) with a legend; write a PNG.

    Returns:
        ``path``.
    """
    from matplotlib.patches import Patch

    from cellbench.leaderboard.pictures import add_scale_bar

    rgb = overlay_rgb(image, gt, pred, gt_classes, pred_classes)
    h, w = rgb.shape[:2]
    scale = 4.6 / max(h, w)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(3.0, w * scale), max(3.0, h * scale) + 1.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    add_scale_bar(ax, pixel_size, w)
    ax.set_title(plain(title, 50), fontsize=FONT)
    classes = list(ERROR_COLOURS)
    present = sorted(
        {*gt_classes.values(), *pred_classes.values()} & set(classes), key=classes.index
    )
    handles = [Patch(color=ERROR_COLOURS[c], label=c.replace("_", " ")) for c in present]
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=3,
            fontsize=FONT - 2,
            title="fill: ground truth, outline: prediction",
            title_fontsize=FONT - 2,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0.16 if handles else 0, 1, 1))
    return save(fig, path)
