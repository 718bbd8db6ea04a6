"""A cache of rendered figures keyed by the digest of everything they show.

Drawing is most of the time publishing takes. Every chart and picture is a pure function of its
inputs (numbers, names, digests of predictions and dataset builds), so :func:`draw` hashes a
description of those inputs with the figure kind and :data:`VERSION`, and copies the PNG from
the cache when the same figure was drawn before; otherwise it draws and stores it. The cache
lives in ``$CELLBENCH_HOME/cache/figures/`` (shared by every site published on the machine);
:func:`using` turns it on for a block of code (publishing does), outside of which every figure
is drawn. Entries are written atomically (temporary file, then rename), so concurrent
publishers can share the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Bump when the look of any figure changes: cached figures of older versions are not used.
VERSION = "1"


@dataclass
class FigureCache:
    """Counts and location of one publishing run's cache.

    Attributes:
        folder: Where cached PNGs live (None: cache off, every figure drawn).
        hits: Figures copied from the cache.
        drawn: Figures drawn.
    """

    folder: Path | None
    hits: int = 0
    drawn: int = 0


_ACTIVE: ContextVar[FigureCache | None] = ContextVar("cellbench_figure_cache", default=None)


def default_folder() -> Path:
    """``$CELLBENCH_HOME/cache/figures``."""
    from cellbench.store.cache import cellbench_home

    return cellbench_home() / "cache" / "figures"


@contextlib.contextmanager
def using(folder: Path | None) -> Iterator[FigureCache]:
    """Use a figure cache in ``folder`` (None: draw everything) inside the block."""
    cache = FigureCache(folder)
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def digest(kind: str, inputs: Any) -> str:
    """sha256 of a figure's kind and inputs (JSON; numbers at full precision)."""
    text = json.dumps([VERSION, kind, inputs], sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return value.as_posix()
    return repr(value)


def draw(path: Path, kind: str, inputs: Any, render: Callable[[Path], Any]) -> Path:
    """Write the figure at ``path``: copied from the cache, or drawn by ``render(path)``.

    Args:
        path: PNG to write.
        kind: Figure kind (part of the key: two kinds never share a file).
        inputs: Everything the figure shows (JSON-able; arrays become lists).
        render: Draws the figure into the path it is given.

    Returns:
        ``path``.
    """
    cache = _ACTIVE.get()
    path.parent.mkdir(parents=True, exist_ok=True)
    if cache is None or cache.folder is None:
        render(path)
        if cache is not None:
            cache.drawn += 1
        return path
    key = digest(kind, inputs)
    cached = cache.folder / key[:2] / f"{key}.png"
    if cached.is_file():
        shutil.copyfile(cached, path)
        cache.hits += 1
        return path
    render(path)
    cache.drawn += 1
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".png", dir=cached.parent)
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.replace(tmp, cached)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
