"""Pictures of classification boards: the test crops the drawn entries get wrong most.

Up to :data:`N_CROPS` test images, those the drawn entries (the top entries with kept
predictions and the classical control) misclassify most often together (from the per-sample
correctness in their reports), each shown with its true class and every drawn entry's
prediction (✓ right, ✗ wrong). Channels are shown as a colour composite when there are two or
three (first channel green, second magenta, third cyan), else the first channel in grey.
"""

from __future__ import annotations

import math
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
    plain,
    prediction_sources,
    save,
)
from cellbench.leaderboard.ranking import Leaderboard

N_CROPS = 8
_CHANNEL_RGB = ((0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 1.0))


def composite(image: np.ndarray) -> np.ndarray:
    """An RGB picture of a ``(c, y, x)`` crop (see the module docstring)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    if img.shape[0] in (2, 3):
        rgb = np.zeros((*img.shape[1:], 3), dtype=np.float32)
        for c in range(img.shape[0]):
            rgb += display_image(img[c])[..., None] * np.array(_CHANNEL_RGB[c])
        return np.clip(rgb, 0, 1)
    grey = display_image(img[0])
    return np.repeat(grey[..., None], 3, axis=2)


def hardest(entries: list[Any], sample_ids: list[str], n: int) -> list[str]:
    """The samples most drawn entries get wrong (per-sample ``classification/correct``)."""
    wrong = []
    for i, sid in enumerate(sample_ids):
        values = [
            e.report.per_sample[sid].get("classification/correct")
            for e in entries
            if sid in e.report.per_sample
        ]
        values = [v for v in values if v is not None and math.isfinite(v)]
        wrong.append((-(len(values) - sum(values)) if values else 0, i, sid))
    return [sid for _, _, sid in sorted(wrong)[:n]]


def render_pictures(
    task: Any, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
) -> tuple[list[FigureRef], list[str]]:
    """A grid of the hardest test crops with the true class and each drawn prediction."""
    store, notes = open_store(board, "pictures")
    if store is None:
        return [], notes
    ids = store.sample_ids(board.key.split)
    if not ids:
        return [], [f"pictures skipped: split {board.key.split!r} is empty"]
    drawn = [r.replicates[0] for r in board.rows[:top_k]] + [
        c.replicates[0] for c in board.controls
    ]
    samples = hardest(drawn, ids, N_CROPS)
    sources, why = prediction_sources(board, task, store, samples, top_k=top_k, base=base)
    notes += why
    if not sources:
        return [], notes
    names = store.class_names("label")
    path = "plots/picture-hardest-crops.png"

    def draw(target: Path) -> None:
        from matplotlib.figure import Figure

        ncol = min(4, len(samples))
        nrow = math.ceil(len(samples) / ncol)
        fig = Figure(figsize=(2.0 * ncol, (2.0 + 0.22 * len(sources)) * nrow + 0.5))
        for k, sid in enumerate(samples):
            ax = fig.add_subplot(nrow, ncol, k + 1)
            crop = np.asarray(store.image(sid)[...])
            ax.imshow(composite(crop), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            truth = store.label(sid)
            lines = [f"true: {plain(names[truth], 16)}"]
            for src in sources:
                pred = int(src.predict(sid).label)
                mark = "✓" if pred == truth else "✗"
                who = src.label.removeprefix("control: ")
                lines.append(f"{mark} {plain(who, 18)}: {plain(names[pred], 14)}")
            ax.set_xlabel("\n".join(lines), fontsize=FONT - 3, loc="left")
            ax.set_title(plain(sid, 20), fontsize=FONT - 2)
            if k == 0:
                add_scale_bar(ax, store.pixel_size(sid), crop.shape[-1])
        fig.suptitle("The test crops the drawn entries get wrong most", fontsize=FONT)
        fig.tight_layout()
        save(fig, target)

    figcache.draw(
        folder / path, "classification-picture", cache_inputs(board, sources, samples), draw
    )
    who = ", ".join(s.label for s in sources)
    return [
        FigureRef(
            "pictures",
            path,
            f"The {len(samples)} test crops that {who} misclassify most often, with the true "
            "class and each prediction (✓ right, ✗ wrong). Channels: first green, second "
            "magenta, third cyan.",
            f"Hardest test crops with true and predicted classes for {who}",
        )
    ], notes
