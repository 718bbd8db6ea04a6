"""Score predictions against a dataset split: the driver of evaluation, in two steps.

:func:`collect` streams over the split one sample at a time: it loads the ground truth and the
prediction, validates the prediction with the task's output check (every problem is collected;
nothing is reported if any is found) and reduces both to each metric's per-sample sufficient
statistics. :func:`summarise` then obtains the values for the whole split, for every metadata
group and for bootstrap resamples by re-aggregating those statistics, never by recomputing
overlaps, and stamps the report with provenance. Memory therefore stays at one sample's arrays
plus the small statistics. :func:`score` is the two in a row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from cellbench._version import __version__
from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric
from cellbench.predictions import PredictionSet, load_predictions
from cellbench.report import GroupScores, Headline, Provenance, ScoreReport
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Task


def _key(metric: Metric, value: str) -> str:
    return f"{metric.name}/{value}"


def _flatten(metric: Metric, values: dict[str, float]) -> dict[str, float]:
    prefix = _key(metric, "")  # (one f-string per metric, not per value: ~200,000 a split)
    # Interned keys: every sample's dict holds the same key objects, so a Dask task's batch of
    # samples pickles each key once (a batch of 64 small images: 612 -> 205 kB, unpickled by
    # the driver in 1.6 ms instead of 3.2), and the driver keeps one copy of each.
    return {sys.intern(prefix + k): float(v) for k, v in values.items()}


def bootstrap_ci(
    aggregate: Any,
    stats: Sequence[Any],
    n_bootstrap: int,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a statistic over resampled samples.

    Samples (images or sequences) are drawn with replacement ``n_bootstrap`` times; the
    statistic is re-aggregated on each resample (Efron & Tibshirani 1993, ch. 13). Resamples on
    which the statistic is undefined (NaN) are dropped. A statistic that is the same finite
    value on the whole split and on every single sample (a perfect submission) is a constant,
    and the interval of a constant is that constant: it is returned as such whenever the
    resamples do not give a finite interval.

    Args:
        aggregate: Function from a list of per-sample statistics to a float.
        stats: Per-sample statistics.
        n_bootstrap: Number of resamples (0 disables).
        seed: Random seed (results are reproducible).
        level: Coverage of the interval.

    Returns:
        ``(low, high)``; NaN when disabled or undefined.
    """
    replicates = bootstrap_replicates(aggregate, stats, n_bootstrap, seed)
    return interval_of(replicates, aggregate, stats, level)


def interval_of(
    replicates: np.ndarray, aggregate: Any, stats: Sequence[Any], level: float = 0.95
) -> tuple[float, float]:
    """The percentile interval of replicates; a constant statistic's interval is the constant.

    Args:
        replicates: :func:`bootstrap_replicates` of ``aggregate`` over ``stats``.
        aggregate: Function from a list of per-sample statistics to a float.
        stats: The per-sample statistics the replicates were drawn from.
        level: Coverage of the interval.

    Returns:
        ``(low, high)``; NaN when bootstrapping was disabled or the statistic is undefined.
    """
    if len(replicates) == 0:
        return float("nan"), float("nan")
    low, high = percentile_interval(replicates, level)
    if not (math.isfinite(low) and math.isfinite(high)):
        return _constant_interval(aggregate, stats)
    return low, high


def bootstrap_replicates(
    aggregate: Any, stats: Sequence[Any], n_bootstrap: int, seed: int = 0
) -> np.ndarray:
    """The statistic on each bootstrap resample, in resample order (NaN where undefined).

    Resample ``b`` draws ``n`` indices with ``np.random.default_rng(seed)``, so every call with
    the same seed and the same number of samples draws the same indices in the same order:
    replicates of two prediction sets of one split are paired resample by resample.

    Args:
        aggregate: Function from a list of per-sample statistics to a float.
        stats: Per-sample statistics.
        n_bootstrap: Number of resamples (0 gives an empty array).
        seed: Random seed.
    """
    n = len(stats)
    if n_bootstrap <= 0 or n == 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    values = np.empty(n_bootstrap)
    items = list(stats)
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        values[b] = aggregate([items[i] for i in idx])
    return values


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (non-finite ones dropped; NaN if none)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def _constant_interval(aggregate: Any, items: Sequence[Any]) -> tuple[float, float]:
    """``(v, v)`` when the statistic is ``v`` on the split and on every sample, else NaNs."""
    point = float(aggregate(list(items)))
    if not math.isfinite(point):
        return float("nan"), float("nan")
    for item in items:
        single = float(aggregate([item]))
        if math.isfinite(single) and single != point:
            return float("nan"), float("nan")
    return point, point


def resamples_digest(seed: int, n_bootstrap: int, sample_ids: Sequence[str]) -> str:
    """Identity of a bootstrap's resamples: seed, count and ordered sample ids (sha256)."""
    import hashlib
    import json

    payload = json.dumps([int(seed), int(n_bootstrap), list(sample_ids)], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def coverage_problems(ids: Sequence[str], predicted: set[str], split: str) -> list[str]:
    """Problems of a prediction set's sample coverage: samples missing and samples extra.

    Args:
        ids: Sample ids of the split, in table order.
        predicted: Ids that have a prediction.
        split: Split name (for messages).

    Returns:
        Up to two lines, each naming the first ten offending ids.
    """
    out = []
    missing = [s for s in ids if s not in predicted]
    extra = sorted(predicted - set(ids))
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        out.append(f"{len(missing)} sample(s) of split {split!r} not predicted: {shown}")
    if extra:
        shown = ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")
        out.append(f"{len(extra)} predicted sample(s) not in split {split!r}: {shown}")
    return out


@dataclass
class Collected:
    """What :func:`collect` gathered from one pass over a split: the input of :func:`summarise`.

    Attributes:
        task: The task's declaration.
        store: The dataset.
        split: Split scored.
        predictions: The prediction set.
        metrics: The task's metric suite for this split.
        stats: Per metric name, the per-sample statistics (finalised over the split), in the
            order of :attr:`sample_ids`.
        sample_ids: Samples scored, in the split's table order.
        seconds: Time the collection took.
        sample_values: Per metric name, each sample's values as computed where it was
            measured (:meth:`~cellbench.metrics.base.Metric.early_sample_values`, keys
            ``metric/value``), None where they depend on the whole split; in the order of
            :attr:`sample_ids`. Empty: :func:`summarise` computes them all.
    """

    task: Task
    store: DatasetStore
    split: str
    predictions: PredictionSet
    metrics: list[Metric]
    stats: dict[str, list[Any]]
    sample_ids: list[str]
    seconds: float = 0.0
    sample_values: dict[str, list[dict[str, float] | None]] = dataclasses.field(
        default_factory=dict
    )


def sample_outcome(
    spec: Task,
    store: DatasetStore,
    predictions: PredictionSet,
    metrics: Sequence[Metric],
    sid: str,
    *,
    compute: bool = True,
    values: bool = False,
) -> tuple[list[str], list[Any] | None, list[dict[str, float] | None] | None]:
    """Validate one sample's prediction and reduce it to each metric's statistics.

    The unit of work of :func:`collect`, run in this process or as one Dask task per sample
    (:mod:`cellbench.parallel`).

    Args:
        spec: The task declaration.
        store: The dataset.
        predictions: The prediction set.
        metrics: The split's metric suite.
        sid: The sample.
        compute: Whether to compute statistics (False: validate only).
        values: Whether to compute the sample's per-metric values too (what a Dask worker
            does, so that the process gathering the split has less to do one sample after
            another; in that process itself they cost the same either way).

    Returns:
        ``(problems, stats, values)``: the sample's problems, its per-metric statistics and,
        with ``values``, its per-metric values
        (:meth:`~cellbench.metrics.base.Metric.early_sample_values`, keys ``metric/value``;
        None for a metric that needs the whole split); None when there are problems or
        ``compute`` is False (and ``values`` None without ``values``).
    """
    truth = spec.ground_truth(store, sid)
    try:
        # declared shapes first: nothing of a prediction is decoded before they fit
        declared = predictions.declared(sid)
        early = spec.check_declared(
            declared, spec.expected_output(store, sid, truth), f"sample {sid!r}"
        )
        if early:
            return list(early), None, None
        pred = predictions.get(sid)
    except ValidationError as err:  # e.g. a CTC result folder that breaks the rules
        return [f"sample {sid!r}: {p}" for p in err.problems], None, None
    sample_problems = spec.validate_sample(store, sid, truth, pred)
    if sample_problems:
        return list(sample_problems), None, None
    if not compute:
        return [], None, None
    stats = list(spec.sample_stats(list(metrics), sid, truth, pred))
    if not values:
        return [], stats, None
    early = [m.early_sample_values(st) for m, st in zip(metrics, stats, strict=True)]
    flat = [None if v is None else _flatten(m, v) for m, v in zip(metrics, early, strict=True)]
    return [], stats, flat


#: Samples ahead whose files :func:`collect` fetches: ground truth from a remote store,
#: predictions from a set at a URL.
READ_AHEAD = 8


def _read_ahead(
    spec: Task,
    store: DatasetStore,
    predictions: PredictionSet,
    todo: list[str],
    walk: Iterable[str],
) -> Iterator[str]:
    """``walk`` (over ``todo``), fetching the next samples' files meanwhile.

    From a remote store, the files of the task's :attr:`~cellbench.tasks.base.Task.scored_fields`
    for the next :data:`READ_AHEAD` samples are fetched in the background while one is scored,
    and so are their prediction files from a prediction set at a URL, instead of one request at
    a time when each is read.
    """
    truth = bool(spec.scored_fields) and store.is_remote
    if not truth and not predictions.reads_ahead:
        yield from walk
        return
    started = 0
    for i, sid in enumerate(walk):
        ahead = min(len(todo), i + 1 + READ_AHEAD)
        if ahead > started:
            if truth:
                store.prefetch_regions(
                    [(s, f, ()) for s in todo[started:ahead] for f in spec.scored_fields],
                    image_nodes=True,
                )
            predictions.prefetch(todo[started:ahead])
            started = ahead
        yield sid


def collect(
    task: str | Task,
    dataset: DatasetStore | str | os.PathLike[str],
    split: str,
    predictions: PredictionSet | str | os.PathLike[str],
    *,
    progress: bool = False,
    check_recorded: bool = True,
    scheduler: str | None = None,
) -> Collected:
    """Stream over a split once: read, validate and reduce every sample to its statistics.

    Each sample's ground truth and prediction are loaded, the prediction is validated by the
    task (every problem of every sample is collected), and, while no problem was found, reduced
    to each metric's per-sample sufficient statistics. Memory stays at one sample's arrays plus
    the small statistics. Submissions call this directly, so a prediction submission reads the
    ground truth once.

    Args:
        task: Task name or declaration (see :func:`cellbench.tasks.get_task`).
        dataset: An opened store, a store path, or ``id[@version]`` of a pulled/imported
            dataset.
        split: Split to score.
        predictions: A prediction set, or a path :func:`load_predictions` can read.
        progress: Show a progress bar over samples.
        check_recorded: Compare the dataset and version recorded in the predictions with the
            store's (submissions compare them with the manifest instead).
        scheduler: None (default): one pass in this process. Otherwise the per-sample work runs
            as one Dask task per sample (:func:`cellbench.parallel.sample_outcomes`) on
            ``threads``, ``processes``, ``synchronous`` or a ``dask.distributed`` scheduler
            address (``tcp://host:8786``); the statistics, hence every value, are identical.

    Returns:
        The :class:`Collected` statistics.

    Raises:
        ValidationError: Listing every problem of the predictions (nothing is scored then).
        CellbenchError: If the dataset does not serve the task.
    """
    from cellbench.registry import open_dataset
    from cellbench.tasks import get_task

    started = time.perf_counter()
    spec = task if isinstance(task, Task) else get_task(task)
    store = open_dataset(dataset)
    spec.check_dataset(store)
    if not isinstance(predictions, PredictionSet):
        predictions = load_predictions(
            predictions, task=spec.name, class_names=store.class_names("label") or None
        )
    where = f"predictions for {store.id}@{store.version} split {split!r}"
    if predictions.task != spec.name:
        raise ValidationError([f"predictions are for task {predictions.task!r}"], where)
    problems: list[str] = []
    if check_recorded and predictions.dataset and predictions.dataset != store.id:
        problems.append(f"predictions were made for dataset {predictions.dataset!r}")
    if (
        check_recorded
        and predictions.dataset_version
        and predictions.dataset_version != store.version
    ):
        problems.append(
            f"predictions were made for version {predictions.dataset_version!r}, "
            f"scoring version {store.version!r}"
        )
    ids = store.sample_ids(split)
    predicted = set(predictions.sample_ids)
    problems += coverage_problems(ids, predicted, split)
    if not ids:
        problems.append(f"split {split!r} is empty")

    metrics = spec.metrics(store, split)
    stats: dict[str, list[Any]] = {m.name: [] for m in metrics}
    sample_values: dict[str, list[dict[str, float] | None]] = {m.name: [] for m in metrics}
    scored: list[str] = []
    todo = [sid for sid in ids if sid in predicted]
    if scheduler is not None:
        from cellbench.parallel import sample_outcomes

        outcomes = sample_outcomes(
            spec, store, predictions, metrics, todo, scheduler=scheduler, progress=progress
        )
    else:
        walk: Iterable[str] = todo
        if progress:  # tqdm costs ~10 ms of imports; a quiet (--json -q) run does without
            from tqdm.auto import tqdm

            walk = tqdm(todo, desc=f"score {spec.name}", unit=spec.resampling_unit, disable=None)
        outcomes = (
            sample_outcome(spec, store, predictions, metrics, sid, compute=not problems)
            for sid in _read_ahead(spec, store, predictions, todo, walk)
        )
    for sid, (sample_problems, sample_stats, values) in zip(todo, outcomes, strict=True):
        problems.extend(sample_problems)
        if sample_problems or problems or sample_stats is None:
            continue  # keep validating, but stop computing once the run cannot be reported
        for m, st, v in zip(metrics, sample_stats, values or [None] * len(metrics), strict=True):
            stats[m.name].append(st)
            sample_values[m.name].append(v)
        scored.append(sid)
    if problems:
        raise ValidationError(problems, context=where)
    # split-level decisions (e.g. COCO maxDets) before any aggregation, bootstrap or grouping
    stats = {m.name: m.finalize(stats[m.name]) for m in metrics}
    return Collected(
        task=spec,
        store=store,
        split=split,
        predictions=predictions,
        metrics=metrics,
        stats=stats,
        sample_ids=scored,
        seconds=time.perf_counter() - started,
        sample_values=sample_values,
    )


def summarise(
    collected: Collected,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    ci_level: float = 0.95,
) -> ScoreReport:
    """Reduce collected statistics to a report: values, bootstrap interval, groups, provenance.

    Every value comes from re-aggregating the per-sample statistics (never from recomputing
    overlaps), so groups and bootstrap resamples are exact and cheap.

    Args:
        collected: What :func:`collect` returned.
        n_bootstrap: Bootstrap resamples for the headline CI (0 to skip, e.g. in training).
        seed: Seed of the bootstrap.
        groups: Metadata columns to report per group (default: the task's choice).
        ci_level: Coverage of the confidence interval.

    Raises:
        ValidationError: If a requested group column does not exist.
    """
    started = time.perf_counter()
    spec, store, split = collected.task, collected.store, collected.split
    metrics, stats, scored = collected.metrics, collected.stats, collected.sample_ids
    predictions = collected.predictions
    where = f"predictions for {store.id}@{store.version} split {split!r}"

    report_metrics: dict[str, float] = {}
    directions: dict[str, str] = {}
    per_sample: dict[str, dict[str, float]] = {sid: {} for sid in scored}
    results: list[dict[str, Any]] = []
    notes: list[str] = spec.notes(metrics)
    by_name = {m.name: m for m in metrics}
    for m in metrics:
        st = stats[m.name]
        values = m.aggregate(st)
        flat = _flatten(m, values)
        report_metrics.update(flat)
        directions.update({_key(m, k): m.direction(k) for k in values})
        known = collected.sample_values.get(m.name) or [None] * len(st)
        for sid, s, early in zip(scored, st, known, strict=True):
            per_sample[sid].update(early if early is not None else _flatten(m, m.sample_values(s)))
        m_notes = m.notes(st)
        notes.extend(m_notes)
        results.append(
            {
                "metric": m.name,
                "params": m.params,
                "values": values,
                "details": m.details(st),
                "notes": m_notes,
                "cellbench_version": __version__,
            }
        )

    head_metric_name, head_value_name = spec.headline.split("/", 1)
    head_metric = by_name[head_metric_name]
    head_stats = stats[head_metric_name]

    def head_of(subset: Sequence[Any]) -> float:
        return float(head_metric.aggregate(subset).get(head_value_name, float("nan")))

    replicates = bootstrap_replicates(head_of, head_stats, n_bootstrap, seed)
    low, high = interval_of(replicates, head_of, head_stats, ci_level)
    headline = Headline(
        name=spec.headline,
        value=report_metrics.get(spec.headline, float("nan")),
        direction=spec.direction,
        ci_low=low,
        ci_high=high,
        ci_level=ci_level,
        n_bootstrap=n_bootstrap if n_bootstrap > 0 else 0,
        resampling_unit=spec.resampling_unit,
        replicates=replicates.tolist(),
        resamples=resamples_digest(seed, n_bootstrap, scored) if replicates.size else "",
    )

    group_fields = list(groups) if groups is not None else spec.groups(store)
    group_reports = []
    row_of = {sid: i for i, sid in enumerate(store.table["id"].tolist())}
    for field in group_fields:
        if field not in store.metadata_columns:
            raise ValidationError(
                [
                    f"no metadata column {field!r} to group by "
                    f"(columns: {', '.join(store.metadata_columns) or 'none'})"
                ],
                where,
            )
        column = store.table[field]
        keys = [str(column[row_of[sid]]) for sid in scored]
        values_by_group: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for g in sorted(set(keys)):
            idx = [i for i, k in enumerate(keys) if k == g]
            counts[g] = len(idx)
            vals: dict[str, float] = {}
            for m in metrics:
                vals.update(_flatten(m, m.aggregate([stats[m.name][i] for i in idx])))
            values_by_group[g] = vals
        worst_group, worst_value = _worst(values_by_group, spec.headline, spec.direction)
        group_reports.append(
            GroupScores(
                field=field,
                values=values_by_group,
                counts=counts,
                worst_group=worst_group,
                worst_value=worst_value,
            )
        )

    from cellbench.envinfo import environment_report

    env = environment_report(include_torch=False)
    seconds = collected.seconds + time.perf_counter() - started
    provenance = Provenance(
        cellbench_version=__version__,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        dataset_checksum=store.checksum,
        predictions_sha256=predictions.sha256(),
        environment={k: env[k] for k in ("python", "numpy", "zarr") if k in env},
        extra={
            "scoring_seconds": round(seconds, 3),
            "predictions_source": str(predictions.source) if predictions.source else "",
            "producer": predictions.producer,
            "task": spec.describe(),
        },
    )
    return ScoreReport(
        task=spec.name,
        dataset=store.id,
        dataset_version=store.version,
        split=split,
        headline=headline,
        metrics=report_metrics,
        directions=directions,
        groups=group_reports,
        per_sample=per_sample,
        results=results,
        notes=notes,
        provenance=provenance,
    )


def score(
    task: str | Task,
    dataset: DatasetStore | str | os.PathLike[str],
    split: str,
    predictions: PredictionSet | str | os.PathLike[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    ci_level: float = 0.95,
    progress: bool = False,
    scheduler: str | None = None,
) -> ScoreReport:
    """Score predictions of one task on one split of a dataset version.

    :func:`collect` then :func:`summarise`.

    Args:
        task: Task name or declaration (see :func:`cellbench.tasks.get_task`).
        dataset: An opened store, a store path, or ``id[@version]`` of a pulled/imported
            dataset.
        split: Split to score (``test`` for leaderboards, ``val`` during training).
        predictions: A prediction set, or a path :func:`load_predictions` can read.
        n_bootstrap: Bootstrap resamples for the headline CI (0 to skip, e.g. in training).
        seed: Seed of the bootstrap.
        groups: Metadata columns to report per group (default: the task's choice).
        ci_level: Coverage of the confidence interval.
        progress: Show a progress bar over samples.
        scheduler: Dask scheduler for the per-sample work (see :func:`collect`); None: in
            this process.

    Returns:
        The :class:`ScoreReport`.

    Raises:
        ValidationError: Listing every problem of the predictions (nothing is scored then).
        CellbenchError: If the dataset does not serve the task.
    """
    collected = collect(task, dataset, split, predictions, progress=progress, scheduler=scheduler)
    return summarise(
        collected, n_bootstrap=n_bootstrap, seed=seed, groups=groups, ci_level=ci_level
    )


def _worst(
    values_by_group: dict[str, dict[str, float]], key: str, direction: str
) -> tuple[str | None, float]:
    candidates = [
        (g, v[key]) for g, v in values_by_group.items() if key in v and math.isfinite(v[key])
    ]
    if not candidates:
        return None, float("nan")
    pick = min if direction == "higher" else max
    return pick(candidates, key=lambda gv: gv[1])
