"""``cellbench train``, ``cellbench predict`` and ``cellbench tune``: thin wrappers of the engine.

Multi-GPU: run the same command under ``torchrun --nproc_per_node=N -m cellbench train ...``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import click

from cellbench.cli.options import LocalPath
from cellbench.errors import ValidationError

_HELP_SET = (
    "Override any config key, e.g. --set lr=0.03 --set model.base_channels=16 (value read as "
    "YAML; repeatable)."
)


def _configure_logging(quiet: bool) -> None:
    logger = logging.getLogger("cellbench.training")
    logger.setLevel(logging.INFO)
    handler = next((h for h in logger.handlers if getattr(h, "_cellbench_cli", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._cellbench_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    handler.setLevel(logging.WARNING if quiet else logging.INFO)


def _overrides(options: dict[str, Any], sets: tuple[str, ...]) -> dict[str, Any]:
    from cellbench.training.config import parse_override

    out = {k: v for k, v in options.items() if v is not None}
    for text in sets:
        key, value = parse_override(text)
        out[key] = value
    return out


def _base_config(
    task: str | None,
    dataset: str | None,
    baseline: str | None,
    config_file: Path | None,
    overrides: dict[str, Any],
) -> Any:
    from cellbench.training.config import TrainConfig

    base = TrainConfig.from_yaml(config_file) if config_file else TrainConfig()
    cli = {"task": task, "dataset": dataset, "baseline": baseline, **overrides}
    return base.merged(cli, context="command line")


def _common(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--dataset", help="Dataset id[@version] (pulled or imported) or store path."
            ),
            click.option("--baseline", help="Registered baseline name (unet, resnet18, ...)."),
            click.option(
                "--config",
                "config_file",
                type=click.Path(exists=True, dir_okay=False, path_type=Path),
                help="YAML file of TrainConfig keys.",
            ),
            click.option("--epochs", type=int, help="Number of epochs."),
            click.option("--batch-size", type=int, help="Samples per optimiser step and process."),
            click.option("--lr", type=float, help="Peak learning rate."),
            click.option("--seed", type=int, help="Random seed."),
            click.option("--workers", type=int, help="Data-loader worker processes."),
            click.option(
                "--device", help="auto (CUDA when available; the default), cpu, cuda or cuda:N."
            ),
            click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=_HELP_SET),
            click.option(
                "--quiet", "-q", is_flag=True, help="No progress bars or per-epoch lines."
            ),
        ]
    ):
        func = option(func)
    return func


@click.command("train")
@click.argument("task", required=False)
@_common
@click.option("--out", type=LocalPath(), help="Run directory (default runs/...).")
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Continue the run in RUN_DIR from its last checkpoint.",
)
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after the first epoch that ends past this wall time (resume to continue).",
)
def train_cmd(
    task: str | None,
    dataset: str | None,
    baseline: str | None,
    config_file: Path | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    workers: int | None,
    device: str | None,
    sets: tuple[str, ...],
    quiet: bool,
    out: Path | None,
    resume: Path | None,
    max_minutes: float | None,
) -> None:
    """Train a baseline for TASK on a dataset; writes a run directory with the model package.

    \b
    Example:
      cellbench train semantic-segmentation --dataset dsb2018-stardist --baseline unet --epochs 50
      cellbench train --resume runs/unet-dsb2018-stardist-20250101-120000 --epochs 80
    """  # noqa: D301
    from cellbench.training.engine import load_run_config, train
    from cellbench.training.engine import resume as do_resume

    _configure_logging(quiet)
    overrides = _overrides(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "workers": workers,
            "device": device,
            "max_minutes": max_minutes,
        },
        sets,
    )
    if resume is not None:
        saved, _ = load_run_config(resume)
        if task and task != saved.task:
            raise ValidationError(
                [f"TASK {task!r} differs from the run's task {saved.task!r}"], str(resume)
            )
        if dataset or baseline or config_file or out:
            raise ValidationError(
                ["--dataset, --baseline, --config and --out cannot change when resuming"],
                str(resume),
            )
        result = do_resume(resume, overrides, progress=not quiet)
    else:
        if not task:
            raise click.UsageError("TASK is required (or --resume RUN_DIR)")
        config = _base_config(task, dataset, baseline, config_file, overrides)
        result = train(config, out, progress=not quiet)
    best = (
        f"best {result.headline} {result.best_value:.4g} at epoch {result.best_epoch}"
        if result.best_value is not None
        else f"model = epoch {result.best_epoch}"
    )
    state = (
        "stopped early"
        if result.stopped_early
        else f"time limit reached (continue with --resume {result.run_dir})"
        if result.time_limited
        else "done"
    )
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    click.echo(f"{state}: {result.epochs_run} epochs, {best}; run directory {result.run_dir}")


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", required=True, help="Dataset id[@version] or store path.")
@click.option("--split", default="test", show_default=True, help="Split to predict.")
@click.option(
    "--out",
    required=True,
    type=LocalPath(),
    help="Prediction set to write (canonical Zarr; must not exist).",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when available), cpu, cuda or cuda:N.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def predict_cmd(
    run_dir: Path, dataset: str, split: str, out: Path, device: str, quiet: bool
) -> None:
    """Predict SPLIT of a dataset with the model package in RUN_DIR; write the prediction set."""
    from cellbench.registry import open_dataset
    from cellbench.training.distributed import select_device
    from cellbench.training.inference import write_split_predictions

    dev = select_device(device)
    store = open_dataset(dataset)
    path = write_split_predictions(
        run_dir,
        store,
        split,
        out,
        device=dev,
        progress=not quiet,
        producer={"command": "cellbench predict", "run": str(run_dir)},
    )
    n = len(store.sample_ids(split))
    click.echo(f"wrote {n} predictions of {store.id}@{store.version} {split} to {path}")


@click.command("tune")
@click.argument("task")
@_common
@click.option(
    "--grid",
    "grid_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML mapping of config keys to lists of values.",
)
@click.option("--out", type=LocalPath(), help="Output folder (default runs/tune-...).")
def tune_cmd(
    task: str,
    dataset: str | None,
    baseline: str | None,
    config_file: Path | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int | None,
    workers: int | None,
    device: str | None,
    sets: tuple[str, ...],
    quiet: bool,
    grid_file: Path,
    out: Path | None,
) -> None:
    """Grid search over GRID.yaml for TASK: one run per point, ranked on the val split."""
    from datetime import UTC, datetime

    from rich.console import Console

    from cellbench.training.tune import load_grid, results_table, tune

    _configure_logging(bool(quiet))
    overrides = _overrides(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "workers": workers,
            "device": device,
        },
        sets,
    )
    config = _base_config(task, dataset, baseline, config_file, overrides)
    grid = load_grid(grid_file)
    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"tune-{config.baseline}-{stamp}"
    result = tune(config, grid, out, progress=not quiet)
    Console(highlight=False, soft_wrap=True).print(results_table(result))
    click.echo(f"results: {result.out / 'results.csv'}, {result.out / 'results.json'}")
