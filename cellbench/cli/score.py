"""``cellbench score``: score predictions against a dataset split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cellbench.cli.options import PathOrUrl, one_spelling, scheduler_option
from cellbench.cli.output import info, is_stdout, json_option

if TYPE_CHECKING:  # rich and the report are imported when used, not on every start
    from rich.console import Console

    from cellbench.report import ScoreReport


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.4f}"


def print_report(report: ScoreReport, console: Console | None = None, full: bool = False) -> None:
    """Print a score report as terminal tables (headline, metrics, groups)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    h = report.headline
    ci = (
        f"  [{_fmt(h.ci_low)}, {_fmt(h.ci_high)}] {h.ci_level:.0%} CI "
        f"({h.n_bootstrap} bootstrap resamples of {h.resampling_unit}s)"
        if h.n_bootstrap
        else ""
    )
    console.print(
        f"[bold]{report.task}[/bold] on {report.dataset}@{report.dataset_version} "
        f"split {report.split!r}: [bold]{h.name} = {_fmt(h.value)}[/bold] "
        f"({h.direction} is better){ci}"
    )
    table = Table(title="metrics", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("better")
    keys = sorted(report.metrics)
    if not full:
        keys = [k for k in keys if "@" not in k or k.endswith(("@0.50", "@0.75"))]
    for key in keys:
        table.add_row(key, _fmt(report.metrics[key]), report.directions.get(key, ""))
    console.print(table)
    for g in report.groups:
        gt = Table(title=f"{h.name} by {g.field} (worst: {g.worst_group})")
        gt.add_column(g.field)
        gt.add_column("n", justify="right")
        gt.add_column(h.name, justify="right")
        for name, values in g.values.items():
            gt.add_row(name, str(g.counts[name]), _fmt(values.get(h.name, float("nan"))))
        console.print(gt)
    for note in report.notes:
        console.print(f"note: {note}")


def _predictions_location(ctx: click.Context, param: click.Parameter, value: str) -> str | Path:
    """A URL (``s3://.../preds.zarr``) as is; a local path must exist."""
    from cellbench.store.location import is_remote, local_path

    if is_remote(value):
        return value
    path = local_path(value)
    if not path.exists():
        raise click.BadParameter(f"{value}: does not exist", ctx=ctx, param=param)
    return path


@click.command()
@click.option("--task", required=True, help="Task name, e.g. instance-segmentation.")
@click.option(
    "--dataset",
    required=True,
    help="Dataset id[@version] (pulled or imported), a store folder or a store URL (s3://...).",
)
@click.option("--split", default="test", show_default=True)
@click.argument("predictions", callback=_predictions_location)
@click.option(
    "--out",
    type=PathOrUrl(file=True),
    help="Write the ScoreReport JSON here ('-': stdout, instead of the tables).",
)
@click.option(
    "--bootstrap",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="Bootstrap resamples (0: off).",
)
@one_spelling("--bootstrap-seed", "--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--group", "groups", multiple=True, help="Metadata column to group by (repeat).")
@click.option("--full", is_flag=True, help="Show values at every IoU threshold.")
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@scheduler_option("the per-sample statistics (one task per image or sequence)")
def score(
    task: str,
    dataset: str,
    split: str,
    predictions: str | Path,
    out: Path | None,
    bootstrap: int,
    bootstrap_seed: int,
    groups: tuple[str, ...],
    full: bool,
    as_json: bool,
    quiet: bool,
    scheduler: str | None,
) -> None:
    """Score PREDICTIONS (canonical Zarr, CSV, TIFF folder, CTC folders, COCO results JSON).

    A COCO results JSON ([{image_id, segmentation, score}], instance segmentation) maps its
    image ids to samples through the annotations.json beside it: the dataset's COCO export
    (`cellbench datasets export ID --to coco DEST --split SPLIT`).
    """
    from cellbench.scoring import score as do_score

    data_on_stdout = as_json or is_stdout(out)
    report = do_score(
        task,
        dataset,
        split,
        predictions,
        n_bootstrap=bootstrap,
        seed=bootstrap_seed,
        groups=list(groups) or None,
        progress=not quiet,
        scheduler=scheduler,
    )
    if data_on_stdout:
        click.echo(report.to_json())
    else:
        print_report(report, full=full)
    if out is not None and not is_stdout(out):
        report.save(out)
        info(f"report written to {out}", quiet_stdout=data_on_stdout)


@click.command("score-ctc")
@click.argument("gt_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("res_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--division-tolerance",
    default=1,
    show_default=True,
    type=click.IntRange(0),
    help="Frames of tolerance when matching divisions (walked by frames, traccuracy 0.4.1).",
)
@click.option(
    "--linking-only",
    is_flag=True,
    help="The segmentation was given (CTC linking benchmark): the masks must be the reference's; "
    "report LNK, CT, TF, BC(i), CCA, BIO(i), OP_CLB(i), divisions, HOTA/CHOTA, MOTA/IDF1.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def score_ctc(
    gt_dir: Path, res_dir: Path, division_tolerance: int, linking_only: bool, as_json: bool
) -> None:
    """Score one Cell Tracking Challenge result folder (RES_DIR) against GT_DIR.

    GT_DIR is a ``<seq>_GT`` folder (``TRA/man_track*.tif`` + ``man_track.txt``, optional
    ``SEG``); RES_DIR a ``<seq>_RES`` folder (``mask*.tif`` + ``res_track.txt``). Both are
    checked against every CTC rule first. With ``--linking-only`` the result's masks must also
    be the reference's, relabelled (every differing frame is listed), and only link-dependent
    measures are reported (DET and SEG are 1 by construction).
    """
    import json

    from cellbench.metrics.tracking import (
        BranchingCorrectness,
        CellCycleAccuracy,
        CompleteTracks,
        CTCMeasures,
        CTCMOTMetrics,
        DivisionMetrics,
        HOTAMetrics,
        MOTMetrics,
    )
    from cellbench.metrics.tracking.linking import LinkingMetrics
    from cellbench.tasks.tracking.ctc import score_ctc_folders

    divisions = DivisionMetrics(frame_tolerance=division_tolerance)
    if linking_only:
        metrics = [LinkingMetrics(), divisions, HOTAMetrics(), CTCMOTMetrics()]
    else:
        metrics = [
            CTCMeasures(),
            divisions,
            CompleteTracks(),
            BranchingCorrectness(),
            CellCycleAccuracy(),
            HOTAMetrics(),
            CTCMOTMetrics(),
            MOTMetrics(),
        ]
    results = score_ctc_folders(gt_dir, res_dir, metrics=metrics, linking_only=linking_only)
    if as_json:
        click.echo(json.dumps({k: r.to_dict() for k, r in results.items()}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{res_dir.name} vs {gt_dir.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, result in results.items():
        for key, value in result.values.items():
            if key.endswith("_mean"):
                continue
            table.add_row(f"{name}/{key}", _fmt(value))
    Console(highlight=False).print(table)
