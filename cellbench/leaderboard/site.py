"""Publishing: render every leaderboard as Markdown, JSON and a static HTML site, and push it.

Site layout written by :func:`publish` (``OUT`` is the ``--out`` folder)::

    OUT/index.html                 datasets with their cards and links to every leaderboard
    OUT/glossary.html              metric names, units, definitions (from metric docstrings)
    OUT/README.md                  the same index in Markdown
    OUT/leaderboards.json          machine-readable index (board, path, headline, leader)
    OUT/assets/style.css           copied from cellbench/leaderboard/templates/assets
    OUT/assets/leaderboard.js      sortable tables (vanilla JS, no network)
    OUT/<dataset>@<version>/<task>/<split>/
        index.html                 the leaderboard page
        README.md                  the leaderboard in Markdown
        leaderboard.json           ranked rows with every number at full precision
        leaderboard.csv            one row per entry, every metric's mean (spreadsheets)
        plots/*.png                per-metric bars, curves, confusion matrices, error overlays

Publishing into the leaderboard root itself is allowed: entries live in ``entries/`` folders,
which publishing never touches.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.errors import CellbenchError
from cellbench.leaderboard.csvfile import render_csv
from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry
from cellbench.leaderboard.formatting import json_number, json_text
from cellbench.leaderboard.html import (
    FigureRef,
    render_board_html,
    render_glossary_html,
    render_index_html,
)
from cellbench.leaderboard.layout import curve_series, scalar_families, series_families
from cellbench.leaderboard.markdown import render_index_markdown, render_markdown
from cellbench.leaderboard.plots import (
    bar_chart,
    confusion_chart,
    curves_chart,
    file_stem,
)
from cellbench.leaderboard.ranking import Leaderboard, rank_entries
from cellbench.leaderboard.store import LeaderboardStore
from cellbench.leaderboard.templates import copy_assets


class PublishError(CellbenchError):
    """Publishing failed (bad destination, nothing to publish, upload error)."""


@dataclass
class PublishResult:
    """What :func:`publish` wrote.

    Attributes:
        out: Site folder.
        boards: Leaderboards rendered.
        notes: Per board path, remarks about what could not be rendered and why.
    """

    out: Path
    boards: list[BoardKey]
    notes: dict[str, list[str]] = field(default_factory=dict)


def load_board(store: LeaderboardStore, key: BoardKey) -> Leaderboard:
    """Rank one stored leaderboard, with its dataset card completed from the catalog."""
    board = rank_entries(key, store.entries(key))
    board.dataset_card = {**board.dataset_card, **_catalog_card(key)}
    return board


def _catalog_card(key: BoardKey) -> dict[str, Any]:
    """The catalog's card for the dataset version, if the catalog knows it (else empty)."""
    from cellbench.catalog import Catalog
    from cellbench.leaderboard.entry import card_snapshot

    try:
        card = Catalog().card(key.dataset, key.version)
    except CellbenchError:
        return {}
    return card_snapshot(card.to_dict())


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _json_text(data: Any) -> str:
    return json_text(_nan_to_none(data))


def find_confusion(entry: LeaderboardEntry) -> tuple[list[list[float]], list[str]] | None:
    """Confusion-matrix counts and class names from a report's metric details, if present.

    Looks for a details value under a key containing ``confusion`` that is a square matrix (or
    a mapping holding one under ``counts``/``matrix``); class names come from the details
    (``class_names``/``labels``) or the dataset card's ``label`` class table.
    """

    def square(value: Any) -> list[list[float]] | None:
        if isinstance(value, Mapping):
            for k in ("counts", "matrix", "confusion_matrix"):
                if k in value:
                    return square(value[k])
            return None
        if (
            isinstance(value, list)
            and value
            and all(isinstance(r, list) and len(r) == len(value) for r in value)
            and all(isinstance(x, int | float) for r in value for x in r)
        ):
            return value
        return None

    for result in entry.report.results:
        details = result.get("details") or {}
        if not isinstance(details, Mapping):
            continue
        keys = sorted(details, key=lambda k: (k != "confusion_matrix", str(k)))
        for k in keys:
            v = details[k]
            if "confusion" not in str(k).lower():
                continue
            matrix = square(v)
            if matrix is None:
                continue
            names = details.get("class_names") or details.get("labels")
            if isinstance(v, Mapping):
                names = v.get("class_names") or v.get("labels") or names
            if not names:
                names = (entry.dataset_card.get("class_names") or {}).get("label") or []
            return matrix, [str(n) for n in names]
    return None


def render_board(
    store: LeaderboardStore,
    key: BoardKey,
    out: Path,
    *,
    top_k: int = 3,
    overlays: bool = True,
) -> tuple[Leaderboard, list[str]]:
    """Render one leaderboard (plots, README.md, leaderboard.json, index.html) under ``out``.

    Args:
        store: Where the entries are.
        key: Which leaderboard.
        out: Site root.
        top_k: Entries shown in confusion matrices, curves and overlays.
        overlays: Draw example error overlays (instance segmentation; needs the dataset store
            and the entries' predictions).

    Returns:
        The ranked board and notes about anything that could not be drawn.
    """
    board = load_board(store, key)
    folder = out / key.path
    plots = folder / "plots"
    shutil.rmtree(plots, ignore_errors=True)
    figures: list[FigureRef] = []
    notes: list[str] = []

    charts = [
        k for keys in scalar_families(board.metric_keys, board.headline).values() for k in keys
    ]
    for k in [board.headline] + [k for k in charts if k != board.headline]:
        if k != board.headline and all(math.isnan(r.metrics[k].mean) for r in board.rows):
            continue  # undefined for every entry (e.g. no large objects): nothing to draw
        name = f"plots/bar-{file_stem(k)}.png"
        bar_chart(board, k, folder / name)
        whisker = "95% interval" if k == board.headline else "± std over seeds"
        figures.append(FigureRef("metrics", name, f"{k} per entry (whiskers: {whisker})", k))

    for family, series in series_families(board.metric_keys).items():
        drawn = curve_series(series)
        name = f"plots/curves-{file_stem(family)}.png"
        curves_chart(board, family, drawn, folder / name, top_k=max(top_k, 5))
        labels = ", ".join(b.split("/", 1)[-1] for b in drawn)
        figures.append(FigureRef("curves", name, f"{family}: {labels} versus threshold", family))

    from cellbench.tasks import get_task

    task = get_task(key.task)
    unit = task.confusion_unit
    if unit is not None:
        for row in board.rows[:top_k]:
            entry = row.replicates[0]
            found = find_confusion(entry)
            if found is None:
                notes.append(f"{row.name}: no confusion matrix in the report's details")
                continue
            matrix, names = found
            name = f"plots/confusion-{file_stem(entry.entry_id)}.png"
            confusion_chart(matrix, names, f"{row.name} (seed {entry.seed})", folder / name)
            figures.append(
                FigureRef(
                    "confusion",
                    name,
                    f"{row.name}, seed {entry.seed}: rows true class, columns predicted; colour "
                    f"is the fraction of the true class, numbers are {unit}",
                    f"confusion matrix of {row.name}",
                )
            )

    if overlays:
        base = Path(store.root) if store.local else None
        figs, why = task.board_pictures(board, folder, top_k=top_k, base=base)
        figures += figs
        notes += why

    rel_plots = {"headline": f"plots/bar-{file_stem(board.headline)}.png"}
    _write_text(folder / "README.md", render_markdown(board, rel_plots))
    data = board.to_dict()
    data["publish_notes"] = notes
    _write_text(folder / "leaderboard.json", _json_text(data))
    _write_text(folder / "leaderboard.csv", render_csv(board))
    _write_text(folder / "index.html", render_board_html(board, figures, "../../../", notes))
    return board, notes


def publish(
    store: LeaderboardStore | str | None,
    out: str | Path,
    *,
    top_k: int = 3,
    overlays: bool = True,
) -> PublishResult:
    """Render every leaderboard of a store as Markdown, JSON and a static HTML site.

    Args:
        store: A :class:`LeaderboardStore` or its root (local path or fsspec URL).
        out: Local folder to write the site into (created if needed).
        top_k: Entries shown in confusion matrices and overlays.
        overlays: Draw example error overlays for instance segmentation.

    Returns:
        What was written.

    Raises:
        PublishError: If the store has no leaderboards.
    """
    if not isinstance(store, LeaderboardStore):
        store = LeaderboardStore(store)
    out = Path(out)
    keys = store.boards()
    if not keys:
        raise PublishError(f"no leaderboard entries under {store.url}; nothing to publish")
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)

    rendered: list[tuple[Leaderboard, str]] = []
    notes: dict[str, list[str]] = {}
    for key in keys:
        board, why = render_board(store, key, out, top_k=top_k, overlays=overlays)
        rendered.append((board, key.path))
        if why:
            notes[key.path] = why

    _write_text(out / "index.html", render_index_html(rendered))
    _write_text(out / "glossary.html", render_glossary_html(rendered))
    _write_text(out / "README.md", render_index_markdown(rendered))
    index = [
        {
            "board": b.key.to_dict(),
            "path": rel,
            "headline": {"metric": b.headline, "direction": b.direction},
            "leader": b.rows[0].name,
            "leader_value": b.rows[0].headline.mean,
            "n_entries": len(b.rows),
            "dataset_card": b.dataset_card,
        }
        for b, rel in rendered
    ]
    _write_text(out / "leaderboards.json", _json_text(index))
    return PublishResult(out=out, boards=keys, notes=notes)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def push(site: str | Path, to: str, *, message: str = "Update cellbench leaderboards") -> str:
    """Upload a rendered site to a Hugging Face dataset repo or any fsspec location.

    Args:
        site: Local folder written by :func:`publish`.
        to: ``hf://datasets/ORG/NAME[/path/in/repo]`` (uploaded with
            :meth:`huggingface_hub.HfApi.upload_folder` in one commit; the token comes from
            ``HF_TOKEN`` or the local login), or an fsspec URL such as ``s3://bucket/prefix``
            or ``memory://site`` (files copied with ``fs.put``).
        message: Commit message (Hugging Face).

    Returns:
        Where the site was pushed (commit URL for Hugging Face, the URL otherwise).

    Raises:
        PublishError: For a malformed destination.
    """
    site = Path(site)
    if not (site / "index.html").is_file():
        raise PublishError(f"{site}: not a published site (no index.html); run publish first")
    if to.startswith("hf://"):
        parts = to[len("hf://") :].strip("/").split("/")
        if len(parts) < 3 or parts[0] != "datasets":
            raise PublishError(
                f"{to}: expected hf://datasets/ORG/NAME[/path]; leaderboards go to dataset repos"
            )
        from huggingface_hub import HfApi

        repo_id = f"{parts[1]}/{parts[2]}"
        path_in_repo = "/".join(parts[3:]) or None
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(site),
            path_in_repo=path_in_repo,
            commit_message=message,
        )
        return str(getattr(info, "commit_url", info))
    import fsspec

    fs, root = fsspec.core.url_to_fs(to)
    root = root.rstrip("/")
    for path in sorted(p for p in site.rglob("*") if p.is_file()):
        rel = path.relative_to(site).as_posix()
        target = f"{root}/{rel}"
        parent = target.rsplit("/", 1)[0]
        with contextlib.suppress(Exception):  # object stores have no folders to create
            fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(path), target)
    return to


def publish_to(
    store: LeaderboardStore | str | None,
    to: str,
    *,
    out: str | Path | None = None,
    top_k: int = 3,
    overlays: bool = True,
) -> tuple[PublishResult, str]:
    """Render (into ``out`` or a temporary folder) and push to ``to`` (see :func:`push`)."""
    if out is not None:
        result = publish(store, out, top_k=top_k, overlays=overlays)
        return result, push(result.out, to)
    with tempfile.TemporaryDirectory(prefix="cellbench-site-") as tmp:
        result = publish(store, tmp, top_k=top_k, overlays=overlays)
        return result, push(tmp, to)
