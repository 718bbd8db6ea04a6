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
        plots/*.png                charts (see figures.py) and per-task pictures
        entries/<entry>.json       each entry's receipt (the entry file, byte for byte)
        manifests/<entry>.yaml     each entry's submission manifest
        controls/<control>.json    each control's receipt
        predictions/<name>.zip     predictions kept beside the board, zipped once (cached)

Publishing into the leaderboard root itself is allowed: the entry, control and prediction files
it would copy are already there and are left untouched. Figures are cached by the digest of
what they show (:mod:`cellbench.leaderboard.figcache`), so publishing unchanged boards again
only renders the pages.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import CellbenchError
from cellbench.leaderboard import figcache, plots
from cellbench.leaderboard.csvfile import render_csv
from cellbench.leaderboard.entry import BoardKey
from cellbench.leaderboard.formatting import json_number, json_text
from cellbench.leaderboard.html import (
    render_board_html,
    render_glossary_html,
    render_index_html,
)
from cellbench.leaderboard.markdown import render_index_markdown, render_markdown
from cellbench.leaderboard.pictures import publishing
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
    board = rank_entries(key, store.entries(key), store.controls(key))
    board.dataset_card = {**board.dataset_card, **_catalog_card(key)}
    return board


def _catalog_card(key: BoardKey) -> dict[str, Any]:
    """The catalog's card for the dataset version, if the catalog knows it (else empty)."""
    from cellbench.leaderboard.entry import card_snapshot
    from cellbench.leaderboard.pictures import catalog

    try:
        card = catalog().card(key.dataset, key.version)
    except CellbenchError:
        return {}
    return card_snapshot(card.to_dict())


def _write_text(path: Path, text: str) -> Path:
    """Write atomically (temporary name, then rename): an interrupted publish cuts no file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _json_text(data: Any) -> str:
    return json_text(_nan_to_none(data))


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write bytes unless the file already holds them (publishing into the root itself)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def entry_files(
    store: LeaderboardStore, board: Leaderboard, folder: Path
) -> dict[str, dict[str, str]]:
    """Write each entry's receipt, manifest and kept predictions into the board's folder.

    * ``entries/<entry_id>.json``: the receipt, the entry file itself (scores, per-sample
      values, digests, provenance), byte for byte;
    * ``controls/<name_id>.json``: the same for controls;
    * ``manifests/<entry_id>.yaml``: the submission manifest as YAML;
    * ``predictions/<name>.zip``: predictions kept beside the board in the leaderboard root,
      as a zip (see :func:`zip_predictions`).

    Returns:
        Per entry id, the page-relative links: ``receipt``, ``manifest``, ``predictions``.
    """
    import yaml

    from cellbench.leaderboard.pictures import predictions_path

    links: dict[str, dict[str, str]] = {}
    base = Path(store.root).resolve() if store.local else None
    board_root = (base / board.key.path / "predictions") if base else None

    def raw(path: str, entry: Any) -> bytes:
        """The stored file's bytes (the receipt as written), else the entry re-serialised."""
        try:
            return store.fs.cat_file(path)
        except (FileNotFoundError, OSError):
            return entry.to_json().encode("utf-8")

    for row in board.rows:
        for e in row.replicates:
            mine: dict[str, str] = {}
            rel = f"entries/{e.filename}"
            _write_if_changed(folder / rel, raw(store.entry_path(e), e))
            mine["receipt"] = rel
            man = f"manifests/{e.entry_id}.yaml"
            text = yaml.safe_dump(e.manifest, sort_keys=False, allow_unicode=True)
            _write_if_changed(folder / man, text.encode("utf-8"))
            mine["manifest"] = man
            path = predictions_path(e.predictions_uri, base)
            if path is not None and board_root is not None and path.is_relative_to(board_root):
                rel_pred = path.relative_to(board_root).as_posix()
                if (folder / "predictions").resolve() == board_root.resolve():
                    # published into the leaderboard root: link the kept folder, add nothing
                    mine["predictions"] = f"predictions/{rel_pred}"
                else:
                    zipped = f"predictions/{rel_pred}.zip" if path.is_dir() else ""
                    name = zipped or f"predictions/{rel_pred}"
                    zip_predictions(path, folder / name)
                    mine["predictions"] = name
            links[e.entry_id] = mine
    for c in board.controls:
        e = c.replicates[0]
        rel = f"controls/{e.name_id}.json"
        _write_if_changed(folder / rel, raw(f"{store.controls_dir(e.key)}/{e.name_id}.json", e))
        links[e.entry_id] = {"receipt": rel}
    return links


def zip_predictions(path: Path, target: Path) -> Path:
    """Publish kept predictions as one file: a folder (a Zarr store) as an uncompressed zip.

    A static site cannot serve a folder for download; the zip unpacks to the same folder name
    (``unzip NAME.zarr.zip`` gives ``NAME.zarr``). Zarr chunks are compressed already, so the
    zip stores them as they are. The zip is cached with the figures, keyed by the folder's
    file names, sizes and modification times; a file is copied as it is.
    """
    import os
    import zipfile

    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        shutil.copyfile(path, target)
        return target
    files = sorted(p for p in path.rglob("*") if p.is_file())
    inputs = [
        path.name,
        [(p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
    ]

    def write(out: Path) -> None:
        tmp = out.with_name(f".{out.name}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for p in files:
                info = zipfile.ZipInfo(f"{path.name}/{p.relative_to(path).as_posix()}")
                info.date_time = (1980, 1, 1, 0, 0, 0)  # the same bytes for the same files
                zf.writestr(info, p.read_bytes())
        os.replace(tmp, out)

    figcache.draw(target, "predictions-zip", inputs, write)
    return target


def thumbnail(board: Leaderboard, folder: Path) -> str:
    """Draw ``plots/thumbnail.png`` from the first test image when the dataset is here.

    Returns:
        The page-relative path, or empty when the dataset store is not available.
    """
    from cellbench.leaderboard.pictures import open_store

    store, _ = open_store(board, "thumbnail")
    if store is None:
        return ""
    ids = store.sample_ids(board.key.split) or store.sample_ids()
    if not ids:
        return ""
    name = "plots/thumbnail.png"
    figcache.draw(
        folder / name,
        "thumbnail",
        {"checksum": store.checksum, "sample": ids[0]},
        lambda p: plots.thumbnail(np.asarray(store.image(ids[0])[...]), p),
    )
    return name


def render_board(
    store: LeaderboardStore,
    key: BoardKey,
    out: Path,
    *,
    top_k: int = 3,
    overlays: bool = True,
) -> tuple[Leaderboard, list[str]]:
    """Render one leaderboard (charts, pictures, README.md, JSON, CSV, index.html) under ``out``.

    Args:
        store: Where the entries are.
        key: Which leaderboard.
        out: Site root.
        top_k: Entries shown in confusion matrices, curves and pictures.
        overlays: Draw the per-task pictures (they need the dataset store and the entries'
            kept predictions) and the dataset thumbnail.

    Returns:
        The ranked board and notes about anything that could not be drawn.
    """
    from cellbench.leaderboard.figures import board_figures
    from cellbench.tasks import get_task

    board = load_board(store, key)
    folder = out / key.path
    shutil.rmtree(folder / "plots", ignore_errors=True)
    task = get_task(key.task)
    figures, notes = board_figures(board, folder, task, top_k=top_k)
    thumb = ""
    picture_notes: list[str] = []
    if overlays:
        base = Path(store.root) if store.local else None
        figs, picture_notes = task.board_pictures(board, folder, top_k=top_k, base=base)
        figures += figs
        thumb = thumbnail(board, folder)
    else:
        picture_notes = ["pictures were not drawn (published with --no-overlays)"]
    links = entry_files(store, board, folder)
    board.thumbnail = thumb
    _write_text(
        folder / "README.md",
        render_markdown(board, figures, notes=[*notes, *picture_notes], links=links),
    )
    data = board.to_dict()
    data["publish_notes"] = [*notes, *picture_notes]
    _write_text(folder / "leaderboard.json", _json_text(data))
    _write_text(folder / "leaderboard.csv", render_csv(board))
    _write_text(
        folder / "index.html",
        render_board_html(
            board, figures, "../../../", notes, links=links, picture_notes=picture_notes
        ),
    )
    return board, [*notes, *picture_notes]


def publish(
    store: LeaderboardStore | str | None,
    out: str | Path,
    *,
    top_k: int = 3,
    overlays: bool = True,
    progress: Callable[[str], None] | None = None,
    cache: Path | bool | None = True,
) -> PublishResult:
    """Render every leaderboard of a store as Markdown, JSON, CSV and a static HTML site.

    Args:
        store: A :class:`LeaderboardStore` or its root (local path or fsspec URL).
        out: Local folder to write the site into (created if needed).
        top_k: Entries shown in confusion matrices, curves and pictures.
        overlays: Draw the per-task pictures and dataset thumbnails.
        progress: Called with one line per board (and a summary) while publishing.
        cache: Figure cache folder; True for ``$CELLBENCH_HOME/cache/figures``, False or None
            to draw every figure (see :mod:`cellbench.leaderboard.figcache`).

    Returns:
        What was written.

    Raises:
        PublishError: If the store has no leaderboards.
    """
    started = time.perf_counter()
    if not isinstance(store, LeaderboardStore):
        store = LeaderboardStore(store)
    out = Path(out)
    keys = store.boards()
    if not keys:
        raise PublishError(f"no leaderboard entries under {store.url}; nothing to publish")
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    folder = figcache.default_folder() if cache is True else (cache or None)

    rendered: list[tuple[Leaderboard, str]] = []
    notes: dict[str, list[str]] = {}
    with figcache.using(folder) as counts, publishing():
        for i, key in enumerate(keys, 1):
            t0, hits0, drawn0 = time.perf_counter(), counts.hits, counts.drawn
            board, why = render_board(store, key, out, top_k=top_k, overlays=overlays)
            rendered.append((board, key.path))
            if why:
                notes[key.path] = why
            if progress:
                progress(
                    f"[{i}/{len(keys)}] {key.path}: {len(board.rows)} entries, "
                    f"{len(board.controls)} controls, {counts.drawn - drawn0} figures drawn, "
                    f"{counts.hits - hits0} from cache ({time.perf_counter() - t0:.1f} s)"
                )

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
            "leader_ci": [b.rows[0].headline.ci_low, b.rows[0].headline.ci_high],
            "n_entries": len(b.rows),
            "n_controls": len(b.controls),
            "updated": max(r.submitted for r in b.rows),
            "dataset_card": b.dataset_card,
        }
        for b, rel in rendered
    ]
    _write_text(out / "leaderboards.json", _json_text(index))
    if progress:
        progress(f"published {len(keys)} board(s) in {time.perf_counter() - started:.1f} s")
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
    progress: Callable[[str], None] | None = None,
) -> tuple[PublishResult, str]:
    """Render (into ``out`` or a temporary folder) and push to ``to`` (see :func:`push`)."""
    if out is not None:
        result = publish(store, out, top_k=top_k, overlays=overlays, progress=progress)
        return result, push(result.out, to)
    with tempfile.TemporaryDirectory(prefix="cellbench-site-") as tmp:
        result = publish(store, tmp, top_k=top_k, overlays=overlays, progress=progress)
        return result, push(tmp, to)
