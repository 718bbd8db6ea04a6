"""Hyperparameter grid search: one training run per grid point, ranked on the validation split.

A grid is a YAML mapping from :class:`~cellbench.training.config.TrainConfig` keys (or
``model.<field>`` for the baseline's config) to lists of values; every combination is trained
on the train split and selected on the val split exactly like ``cellbench train`` (the task's
headline metric, or the validation loss with ``val_metric: false``). Example::

    lr: [0.1, 0.03, 0.01]
    momentum: [0.9, 0.99]
    weight_decay: [0.0, 1.0e-4]
    augment_strength: [0.5, 1.0]
    model.base_channels: [16, 32]

Layout of the output folder::

    <out>/run-000/ ...        one run directory per grid point (see cellbench.training.engine)
    <out>/results.csv         one row per run, best first
    <out>/results.json        the same, with the grid and the selection metric

Runs already finished in ``<out>`` are reused and interrupted ones resumed, so an interrupted
search continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.errors import ValidationError
from cellbench.registry import open_dataset
from cellbench.store.zarr_store import DatasetStore
from cellbench.training.checkpoint import write_json, write_text
from cellbench.training.config import TrainConfig
from cellbench.training.engine import load_run_config, resume, train
from cellbench.training.errors import TrainingError
from cellbench.training.layout import CHECKPOINTS, LAST_STATE, RUN_CONFIG

#: Keys a grid may not vary (they define the search itself).
FIXED_KEYS = ("task", "dataset", "baseline", "device")


@dataclass
class TuneResult:
    """Outcome of a grid search.

    Attributes:
        out: Output folder.
        rows: One row per run, best first (``run``, the grid values, ``best_value``,
            ``best_epoch``, ``epochs``, ``status``, ``wall_time_s``).
        metric: Selection metric name.
        direction: ``higher`` or ``lower``.
        grid: The grid searched.
    """

    out: Path
    rows: list[dict[str, Any]]
    metric: str | None
    direction: str
    grid: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, Any] | None:
        """The best row (None if no run produced a value)."""
        return self.rows[0] if self.rows and self.rows[0].get("best_value") is not None else None


def parse_grid(data: Any, context: str = "grid") -> dict[str, list[Any]]:
    """Validate a grid mapping; scalars become one-element lists.

    Raises:
        ValidationError: Listing every unknown or fixed key and every empty list.
    """
    if not isinstance(data, Mapping) or not data:
        raise ValidationError(["a grid is a non-empty mapping of config keys to lists"], context)
    accepted = TrainConfig.keys()
    problems = []
    grid: dict[str, list[Any]] = {}
    for key, values in data.items():
        key = str(key)
        if key in FIXED_KEYS:
            problems.append(f"{key!r} cannot be searched over (it defines the search)")
        elif key not in accepted and not key.startswith("model."):
            problems.append(
                f"unknown key {key!r} (accepted: {', '.join(accepted)}, or model.<field>)"
            )
        vals = list(values) if isinstance(values, list) else [values]
        if not vals:
            problems.append(f"{key!r} has no values")
        grid[key] = vals
    if problems:
        raise ValidationError(problems, context)
    return grid


def load_grid(path: str | Path) -> dict[str, list[Any]]:
    """Read and validate a grid YAML file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        message = f"cannot read YAML ({err})".replace("\n", " ")
        raise ValidationError([message], str(path)) from None
    return parse_grid(data, str(path))


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's key order."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def sort_rows(rows: list[dict[str, Any]], direction: str) -> list[dict[str, Any]]:
    """Best first by ``best_value`` in the metric's direction; runs without a value last."""

    def key(row: dict[str, Any]) -> tuple[int, float]:
        value = row.get("best_value")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0.0)
        return (0, -float(value) if direction == "higher" else float(value))

    return sorted(rows, key=key)


def _finished(run_dir: Path) -> bool:
    if not (run_dir / RUN_CONFIG).is_file():
        return False
    _, doc = load_run_config(run_dir)
    return doc.get("status") in ("finished", "early-stopped")


def _row(run_dir: Path, point: Mapping[str, Any]) -> dict[str, Any]:
    _, doc = load_run_config(run_dir)
    best = doc.get("best", {}) or {}
    return {
        "run": run_dir.name,
        **dict(point),
        "best_value": best.get("value"),
        "best_epoch": best.get("epoch"),
        "epochs": doc.get("epochs_completed"),
        "status": doc.get("status"),
        "wall_time_s": doc.get("wall_time_s"),
    }


def tune(
    base: TrainConfig,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    store: DatasetStore | None = None,
    progress: bool = True,
) -> TuneResult:
    """Train one run per grid point and rank them on the validation split.

    Args:
        base: Config shared by every run (task, dataset, baseline, epochs, ...).
        grid: Values per key (see :func:`parse_grid`).
        out: Output folder.
        store: An already opened store.
        progress: Show progress bars.

    Returns:
        The ranked :class:`TuneResult` (also written to ``results.csv``/``results.json``).

    Raises:
        TrainingError: If the dataset has no validation split.
    """
    grid = parse_grid(dict(grid))
    base.require_run_fields()
    store = store or open_dataset(base.dataset)
    if "val" not in store.splits:
        raise TrainingError(
            f"dataset {store.id}@{store.version} has no val split; tuning selects on it"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    points = grid_points(grid)
    rows = []
    metric: str | None = None
    direction = "higher"
    for i, point in enumerate(points):
        run_dir = out / f"run-{i:03d}"
        config = base.merged(point, context=f"grid point {i}: {point}")
        if not _finished(run_dir):
            if (run_dir / CHECKPOINTS / LAST_STATE).is_file():
                resume(run_dir, store=store, progress=progress)
            else:
                shutil.rmtree(run_dir, ignore_errors=True)  # started, no epoch completed
                train(config, run_dir, store=store, progress=progress)
        _, doc = load_run_config(run_dir)
        selection = (doc.get("resolved") or {}).get("selection") or {}
        metric = selection.get("metric") or metric
        direction = selection.get("direction") or direction
        rows.append(_row(run_dir, point))
    rows = sort_rows(rows, direction)
    result = TuneResult(out=out, rows=rows, metric=metric, direction=direction, grid=dict(grid))
    write_results(result)
    return result


def write_results(result: TuneResult) -> None:
    """Write ``results.csv`` and ``results.json`` (atomically)."""
    columns: list[str] = []
    for row in result.rows:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    write_text(buf.getvalue(), result.out / "results.csv")
    write_json(
        {
            "metric": result.metric,
            "direction": result.direction,
            "grid": result.grid,
            "runs": result.rows,
        },
        result.out / "results.json",
    )


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return value


def results_table(result: TuneResult) -> Any:
    """A ``rich`` table of the ranked runs."""
    from rich.table import Table

    arrow = "higher is better" if result.direction == "higher" else "lower is better"
    table = Table(title=f"grid search: {result.metric or 'last epoch'} ({arrow})")
    table.add_column("rank", justify="right")
    table.add_column("run")
    for key in result.grid:
        table.add_column(key, justify="right")
    for name in ("best", "epoch", "epochs", "status", "time (s)"):
        table.add_column(name, justify="right")
    for rank, row in enumerate(result.rows, start=1):
        value = row.get("best_value")
        table.add_row(
            str(rank),
            row["run"],
            *[str(row.get(k)) for k in result.grid],
            "-" if value is None else f"{value:.4g}",
            str(row.get("best_epoch") or "-"),
            str(row.get("epochs") or "-"),
            str(row.get("status") or "-"),
            "-" if row.get("wall_time_s") is None else f"{row['wall_time_s']:.1f}",
        )
    return table
