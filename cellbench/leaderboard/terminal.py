"""A leaderboard as a terminal table (``cellbench leaderboard show``, ``cellbench demo``).

User text (entry names, flags, notes, card titles) is shown as text, never read as rich markup,
with control characters made visible, the same as the Markdown and HTML renderers do.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def user_text(value: Any, style: str = "") -> Text:
    """User text for a rich table: never read as console markup, control characters shown."""
    from cellbench.leaderboard.formatting import visible_text

    return Text(visible_text(value), style=style)


def print_board(
    store: Any,
    dataset: str,
    task: str,
    split: str = "test",
    *,
    all_metrics: bool = False,
    console: Console | None = None,
) -> None:
    """Print one leaderboard as a terminal table (ranks, intervals, seeds, resources, flags).

    Args:
        store: A :class:`cellbench.leaderboard.LeaderboardStore`.
        dataset: Dataset id or ``id@version``.
        task: Task name.
        split: Split of the leaderboard.
        all_metrics: Add a column for every metric.
        console: Where to print (default: stdout).
    """
    from cellbench.leaderboard import load_board
    from cellbench.leaderboard.display import header, value_text
    from cellbench.leaderboard.formatting import (
        direction_word,
        fmt_count,
        fmt_interval,
        fmt_mean_std,
        fmt_resource,
    )
    from cellbench.leaderboard.glossary import describe
    from cellbench.leaderboard.markdown import rank_label

    board = load_board(store, store.find_board(dataset, task, split))
    pct = round(board.ci_level * 100)
    table = Table(
        title=user_text(f"{board.dataset_card.get('title') or board.key.ref} — {task} ({split})"),
        caption=user_text(
            f"{describe(board.headline).name} ({board.headline}): "
            f"{direction_word(board.direction)}; ± std over seeds; "
            f"{pct}% bootstrap interval. '=' tied, '≈' not shown to differ from the entry above "
            "(paired bootstrap)."
        ),
    )
    console = console or Console()
    wide = console.width >= 120  # narrow terminals and logs: keep the columns that rank
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("entry", overflow="fold", min_width=18)
    table.add_column(user_text(describe(board.headline).name), justify="right", no_wrap=True)
    table.add_column(f"{pct}% interval", no_wrap=True)
    table.add_column("seeds", justify="right")
    if wide:
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column("time (s)", justify="right", no_wrap=True)
        table.add_column("mem (MB)", justify="right", no_wrap=True)
    extra = board.metric_keys[1:] if all_metrics else []
    for key in extra:
        table.add_column(user_text(header(board, key)), justify="right", no_wrap=True)
    if wide:
        table.add_column("flags")
    for r in board.rows:
        runtime, memory = r.resource("runtime_s"), r.resource("peak_memory_mb")
        resources = (
            [
                fmt_count(r.manifest.get("n_parameters")),
                fmt_resource(runtime.mean) if runtime else "—",
                fmt_resource(memory.mean, 0) if memory else "—",
            ]
            if wide
            else []
        )
        name = user_text(r.name)
        if not wide and r.flags:  # flags go under the name instead of in their own column
            name.append("\n")
            name.append(user_text("; ".join(r.flags), style="dim"))
        table.add_row(
            rank_label(r),
            name,
            fmt_mean_std(r.headline.mean, r.headline.std),
            fmt_interval(r.headline.ci_low, r.headline.ci_high),
            str(len(r.replicates)),
            *resources,
            *[value_text(k, r.metrics.get(k)) for k in extra],
            *([user_text("; ".join(r.flags))] if wide else []),
        )
    console.print(table)
    from cellbench.leaderboard.formatting import fmt_value

    for c in board.controls:
        norm = f", normalised {c.normalised:.2f}" if c.normalised == c.normalised else ""
        console.print(
            user_text(
                f"{c.name} ({c.control}, not ranked): {fmt_value(c.headline.mean)} "
                f"{fmt_interval(c.headline.ci_low, c.headline.ci_high)}{norm}",
                style="dim",
            )
        )
    for note in board.notes:
        console.print(user_text(f"note: {note}"))
