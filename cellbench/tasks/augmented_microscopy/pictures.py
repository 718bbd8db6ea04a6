"""Pictures of augmented microscopy boards: input, target, prediction and absolute error.

For one test image (where the drawn entries do worst together) and each target channel, the
first row shows the transmitted-light input and the fluorescence target; every further row
shows one drawn entry's (or control's) prediction and its absolute error map. Target and
predictions are shown on the same contrast scale: each image normalised by its own 0.1-99.9
percentiles, exactly as the image-similarity metrics compare them, then 0 is black and 1 white.
The error maps share one colour scale (0 to the largest 99th percentile of the errors drawn),
so a brighter map means a larger error. A scale bar is drawn when the pixel size is known.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cellbench.leaderboard import figcache
from cellbench.leaderboard.html import FigureRef
from cellbench.leaderboard.pictures import (
    Panel,
    cache_inputs,
    display_image,
    middle_plane,
    open_store,
    panel_figure,
    pick_samples,
    prediction_sources,
)
from cellbench.leaderboard.plots import file_stem
from cellbench.leaderboard.ranking import Leaderboard

#: Normalisation percentiles (those of :class:`cellbench.metrics.image.ImageSimilarity`).
PERCENTILES = (0.1, 99.9)


def normalised(image: np.ndarray) -> np.ndarray:
    """A 2D plane scaled by its own percentiles (as the metric does), not clipped."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(img, PERCENTILES)
    return (img - lo) / max(float(hi - lo), 1e-12)


def render_pictures(
    task: Any, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
) -> tuple[list[FigureRef], list[str]]:
    """One figure per target channel: input, target, then prediction and error per source."""
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
    if not sources:
        return [], notes
    sid = samples[0]
    channels = store.sample(sid).target_channel_names or [
        str(i) for i in range(store.target(sid).shape[0])
    ]
    figures = []
    for c, channel in enumerate(channels):
        path = f"plots/picture-{file_stem(sid)}-{file_stem(channel)}.png"

        def draw(target_path: Path, c: int = c, channel: str = channel) -> None:
            image = middle_plane(np.asarray(store.image(sid)[0]), 2)
            target = normalised(middle_plane(np.asarray(store.target(sid)[c]), 2))
            preds = []
            for src in sources:
                pred = np.asarray(src.predict(sid).image)
                preds.append(normalised(middle_plane(pred[c], 2)))
            errors = [np.abs(p - target) for p in preds]
            top = max(float(np.percentile(e, 99)) for e in errors) if errors else 1.0
            rows = [
                [
                    Panel(display_image(image), "input"),
                    Panel(np.clip(target, 0, 1), f"target ({channel})"),
                ]
            ]
            labels = [""]
            for src, pred, err in zip(sources, preds, errors, strict=True):
                rows.append(
                    [
                        Panel(np.clip(pred, 0, 1), "prediction"),
                        Panel(
                            err,
                            f"|error|, mean {float(err.mean()):.3f}",
                            cmap="magma",
                            vmin=0.0,
                            vmax=max(top, 1e-6),
                            colorbar="absolute error",
                        ),
                    ]
                )
                labels.append(src.label)
            panel_figure(
                rows,
                target_path,
                row_labels=labels,
                pixel_size=store.pixel_size(sid),
                title=f"{sid}, {channel}",
            )

        inputs = {**cache_inputs(board, sources, [sid]), "channel": channel}
        figcache.draw(folder / path, "augmented-picture", inputs, draw)
        who = ", ".join(s.label for s in sources)
        figures.append(
            FigureRef(
                "pictures",
                path,
                f"Test image {sid}, {channel} channel. Top: the transmitted-light input and the "
                f"fluorescence target. Then, for {who}: the prediction and its absolute error "
                "(target and predictions each scaled by their own 0.1-99.9 percentiles, as the "
                "metrics compare them; one colour scale for every error map).",
                f"Input, target, predictions and error maps of {sid} ({channel}) for {who}",
            )
        )
    return figures, notes
