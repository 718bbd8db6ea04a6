"""``cellbench leaderboard``: list, show, add, controls and publish leaderboards."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cellbench.cli.options import LocalPath, PathOrUrl
from cellbench.cli.output import emit_json, id_column, json_option
from cellbench.errors import ValidationError

_ROOT_HELP = (
    "Leaderboard root: folder or fsspec URL (default $CELLBENCH_LEADERBOARDS or ./leaderboards)."
)


def _console() -> Console:
    # Piped output (files, CI logs) gets a wide table instead of 80 truncated columns.
    from cellbench.cli.output import console

    return console()


@click.group()
def leaderboard() -> None:
    """Leaderboards: list, show, add a scored report, compute controls, publish the site."""


@leaderboard.command("list")
@click.option("--root", default=None, help=_ROOT_HELP)
@json_option
def list_(root: str | None, as_json: bool) -> None:
    """Every leaderboard with its number of entries and its leader."""
    from cellbench.leaderboard import LeaderboardStore, load_board

    store = LeaderboardStore(root)
    boards = [load_board(store, key) for key in store.boards()]
    if as_json:
        emit_json(
            [
                {
                    **b.key.to_dict(),
                    "ref": b.key.ref,
                    "headline": {"metric": b.headline, "direction": b.direction},
                    "entries": len(b.rows),
                    "leader": b.rows[0].name,
                    "leader_value": b.rows[0].headline.mean,
                }
                for b in boards
            ]
        )
        return
    from cellbench.leaderboard.terminal import user_text

    table = Table()
    id_column(table, "dataset", [b.key.ref for b in boards])
    for col in ("task", "split", "headline", "entries", "leader"):
        table.add_column(col, overflow="fold")
    for board in boards:
        key = board.key
        top = board.rows[0]
        cells = (key.ref, key.task, key.split, board.headline, str(len(board.rows)), top.name)
        table.add_row(*(user_text(c) for c in cells))
    _console().print(table)


@leaderboard.command()
@click.argument("dataset")
@click.argument("task")
@click.option("--split", default="test", show_default=True)
@click.option("--root", default=None, help=_ROOT_HELP)
@click.option("--all-metrics", is_flag=True, help="Add a column for every metric.")
@json_option
def show(
    dataset: str, task: str, split: str, root: str | None, all_metrics: bool, as_json: bool
) -> None:
    """Show the leaderboard of DATASET (id or id@version) for TASK."""
    from cellbench.leaderboard import LeaderboardStore, load_board

    if as_json:
        store = LeaderboardStore(root)
        emit_json(load_board(store, store.find_board(dataset, task, split)).to_dict())
        return
    from cellbench.leaderboard.terminal import print_board

    print_board(
        LeaderboardStore(root), dataset, task, split, all_metrics=all_metrics, console=_console()
    )


@leaderboard.command()
@click.argument("report", type=PathOrUrl())
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
    report: Path | str,
    manifest_path: Path,
    root: str | None,
    submission_sha256: str | None,
    predictions: str,
) -> None:
    """Add a scored REPORT (ScoreReport JSON; a file or a URL) with its manifest as an entry."""
    from cellbench.report import ScoreReport
    from cellbench.submissions import add_report, parse_manifest
    from cellbench.submissions.manifest import read_manifest_data

    if isinstance(report, Path) and not report.is_file():
        raise ValidationError(["no such file"], str(report))
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
@click.argument("dataset", required=False)
@click.argument("task", required=False)
@click.option("--split", default="test", show_default=True)
@click.option("--root", default=None, help=_ROOT_HELP)
def controls(dataset: str | None, task: str | None, split: str, root: str | None) -> None:
    """Compute and store the controls of every board (or of DATASET's TASK board).

    Controls are reference predictions cellbench makes and scores itself (a classical method,
    the perfect and the empty prediction, depending on the task); they need the dataset
    (cellbench datasets pull ID) and are written to the board's controls/ folder.
    """
    from cellbench.leaderboard import LeaderboardStore
    from cellbench.leaderboard.controls import compute_controls
    from cellbench.leaderboard.formatting import fmt_interval, fmt_value, visible_text

    store = LeaderboardStore(root)
    if (dataset is None) != (task is None):
        raise ValidationError(["give DATASET and TASK, or neither"], "leaderboard controls")
    keys = [store.find_board(dataset, task, split)] if dataset and task else store.boards()
    if not keys:
        raise ValidationError([f"no leaderboards under {store.url}"], "leaderboard controls")
    for key in keys:
        for entry in compute_controls(key, progress=lambda line: click.echo(line, err=True)):
            path = store.put_control(entry)
            h = entry.report.headline
            click.echo(
                visible_text(
                    f"{key.path}: {entry.name}: {h.name} {fmt_value(h.value)} "
                    f"{fmt_interval(h.ci_low, h.ci_high)} -> {path}"
                )
            )


@leaderboard.command()
@click.option("--root", default=None, help=_ROOT_HELP)
@click.option(
    "--out",
    type=LocalPath(file_okay=False, hint="; publish to object storage with --to URL"),
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
    help="Entries shown in confusion matrices, curves and pictures.",
)
@click.option(
    "--no-overlays",
    is_flag=True,
    help="Skip the per-task pictures and dataset thumbnails (they need the pulled datasets).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def publish(
    root: str | None,
    out: Path | None,
    to: str | None,
    top_k: int,
    no_overlays: bool,
    quiet: bool,
) -> None:
    """Render every leaderboard as Markdown, JSON, CSV and a static HTML site; optionally push it.

    Progress goes to stderr, one line per board. Figures are cached by content in
    $CELLBENCH_HOME/cache/figures, so publishing unchanged boards again only renders pages.
    """
    from cellbench.leaderboard import publish as do_publish
    from cellbench.leaderboard import publish_to
    from cellbench.leaderboard.formatting import visible_text

    if out is None and to is None:
        raise ValidationError(["give --out DIR and/or --to URL"], "leaderboard publish")

    def progress(line: str) -> None:
        if not quiet:
            click.echo(visible_text(line), err=True)

    if to is None:
        assert out is not None
        result = do_publish(root, out, top_k=top_k, overlays=not no_overlays, progress=progress)
        where = ""
    else:
        result, where = publish_to(
            root, to, out=out, top_k=top_k, overlays=not no_overlays, progress=progress
        )
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
