"""``cellbench leaderboard``: list, show, add and publish leaderboards."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cellbench.errors import ValidationError

_ROOT_HELP = (
    "Leaderboard root: folder or fsspec URL (default $CELLBENCH_LEADERBOARDS or ./leaderboards)."
)


def _console() -> Console:
    # Piped output (files, CI logs) gets a wide table instead of 80 truncated columns.
    width = None if sys.stdout.isatty() else 220
    return Console(highlight=False, soft_wrap=True, width=width)


@click.group()
def leaderboard() -> None:
    """Leaderboards: list, show, add a scored report, publish the site."""


@leaderboard.command("list")
@click.option("--root", default=None, help=_ROOT_HELP)
def list_(root: str | None) -> None:
    """Every leaderboard with its number of entries and its leader."""
    from cellbench.leaderboard import LeaderboardStore, load_board

    store = LeaderboardStore(root)
    table = Table()
    for col in ("dataset", "task", "split", "headline", "entries", "leader"):
        table.add_column(col)
    for key in store.boards():
        board = load_board(store, key)
        top = board.rows[0]
        cells = (key.ref, key.task, key.split, board.headline, str(len(board.rows)), top.name)
        table.add_row(*(_text(c) for c in cells))
    _console().print(table)


def _text(value: Any, style: str = "") -> Text:
    """User text for a rich table: never read as console markup, control characters shown."""
    from cellbench.leaderboard.formatting import visible_text

    return Text(visible_text(value), style=style)


@leaderboard.command()
@click.argument("dataset")
@click.argument("task")
@click.option("--split", default="test", show_default=True)
@click.option("--root", default=None, help=_ROOT_HELP)
@click.option("--all-metrics", is_flag=True, help="Add a column for every metric.")
def show(dataset: str, task: str, split: str, root: str | None, all_metrics: bool) -> None:
    """Show the leaderboard of DATASET (id or id@version) for TASK."""
    from cellbench.leaderboard import LeaderboardStore

    print_board(LeaderboardStore(root), dataset, task, split, all_metrics=all_metrics)


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
        title=_text(f"{board.dataset_card.get('title') or board.key.ref} — {task} ({split})"),
        caption=_text(
            f"{describe(board.headline).name} ({board.headline}): "
            f"{direction_word(board.direction)}; ± std over seeds; "
            f"{pct}% bootstrap interval. '=' tied, '≈' not shown to differ from the entry above "
            "(paired bootstrap)."
        ),
    )
    console = console or _console()
    wide = console.width >= 120  # narrow terminals and logs: keep the columns that rank
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("entry", overflow="fold", min_width=18)
    table.add_column(_text(describe(board.headline).name), justify="right", no_wrap=True)
    table.add_column(f"{pct}% interval", no_wrap=True)
    table.add_column("seeds", justify="right")
    if wide:
        table.add_column("params", justify="right", no_wrap=True)
        table.add_column("time (s)", justify="right", no_wrap=True)
        table.add_column("mem (MB)", justify="right", no_wrap=True)
    extra = board.metric_keys[1:] if all_metrics else []
    for key in extra:
        table.add_column(_text(header(board, key)), justify="right", no_wrap=True)
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
        name = _text(r.name)
        if not wide and r.flags:  # flags go under the name instead of in their own column
            name.append("\n")
            name.append(_text("; ".join(r.flags), style="dim"))
        table.add_row(
            rank_label(r),
            name,
            fmt_mean_std(r.headline.mean, r.headline.std),
            fmt_interval(r.headline.ci_low, r.headline.ci_high),
            str(len(r.replicates)),
            *resources,
            *[value_text(k, r.metrics.get(k)) for k in extra],
            *([_text("; ".join(r.flags))] if wide else []),
        )
    console.print(table)
    for note in board.notes:
        console.print(_text(f"note: {note}"))


@leaderboard.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Manifest describing the entry (its submission file need not be present).",
)
@click.option("--root", default=None, help=_ROOT_HELP)
@click.option("--submission-sha256", default=None, help="Digest of what was scored.")
@click.option("--predictions", default="", help="Where the scored predictions are (overlays).")
def add(
    report: Path,
    manifest_path: Path,
    root: str | None,
    submission_sha256: str | None,
    predictions: str,
) -> None:
    """Add a scored REPORT (ScoreReport JSON) with its manifest as a leaderboard entry."""
    from cellbench.report import ScoreReport
    from cellbench.submissions import add_report, parse_manifest
    from cellbench.submissions.manifest import read_manifest_data

    manifest = parse_manifest(read_manifest_data(manifest_path), manifest_path)
    try:
        score_report = ScoreReport.load(report)
    except (ValueError, KeyError, TypeError) as err:
        raise ValidationError([f"not a ScoreReport JSON ({err})"], str(report)) from err
    entry, path = add_report(
        score_report,
        manifest,
        root=root,
        submission_sha256=submission_sha256,
        predictions_uri=predictions,
    )
    from cellbench.leaderboard.formatting import visible_text

    click.echo(visible_text(f"added {entry.name} (seed {entry.seed}) to {entry.key.path}: {path}"))


@leaderboard.command()
@click.option("--root", default=None, help=_ROOT_HELP)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to render the site into (Markdown, JSON, HTML, plots).",
)
@click.option(
    "--to",
    "to",
    default=None,
    help="Push the rendered site: hf://datasets/ORG/NAME[/path] or an fsspec URL.",
)
@click.option(
    "--top-k",
    default=3,
    show_default=True,
    type=click.IntRange(1),
    help="Entries shown in confusion matrices and error overlays.",
)
@click.option("--no-overlays", is_flag=True, help="Skip example error overlays.")
def publish(
    root: str | None, out: Path | None, to: str | None, top_k: int, no_overlays: bool
) -> None:
    """Render every leaderboard as Markdown, JSON and a static HTML site; optionally push it."""
    from cellbench.leaderboard import publish as do_publish
    from cellbench.leaderboard import publish_to
    from cellbench.leaderboard.formatting import visible_text

    if out is None and to is None:
        raise ValidationError(["give --out DIR and/or --to URL"], "leaderboard publish")
    if to is None:
        assert out is not None
        result = do_publish(root, out, top_k=top_k, overlays=not no_overlays)
        where = ""
    else:
        result, where = publish_to(root, to, out=out, top_k=top_k, overlays=not no_overlays)
    click.echo(
        f"rendered {len(result.boards)} leaderboard(s)"
        + (f" into {result.out}" if out is not None else "")
    )
    for path, notes in result.notes.items():
        for note in notes:
            click.echo(visible_text(f"  {path}: {note}"))
    if out is not None:
        click.echo(f"open {Path(result.out) / 'index.html'}")
    if where:
        click.echo(f"pushed to {where}")
