"""Drawing helpers for the per-task pictures of leaderboard pages (images, overlays, scale bars).

A task draws its pictures in its own package (``cellbench/tasks/<task>/pictures.py`` or
``overlays.py``) behind :meth:`cellbench.tasks.base.Task.board_pictures`; this module holds what
they share: choosing the samples (the same for every entry), finding each entry's predictions
(kept predictions, or the controls recomputed on those samples), turning intensities into
displayable images, a scale bar when the pixel size is known, panel figures with captions
written for a biologist, and a figure cache keyed by content (:mod:`.figcache`).

Every picture is a PNG written with matplotlib's Agg canvas (no display, no ``pyplot`` state).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellbench.errors import CellbenchError
from cellbench.leaderboard.entry import LeaderboardEntry
from cellbench.leaderboard.ranking import Leaderboard

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Overlay colours per object error class (colour-blind-safe Okabe-Ito palette).
ERROR_COLOURS = {
    "correct": "#009e73",
    "missed": "#d55e00",
    "false_positive": "#cc79a7",
    "split": "#f0e442",
    "merge": "#56b4e9",
    "catastrophe": "#e69f00",
}
#: Colour of correct pixels/objects and of errors in two-colour overlays.
CORRECT, WRONG = "#009e73", "#d55e00"
#: Base font size of pictures (readable when a picture is shown 360 px wide on a phone).
FONT = 11


def plain(text: Any, max_len: int = 40) -> str:
    """User text made safe for matplotlib (no mathtext ``$``), shortened to ``max_len``."""
    from cellbench.leaderboard.formatting import visible_text

    s = " ".join(visible_text(text).split()).replace("$", r"\$")
    return s if len(s) <= max_len else s[: max_len - 1] + "…"


def wrap(text: Any, width: int = 22, lines: int = 3) -> str:
    """User text on at most ``lines`` lines of ``width`` characters (for panel labels)."""
    import textwrap

    out = textwrap.wrap(plain(text, width * lines), width) or [""]
    return "\n".join(out[:lines])


def save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write a figure as PNG without the software tag (identical bytes for identical input)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return path


def display_image(
    image: np.ndarray, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """2D float image in [0, 1] for display: first channel, middle plane, 1-99.8 percentile.

    Args:
        image: Any array; leading axes are reduced (middle plane of 3D, first channel).
        lo: Intensity shown black (default: the 1st percentile).
        hi: Intensity shown white (default: the 99.8th percentile).
    """
    img = reduce_to_2d(image).astype(np.float32)
    if lo is None or hi is None:
        p_lo, p_hi = np.percentile(img, (1.0, 99.8)) if img.size else (0.0, 1.0)
        lo = p_lo if lo is None else lo
        hi = p_hi if hi is None else hi
    return np.clip((img - lo) / max(float(hi - lo), 1e-12), 0, 1)


def reduce_to_2d(image: np.ndarray) -> np.ndarray:
    """A 2D plane of an image: the first channel of ``(c, y, x)``, the middle plane of 3D."""
    img = np.asarray(image)
    while img.ndim > 2:
        img = img[img.shape[0] // 2] if img.ndim > 3 else img[0]
    return img


def middle_plane(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drop leading axes (the middle index of each) until ``arr`` has ``ndim`` axes."""
    while arr.ndim > ndim:
        arr = arr[arr.shape[0] // 2]
    return arr


def outline(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of object boundary pixels of a 2D label image (vectorised)."""
    lab = np.asarray(labels)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    return edge & (lab > 0)


def nice_length(target: float) -> float:
    """The 1-2-5 number closest below ``target`` (scale bar lengths)."""
    if not target > 0:
        return 0.0
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**exp <= target:
            return float(m * 10**exp)
    return float(10**exp)


def add_scale_bar(ax: Any, pixel_size: Mapping[str, float] | None, width_px: int) -> str:
    """Draw a scale bar in the lower right when the x pixel size (µm) is known.

    Returns:
        The bar's label (``"10 µm"``), or empty when the pixel size is unknown.
    """
    from matplotlib.patches import Rectangle

    size = float((pixel_size or {}).get("x") or 0.0)
    if not size > 0 or width_px < 8:
        return ""
    length_um = nice_length(0.2 * width_px * size)
    if not length_um:
        return ""
    length_px = length_um / size
    label = f"{length_um:g} µm"
    x1 = width_px - 0.05 * width_px
    y = ax.get_ylim()[0] - 0.06 * abs(ax.get_ylim()[0] - ax.get_ylim()[1])
    height = max(1.0, 0.015 * abs(ax.get_ylim()[0] - ax.get_ylim()[1]))
    ax.add_patch(
        Rectangle(
            (x1 - length_px, y - height),
            length_px,
            height,
            facecolor="white",
            edgecolor="black",
            linewidth=0.6,
        )
    )
    ax.text(
        x1 - length_px / 2,
        y - 1.6 * height,
        label,
        color="white",
        ha="center",
        va="bottom",
        fontsize=FONT - 2,
        fontweight="bold",
        path_effects=_outline_text(),
    )
    return label


def _outline_text() -> list[Any]:
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=2, foreground="black")]


@dataclass
class Panel:
    """One image of a picture grid.

    Attributes:
        image: ``(y, x)`` grey values in [0, 1] or ``(y, x, 3)`` RGB.
        title: Text above the panel.
        cmap: Colour map for grey images (``gray``, ``magma``, ...).
        vmin: Value shown at the bottom of the colour map.
        vmax: Value shown at the top of the colour map.
        colorbar: Label of a colour bar to draw beside the panel (empty: none).
    """

    image: np.ndarray
    title: str
    cmap: str = "gray"
    vmin: float = 0.0
    vmax: float = 1.0
    colorbar: str = ""


def panel_figure(
    rows: Sequence[Sequence[Panel]],
    path: Path,
    *,
    row_labels: Sequence[str] = (),
    pixel_size: Mapping[str, float] | None = None,
    legend: Sequence[tuple[str, str]] = (),
    title: str = "",
) -> Path:
    """A grid of image panels with row labels, a scale bar on the first panel and a legend.

    Args:
        rows: Panels, row by row (rows may have different lengths).
        path: PNG to write.
        row_labels: Text left of each row (e.g. the entry name).
        pixel_size: Pixel size in µm (``{"x": ...}``) for the scale bar.
        legend: ``(colour, label)`` pairs shown under the grid.
        title: Figure title.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    h, w = rows[0][0].image.shape[:2]
    cell = 2.3
    aspect = h / max(w, 1)
    fig = Figure(
        figsize=(cell * n_cols + (1.2 if row_labels else 0.2), cell * aspect * n_rows + 0.9)
    )
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            ax = fig.add_subplot(n_rows, n_cols, i * n_cols + j + 1)
            im = ax.imshow(
                panel.image,
                cmap=panel.cmap,
                vmin=panel.vmin,
                vmax=panel.vmax,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(plain(panel.title, 34), fontsize=FONT - 1)
            if j == 0 and row_labels:
                ax.set_ylabel(wrap(row_labels[i], 22), fontsize=FONT - 1)
            if i == 0 and j == 0:
                add_scale_bar(ax, pixel_size, panel.image.shape[1])
            if panel.colorbar:
                cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
                cb.set_label(plain(panel.colorbar, 30), fontsize=FONT - 3)
                cb.ax.tick_params(labelsize=FONT - 3)
    if legend:
        fig.legend(
            handles=[Patch(color=c, label=plain(label, 30)) for c, label in legend],
            loc="lower center",
            ncol=min(4, len(legend)),
            fontsize=FONT - 2,
            frameon=False,
        )
    if title:
        fig.suptitle(plain(title, 70), fontsize=FONT)
    fig.tight_layout(rect=(0, 0.08 if legend else 0, 1, 0.96 if title else 1))
    return save(fig, path)


def pick_samples(
    entries: Sequence[LeaderboardEntry],
    sample_ids: Sequence[str],
    headline: str,
    direction: str,
    n: int = 1,
) -> list[str]:
    """The samples drawn for every entry: where the drawn entries do worst together.

    The per-sample headline values of the entries (from their reports) are averaged; the
    ``n`` samples with the worst average are chosen (ties: split order). Without per-sample
    values, the first samples of the split.
    """
    scored: list[tuple[float, int, str]] = []
    for i, sid in enumerate(sample_ids):
        values = [
            e.report.per_sample[sid][headline]
            for e in entries
            if headline in e.report.per_sample.get(sid, {})
            and math.isfinite(e.report.per_sample[sid][headline])
        ]
        if values:
            mean = float(np.mean(values))
            scored.append((mean if direction == "higher" else -mean, i, sid))
    if not scored:
        return list(sample_ids[:n])
    return [sid for _, _, sid in sorted(scored)[:n]]


@dataclass
class Source:
    """Where one drawn entry's predictions come from.

    Attributes:
        label: Name shown on the picture (the entry name, or ``control: ...``).
        entry: The entry (or control) whose predictions these are.
        predict: ``sample id -> Prediction``.
        origin: ``kept predictions`` or ``recomputed control``.
    """

    label: str
    entry: LeaderboardEntry
    predict: Callable[[str], Any]
    origin: str


def predictions_path(uri: str, base: Path | None) -> Path | None:
    """Local path of an entry's ``predictions_uri``, or None when it cannot be read here.

    Relative URIs are resolved against ``base`` (the local leaderboard root) and must stay
    inside it; without a base they are not resolved.
    """
    if not uri:
        return None
    path = Path(uri)
    if not path.is_absolute():
        if base is None:
            return None
        root = base.resolve()
        path = (root / path).resolve()
        if not path.is_relative_to(root):
            return None
    return path if path.exists() else None


_SESSION: ContextVar[dict[str, Any] | None] = ContextVar("cellbench_publish", default=None)


@contextlib.contextmanager
def publishing() -> Iterator[dict[str, Any]]:
    """One publishing run: the catalog and every opened dataset store are reused inside."""
    session: dict[str, Any] = {"stores": {}}
    token = _SESSION.set(session)
    try:
        yield session
    finally:
        _SESSION.reset(token)


def catalog() -> Any:
    """The dataset catalog (parsed once per publishing run)."""
    from cellbench.catalog import Catalog

    session = _SESSION.get()
    if session is None:
        return Catalog()
    if "catalog" not in session:
        session["catalog"] = Catalog()
    return session["catalog"]


def load_store(ref: str) -> Any:
    """Open a pulled dataset (once per publishing run).

    Raises:
        CellbenchError: If it is not pulled or imported here.
    """
    from cellbench.registry import load

    session = _SESSION.get()
    if session is None:
        return load(ref, catalog())
    stores = session["stores"]
    if ref not in stores:
        try:
            stores[ref] = load(ref, catalog())
        except CellbenchError as err:
            stores[ref] = err
    found = stores[ref]
    if isinstance(found, CellbenchError):
        raise found
    return found


def open_store(board: Leaderboard, what: str) -> tuple[Any, list[str]]:
    """The board's dataset store, or None and a note saying why it cannot be drawn."""
    key = board.key
    try:
        store = load_store(key.ref)
    except CellbenchError as err:
        return None, [f"{what} need the dataset store: {err}"]
    if board.dataset_checksum and store.checksum != board.dataset_checksum:
        return None, [
            f"{what} skipped: the local {key.ref} store (checksum {store.checksum[:12]}) is not "
            f"the build the entries were scored on ({board.dataset_checksum[:12]})"
        ]
    return store, []


def prediction_sources(
    board: Leaderboard,
    task: Any,
    store: Any,
    sample_ids: Sequence[str],
    *,
    top_k: int,
    base: Path | None,
    what: str = "pictures",
) -> tuple[list[Source], list[str]]:
    """The predictions drawn on a board: the top entries' kept ones, then the controls'.

    Entries are drawn from their kept predictions (``predictions_uri``); the board's classical
    reference controls are recomputed on ``sample_ids`` (cellbench makes them itself, so they
    are always available). Entries without kept predictions get a note instead.

    Returns:
        The sources and a line for every entry that cannot be drawn.
    """
    from cellbench.predictions import load_predictions

    notes: list[str] = []
    sources: list[Source] = []
    for row in board.rows[:top_k]:
        for entry in row.replicates:
            path = predictions_path(entry.predictions_uri, base)
            if path is None:
                continue
            try:
                preds = load_predictions(path, board.key.task)
            except CellbenchError as err:
                notes.append(
                    f"{row.name}: predictions at {entry.predictions_uri} unreadable ({err})"
                )
                continue
            sources.append(Source(row.name, entry, preds.get, "kept predictions"))
            break
        else:
            notes.append(f"{row.name}: no {what} (its predictions were not kept with the board)")
    by_name = {c.name: c for c in task.controls(store, board.key.split)} if board.controls else {}
    for row in board.controls:
        spec = by_name.get(row.name.removeprefix("control: "))
        if spec is None or row.control != "reference":
            continue
        sources.append(
            Source(
                row.name, row.replicates[0], _lazy(spec, store, sample_ids), "recomputed control"
            )
        )
    return sources, notes


def _lazy(spec: Any, store: Any, sample_ids: Sequence[str]) -> Callable[[str], Any]:
    """``sample id -> Prediction`` of a control, computed on the first call (cache hits skip it)."""
    done: dict[str, Any] = {}

    def get(sid: str) -> Any:
        if not done:
            done.update(spec.predict(store, list(sample_ids)))
        return done[sid]

    return get


def cache_inputs(board: Leaderboard, sources: Sequence[Source], samples: Sequence[str]) -> dict:
    """What a picture of these sources on these samples depends on (for the figure cache)."""
    from cellbench._version import __version__

    return {
        "board": board.key.path,
        "checksum": board.dataset_checksum,
        "samples": list(samples),
        "sources": [
            [
                s.label,
                s.origin,
                s.entry.submission_sha256,
                s.entry.report.provenance.predictions_sha256,
            ]
            for s in sources
        ],
        "cellbench": __version__,
    }
