"""Pictures of semantic segmentation boards: class overlays with the errors marked.

One test image (where the drawn entries do worst together) is shown for every drawn entry and
for the classical control: the first row holds the image and the ground-truth classes; each
further row holds one prediction's classes over the image and its errors, coloured by kind:
foreground missed (a true class predicted as background), false foreground (background
predicted as a class) and wrong class (one class predicted as another). A scale bar is drawn
when the pixel size is known.
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

#: Class colours (class 1, 2, ...; background is not coloured). Okabe-Ito blue, green, ...
CLASS_COLOURS = ("#0072b2", "#009e73", "#cc79a7", "#56b4e9", "#e69f00", "#f0e442", "#000000")
#: Error colours: missed foreground, false foreground, wrong class.
MISSED, FALSE, WRONG_CLASS = "#d55e00", "#f0e442", "#cc79a7"


def _rgb(hex_colour: str) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(hex_colour))


def class_overlay(image: np.ndarray, classes: np.ndarray, background: int, alpha: float = 0.5):
    """The image in grey with every non-background class tinted in its colour."""
    grey = display_image(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for c in np.unique(classes):
        if int(c) == background:
            continue
        m = classes == c
        colour = _rgb(CLASS_COLOURS[(int(c) - 1) % len(CLASS_COLOURS)])
        rgb[m] = (1 - alpha) * rgb[m] + alpha * colour
    return rgb


def error_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, background: int):
    """The image in grey (dimmed) with wrong pixels coloured by kind; and the counts."""
    grey = 0.6 * display_image(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    missed = (truth != background) & (pred == background)
    false = (truth == background) & (pred != background)
    wrong = (truth != background) & (pred != background) & (truth != pred)
    for mask, colour in ((missed, MISSED), (false, FALSE), (wrong, WRONG_CLASS)):
        rgb[mask] = _rgb(colour)
    return rgb, {
        "missed": int(missed.sum()),
        "false": int(false.sum()),
        "wrong": int(wrong.sum()),
    }


def render_pictures(
    task: Any, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
) -> tuple[list[FigureRef], list[str]]:
    """Class and error overlays of the top entries and the classical control on one image."""
    from cellbench.tasks.semantic_segmentation.controls import background_index
    from cellbench.tasks.semantic_segmentation.task import BACKGROUND_NAMES

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
    names = store.class_names("semantic")
    bg = background_index(store, BACKGROUND_NAMES)
    path = f"plots/picture-{file_stem(sid)}.png"

    def draw(target: Path) -> None:
        image = middle_plane(np.asarray(store.image(sid)[...]), 3)
        truth = middle_plane(np.asarray(store.labels(sid, "semantic")[...]), 2)
        rows = [
            [
                Panel(display_image(image), "image"),
                Panel(class_overlay(image, truth, bg), "ground truth"),
            ]
        ]
        labels = [""]
        for src in sources:
            pred = middle_plane(np.asarray(src.predict(sid).mask), 2)
            err, n = error_overlay(image, truth, pred, bg)
            rows.append(
                [
                    Panel(class_overlay(image, pred, bg), "predicted classes"),
                    Panel(err, f"errors: {n['missed'] + n['false'] + n['wrong']:,} px"),
                ]
            )
            labels.append(src.label)
        legend = [
            (CLASS_COLOURS[(i - 1) % len(CLASS_COLOURS)], name)
            for i, name in enumerate(names)
            if i != bg
        ]
        legend += [
            (MISSED, "missed foreground"),
            (FALSE, "false foreground"),
            (WRONG_CLASS, "wrong class"),
        ]
        panel_figure(
            rows,
            target,
            row_labels=labels,
            pixel_size=store.pixel_size(sid),
            legend=legend,
            title=f"{sid}: classes and errors",
        )

    figcache.draw(folder / path, "semantic-picture", cache_inputs(board, sources, [sid]), draw)
    who = ", ".join(s.label for s in sources)
    caption = (
        f"Test image {sid}, where the drawn entries do worst together. Top: the image and its "
        f"true classes. Then, for {who}: the predicted classes over the image, and the wrong "
        "pixels (orange: a cell predicted as background; yellow: background predicted as a "
        "class; pink: the wrong class). Classes: "
        + ", ".join(n for i, n in enumerate(names) if i != bg)
        + "."
    )
    return [
        FigureRef("pictures", path, caption, f"Class and error overlays on {sid} for {who}")
    ], notes
