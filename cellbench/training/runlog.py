"""Per-epoch metrics of a run (``metrics.jsonl``, ``metrics.csv``) and its plots.

``metrics.jsonl`` holds one JSON object per epoch and ``metrics.csv`` the same records with the
union of all columns; both are rewritten (atomically) after every epoch, and a resumed run keeps
the records of the epochs before the interruption. ``curves.png`` shows the training loss, the
validation loss (if computed) and the validation headline metric per epoch;
``confusion_matrix.png`` (classification) is the validation confusion matrix of the best
epoch, with class names.

Record keys: ``epoch`` (1-based), ``step`` (optimiser steps so far), ``lr`` (learning rate of
the epoch's last step), ``train_loss`` (mean over the epoch's steps and all ranks),
``train/<component>`` (the baseline's named loss parts, this rank), ``images_per_s``,
``epoch_time_s``, and on validation epochs ``val_loss`` and ``val/<metric>`` (every value of
the task's score report), then ``best_epoch`` so far.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.training.checkpoint import write_text

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion_matrix.png"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` (empty if none)."""
    path = Path(run_dir) / METRICS_JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_metrics(run_dir: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` and ``metrics.csv`` from all records (atomically)."""
    run_dir = Path(run_dir)
    lines = [json.dumps({k: _json_safe(v) for k, v in r.items()}) for r in records]
    write_text("\n".join(lines) + ("\n" if lines else ""), run_dir / METRICS_JSONL)
    columns: list[str] = []
    for r in records:
        columns.extend(k for k in r if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if r.get(k) is None else _json_safe(r.get(k)) for k in columns})
    write_text(buf.getvalue(), run_dir / METRICS_CSV)


def plot_curves(
    records: Sequence[dict[str, Any]], path: str | Path, headline: str | None = None
) -> Path:
    """Training loss, validation loss and validation headline metric per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    key = f"val/{headline}" if headline else None
    has_metric = key is not None and any(r.get(key) is not None for r in records)
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(10 if has_metric else 5, 3.6))
    ax_loss = axes[0] if has_metric else axes
    ax_loss.plot(epochs, [r.get("train_loss") for r in records], marker="o", label="train loss")
    if any(r.get("val_loss") is not None for r in records):
        pts = [(r["epoch"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        ax_loss.plot(*zip(*pts, strict=True), marker="s", label="val loss")
    from matplotlib.ticker import MaxNLocator

    for ax in axes if has_metric else [axes]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    if has_metric:
        pts = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        axes[1].plot(*zip(*pts, strict=True), marker="o", color="tab:green")
        axes[1].set_xlabel("epoch")
        family, _, value = headline.partition("/")
        axes[1].set_ylabel(f"validation {value or family}")
        axes[1].set_title(f"{family} (headline metric)", fontsize=10)
        axes[1].grid(alpha=0.3)
    return _save_figure(fig, path)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``m[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    ok = (y_true >= 0) & (y_true < n_classes) & (y_pred >= 0) & (y_pred < n_classes)
    flat = y_true[ok] * n_classes + y_pred[ok]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_confusion(
    matrix: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Heatmap of a confusion matrix (rows: true class, normalised per row) with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    color="white" if frac[i, j] > 0.5 else "black",
                    fontsize=8,
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save_figure(fig, path)
