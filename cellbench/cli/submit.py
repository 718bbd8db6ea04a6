"""``cellbench submit``: validate, score and add a submission to its leaderboard."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import click

from cellbench.cli.options import LocalPath, PathOrUrl, one_spelling
from cellbench.cli.output import emit_json, is_stdout, json_option
from cellbench.errors import ValidationError


def _fmt(value: float | None) -> str:
    """A score for the terminal: 4 decimals, ``n/a`` for undefined (NaN/None) values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


@click.command()
@click.argument("manifest", required=False, type=click.Path(path_type=Path))
@click.option(
    "--init",
    "init",
    is_flag=True,
    help="Write a commented manifest template to MANIFEST (default submission.yaml) and exit.",
)
@click.option(
    "--root",
    default=None,
    help="Leaderboard root: folder or fsspec URL (default $CELLBENCH_LEADERBOARDS or "
    "./leaderboards).",
)
@click.option("--dry-run", is_flag=True, help="Validate and score, but do not add the entry.")
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where to run models: auto (CUDA when available), cpu, cuda or cuda:N.",
)
@one_spelling(
    "--bootstrap",
    "--n-bootstrap",
    "n_bootstrap",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="Bootstrap resamples for the headline's 95% interval (0: off).",
)
@click.option("--bootstrap-seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option(
    "--predictions-dir",
    type=LocalPath(),
    default=None,
    help="Where predictions of model submissions are written (default: the cellbench cache).",
)
@click.option(
    "--max-runtime",
    type=click.FloatRange(min=1),
    default=None,
    help="Wall-clock seconds a model run may take once its runtime is loaded (default 1800).",
)
@click.option(
    "--max-memory",
    default=None,
    help="Memory a model run may add beyond its runtime, e.g. 8GB, 512MB (default 8GB).",
)
@click.option(
    "--server",
    "server",
    default=None,
    help="Submit to a challenge server (URL) instead of scoring here; follows the status.",
)
@click.option("--token", default=None, help="Team token for --server (default $CELLBENCH_TOKEN).")
@click.option("--challenge", default=None, help="Challenge id on --server (if it runs several).")
@click.option("--no-wait", is_flag=True, help="With --server: upload, print the id and exit.")
@click.option(
    "--report",
    "report_out",
    type=PathOrUrl(file=True),
    default=None,
    help="Also write the ScoreReport JSON here ('-': stdout).",
)
@json_option
def submit(
    manifest: Path | None,
    init: bool,
    root: str | None,
    dry_run: bool,
    device: str,
    n_bootstrap: int,
    bootstrap_seed: int,
    predictions_dir: Path | None,
    max_runtime: float | None,
    max_memory: str | None,
    server: str | None,
    token: str | None,
    challenge: str | None,
    no_wait: bool,
    report_out: Path | None,
    as_json: bool,
) -> None:
    """Score the submission described by MANIFEST and add it to its leaderboard.

    Every problem (manifest fields, missing or extra samples, shapes, unsafe model files) is
    listed at once and nothing is stored. Models (TorchScript, ONNX, safetensors packages)
    are run by cellbench on the split in a sandbox (a separate process without network,
    confined to its inputs, stopped at --max-runtime/--max-memory); their runtime and peak
    memory are recorded.
    """
    from cellbench.submissions import submit as do_submit
    from cellbench.submissions import write_template
    from cellbench.submissions.sandbox import SandboxLimits, parse_bytes

    if init:
        path = write_template(manifest or Path("submission.yaml"))
        click.echo(f"wrote manifest template {path}; fill it in, then: cellbench submit {path}")
        return
    if manifest is None:
        raise ValidationError(["give the manifest file (or --init to write a template)"], "submit")
    if server:
        _submit_remote(manifest, server, token, challenge, no_wait)
        return
    limits = SandboxLimits()
    if max_runtime is not None:
        limits = dataclasses.replace(limits, max_runtime_s=max_runtime)
    if max_memory is not None:
        limits = dataclasses.replace(limits, max_memory_bytes=parse_bytes(max_memory))
    result = do_submit(
        manifest,
        root=root,
        dry_run=dry_run,
        device=device,
        n_bootstrap=n_bootstrap,
        seed=bootstrap_seed,
        predictions_dir=predictions_dir,
        sandbox=limits,
    )
    if as_json or is_stdout(report_out):
        _print_json(result, report_only=not as_json)
        if report_out is not None and not is_stdout(report_out):
            result.report.save(report_out)
        return
    report = result.report
    head = report.headline
    click.echo(
        f"{result.manifest.name} (seed {result.manifest.seed}) on "
        f"{report.dataset}@{report.dataset_version} {report.task}/{report.split}"
    )
    ci = (
        f"{round(head.ci_level * 100)}% CI [{_fmt(head.ci_low)}, {_fmt(head.ci_high)}]"
        if math.isfinite(head.ci_low) and math.isfinite(head.ci_high)
        else "CI undefined"
    )
    click.echo(f"  {head.name} = {_fmt(head.value)}  {ci} ({head.direction} is better)")
    for group in report.groups:
        if group.worst_group is not None:
            click.echo(f"  worst {group.field}: {group.worst_group} = {_fmt(group.worst_value)}")
    if result.usage is not None:
        u = result.usage
        mem = f"{u.peak_memory_mb:.0f} MB peak RSS" if u.peak_memory_mb is not None else "n/a"
        gpu = f", {u.peak_gpu_memory_mb:.0f} MB GPU" if u.peak_gpu_memory_mb is not None else ""
        click.echo(f"  inference: {u.runtime_s:.2f} s, {mem}{gpu} (sandboxed)")
    if report_out is not None:
        report.save(report_out)
        click.echo(f"  report: {report_out}")
    if result.entry_path:
        click.echo(f"added {result.entry_path}")
    else:
        click.echo("dry run: leaderboard not changed")


def _print_json(result: Any, *, report_only: bool) -> None:
    """The submission result (or only its ScoreReport) as one JSON document on stdout."""
    if report_only:
        click.echo(result.report.to_json())
        return
    emit_json(
        {
            "name": result.manifest.name,
            "seed": result.manifest.seed,
            "entry_path": result.entry_path,
            "dry_run": result.entry_path is None,
            "predictions_path": str(result.predictions_path),
            "usage": result.usage.to_dict() if result.usage is not None else None,
            "report": result.report.to_dict(),
        }
    )


def _submit_remote(
    manifest: Path, url: str, token: str | None, challenge: str | None, no_wait: bool
) -> None:
    """Upload to a challenge server, then follow the submission with a progress display."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    from cellbench.errors import CellbenchError
    from cellbench.server.client import Client

    console = Console(stderr=True, highlight=False)
    client = Client(url, token)
    try:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console
        ) as bar:
            task = bar.add_task("upload", total=None)
            created = client.submit(
                manifest,
                challenge,
                lambda sent, total: bar.update(task, completed=sent, total=total),
            )
        sid = created["id"]
        click.echo(f"submitted {sid}: {url.rstrip('/')}/submissions/{sid}")
        if no_wait:
            return
        shown: dict[str, object] = {"state": None}
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[what]}"),
            console=console,
        ) as bar:
            task = bar.add_task("queued", total=None, what="")

            def update(view: dict) -> None:
                done, total = view["progress"]["done"], view["progress"]["total"]
                what = f"{done}/{total} samples" if total else ""
                bar.update(
                    task, description=view["state"], completed=done, total=total or None, what=what
                )
                if view["state"] != shown["state"]:
                    shown["state"] = view["state"]

            view = client.follow(sid, update)
    finally:
        client.close()
    click.echo(f"{view['name']}: {view['state']}")
    for event in view["events"]:
        click.echo(f"  {event['at']}  {event['state']:<9} {event['detail']}")
    if view["state"] == "scored":
        head = view["public"]["headline"]
        click.echo(
            f"  public {head['name']} = {head['value']:.4f}  {round(head['ci_level'] * 100)}% CI "
            f"[{head['ci_low']:.4f}, {head['ci_high']:.4f}] ({view['public']['n_samples']} samples)"
        )
        click.echo(f"  receipt: {url.rstrip('/')}{view['receipt_url']}")
        return
    for reason in view["reasons"]:
        click.echo(f"  - {reason}")
    raise CellbenchError(f"submission {sid} {view['state']} ({len(view['reasons'])} problem(s))")
