"""CSV rendering: one row per ranked entry with every metric's mean over seeds.

For spreadsheets and scripts. Text cells go through
:func:`~cellbench.leaderboard.formatting.csv_text` (no formula injection, no control
characters) and the :mod:`csv` writer quotes commas, quotes and line breaks; numbers are written
at full precision (``repr``), missing values as empty cells, infinities as ``inf``/``-inf``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

from cellbench.leaderboard.formatting import csv_text, is_infinite, is_number
from cellbench.leaderboard.ranking import Leaderboard


def _number(value: Any) -> str:
    if is_number(value):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if is_infinite(value):
        return "inf" if float(value) > 0 else "-inf"
    return ""


def render_csv(board: Leaderboard) -> str:
    """The board as CSV text (header row, then one row per entry in rank order)."""
    head = board.headline
    header = [
        "rank",
        "entry",
        "authors",
        "code_url",
        "n_seeds",
        f"{head} mean",
        f"{head} std",
        f"{head} ci_low",
        f"{head} ci_high",
        *[f"{k} mean" for k in board.metric_keys if k != head],
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_text(h) for h in header])
    for r in board.rows:
        m = r.manifest
        code = m.get("code") if isinstance(m.get("code"), Mapping) else {}
        authors = m.get("authors") or []
        if isinstance(authors, str):
            authors = [authors]
        h = r.headline
        writer.writerow(
            [
                str(r.rank),
                csv_text(r.name),
                csv_text("; ".join(str(a) for a in authors)),
                csv_text(code.get("url", "")),
                str(len(r.replicates)),
                _number(h.mean),
                _number(h.std),
                _number(h.ci_low),
                _number(h.ci_high),
                *[
                    _number(r.metrics[k].mean) if k in r.metrics else ""
                    for k in board.metric_keys
                    if k != head
                ],
            ]
        )
    return buf.getvalue()


__all__ = ["render_csv"]
