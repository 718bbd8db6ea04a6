"""Leaderboards: entry store, ranking, controls and rendering (Markdown, JSON, CSV, HTML).

One leaderboard per (dataset version, task, split). Entries are JSON files, one per replicate
(see :mod:`cellbench.leaderboard.store` for the layout, atomicity and name ownership); ranking
aggregates replicates, marks ties and compares neighbours with a paired bootstrap
(:mod:`cellbench.leaderboard.ranking`); controls are references cellbench scores itself
(:mod:`cellbench.leaderboard.controls`); :func:`publish` renders every board (charts in
:mod:`.figures`, task pictures through ``Task.board_pictures``, pages from
:mod:`.templates`) and :func:`push` uploads the result to a Hugging Face dataset repo or any
fsspec location.

Typical use::

    from cellbench.leaderboard import LeaderboardStore, load_board, publish

    store = LeaderboardStore("leaderboards")
    board = load_board(store, store.find_board("synthetic-nuclei", "instance-segmentation"))
    print(board.rows[0].name, board.rows[0].headline.mean)
    publish(store, "site/")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry, manifest_digest
from cellbench.leaderboard.ranking import MIN_SEEDS, Leaderboard, RankedEntry, rank_entries
from cellbench.leaderboard.store import (
    EntryExistsError,
    LeaderboardStore,
    LeaderboardStoreError,
    default_root,
)

# Rendering pulls in matplotlib: imported on first use only, so storing entries stays light.
_LAZY = {
    name: "cellbench.leaderboard.site"
    for name in ("PublishResult", "load_board", "publish", "publish_to", "push")
}

__all__ = [
    "MIN_SEEDS",
    "BoardKey",
    "EntryExistsError",
    "Leaderboard",
    "LeaderboardEntry",
    "LeaderboardStore",
    "LeaderboardStoreError",
    "PublishResult",
    "RankedEntry",
    "default_root",
    "load_board",
    "manifest_digest",
    "publish",
    "publish_to",
    "push",
    "rank_entries",
]


def __getattr__(name: str) -> Any:
    """Resolve the rendering functions lazily (PEP 562)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cellbench.leaderboard' has no attribute {name!r}")
