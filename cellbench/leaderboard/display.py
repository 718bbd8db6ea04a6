"""How metric values read on every rendering: human names, direction marks and counts as counts.

Shared by the HTML, Markdown and terminal renderers so that a value reads the same everywhere:
quality values carry ``↑``/``↓`` (higher/lower is better) and four decimals; counts and
reference sizes (``kind = count`` in the metric's glossary, see
:mod:`cellbench.leaderboard.glossary`) carry no direction and are shown as counts.
"""

from __future__ import annotations

from cellbench.leaderboard.formatting import fmt_mean_std, fmt_tally, fmt_value, is_number
from cellbench.leaderboard.glossary import describe
from cellbench.leaderboard.ranking import Leaderboard, Summary


def arrow(direction: str) -> str:
    """``↑`` for higher-is-better, ``↓`` for lower-is-better."""
    return "↓" if direction == "lower" else "↑"


def mark(board: Leaderboard, key: str) -> str:
    """What follows a metric's name in a header: ``↑``/``↓`` for quality values, ``count``."""
    if describe(key).is_count:
        return "count"
    return arrow(board.directions.get(key, "higher"))


def better(board: Leaderboard, key: str) -> str:
    """Sort direction of a column (``higher``/``lower``), empty for counts."""
    return "" if describe(key).is_count else board.directions.get(key, "higher")


def header(board: Leaderboard, key: str, name: str | None = None) -> str:
    """Column header: the human name (or ``name``) and its mark, e.g. ``COCO AP (↑)``."""
    return f"{describe(key).name if name is None else name} ({mark(board, key)})"


def value_text(key: str, summary: Summary | None, spread: bool = True) -> str:
    """A metric's mean (± std over seeds when ``spread``), as a count when it is one."""
    if summary is None:
        return fmt_value(None)
    if describe(key).is_count:
        text = fmt_tally(summary.mean)
        if spread and is_number(summary.std):
            text += f" ± {fmt_tally(summary.std)}"
        return text
    return fmt_mean_std(summary.mean, summary.std) if spread else fmt_value(summary.mean)


def headline_phrase(board: Leaderboard) -> str:
    """``COCO AP (fraction 0-1; higher is better)`` for prose."""
    info = describe(board.headline)
    word = "lower is better" if board.direction == "lower" else "higher is better"
    unit = f"{info.unit}; " if info.unit else ""
    return f"{info.name} ({unit}{word})"
