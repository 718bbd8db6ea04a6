"""Ranking: replicates aggregated per entry, ordered by the headline metric, ties made visible.

Rules (also printed on every rendered leaderboard, see :data:`RANKING_RULES`):

1. Replicates (the same entry name submitted with different seeds) are aggregated: every metric
   is shown as the mean over seeds and the sample standard deviation (``ddof=1``; none for a
   single seed). Entries with fewer than :data:`MIN_SEEDS` seeds are flagged.
2. The headline's 95% interval of an entry is the bootstrap interval over test samples computed
   by scoring; for several seeds it is the mean of the replicates' interval bounds (the typical
   test-sampling interval, centred near the mean). Seed-to-seed variation is the ``± std``.
3. Entries are ordered by the mean headline value in the task's direction; an entry whose value
   is missing (NaN) ranks last. Entries with equal values share a rank (competition ranking:
   1, 2, 2, 4).
4. Each entry is compared with the entry ranked directly above it by a **paired bootstrap** of
   the difference of their headlines (:func:`paired_difference`): scoring keeps the headline of
   every bootstrap resample, and resample ``b`` draws the same test samples for every entry of
   the board (same seed, same ordered samples), so the difference is taken resample by
   resample; sample difficulty, shared by both entries, cancels. For entries with several
   seeds, every resample also draws the seeds with replacement (a two-level bootstrap), so
   seed-to-seed variance widens the interval. ``≈`` marks an entry whose 95% interval of the
   difference contains 0: not shown to differ from the entry above. When either entry's report
   has no replicates (reports from before they were kept), the comparison falls back to the
   overlap of the two 95% intervals, which is conservative, and says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellbench._version import __version__
from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry
from cellbench.leaderboard.formatting import json_number

MIN_SEEDS = 3
LEADERBOARD_SCHEMA_VERSION = 1
RANKING_RULES = (
    "Ranked by the mean headline value over seeds, in the metric's direction; missing values "
    "rank last; equal values share a rank.",
    "± is the standard deviation over replicate seeds (ddof=1); entries with fewer than "
    f"{MIN_SEEDS} seeds are flagged.",
    "The interval is the 95% bootstrap interval over test samples (for several seeds: the mean "
    "of the replicates' bounds).",
    "'≈' marks an entry not shown to differ from the entry directly above: the 95% paired "
    "bootstrap interval of their difference (same resampled test samples, seeds resampled too) "
    "contains 0; without paired replicates, their 95% intervals overlap (a conservative check).",
)
PAIRED = "paired bootstrap"
PAIRED_SEEDS = "paired bootstrap over samples and seeds"
OVERLAP = "interval overlap (no paired replicates)"


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


@dataclass
class Summary:
    """Mean and spread of one metric over an entry's replicates.

    Attributes:
        mean: Mean over replicates (NaN if any replicate's value is missing).
        std: Sample standard deviation over replicates (NaN for a single replicate).
        n: Number of replicates.
        values: The per-replicate values, in seed order.
        ci_low: Lower interval bound (headline only; NaN otherwise).
        ci_high: Upper interval bound (headline only; NaN otherwise).
    """

    mean: float
    std: float
    n: int
    values: list[float]
    ci_low: float = float("nan")
    ci_high: float = float("nan")

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise per-replicate values (``None`` counts as missing)."""
        arr = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf (PSNR of perfect predictions)
            mean = float(arr.mean()) if arr.size else float("nan")
            std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
        return cls(mean=mean, std=std, n=int(arr.size), values=arr.tolist())

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN as ``null``)."""
        out: dict[str, Any] = {
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "values": self.values,
        }
        if _finite(self.ci_low) or _finite(self.ci_high):
            out["ci_low"] = self.ci_low
            out["ci_high"] = self.ci_high
        out["values"] = [json_number(v) for v in self.values]
        return {k: json_number(v) if not isinstance(v, list) else v for k, v in out.items()}


@dataclass
class Comparison:
    """An entry against the entry ranked directly above it.

    Attributes:
        method: :data:`PAIRED`, :data:`PAIRED_SEEDS` or :data:`OVERLAP`.
        difference: Headline of the entry above minus this one's, oriented so that a positive
            difference means the entry above is better (NaN for :data:`OVERLAP`).
        ci_low: Lower bound of the difference's interval (NaN for :data:`OVERLAP`).
        ci_high: Upper bound of the difference's interval (NaN for :data:`OVERLAP`).
        n_resamples: Bootstrap resamples used (0 for :data:`OVERLAP`).
        not_separated: The interval contains 0 (or, for :data:`OVERLAP`, the two headline
            intervals overlap): not shown to differ.
    """

    method: str
    difference: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    n_resamples: int = 0
    not_separated: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form (NaN as ``null``)."""
        return {
            "method": self.method,
            "difference": json_number(self.difference),
            "ci_low": json_number(self.ci_low),
            "ci_high": json_number(self.ci_high),
            "n_resamples": self.n_resamples,
            "not_separated": self.not_separated,
        }


@dataclass
class RankedEntry:
    """One row of a leaderboard: an entry with its replicates aggregated.

    Attributes:
        rank: Competition rank (1 is best; equal values share a rank).
        name: Entry name.
        replicates: The entry's replicate entries, in seed order.
        headline: Headline summary with its interval.
        metrics: Summary of every metric key.
        tied_with_above: Same headline value as the entry directly above.
        overlaps_above: Interval overlaps that of the entry directly above.
        flags: Warnings shown next to the entry (few seeds, different dataset build, ...).
        vs_above: Comparison with the entry directly above (None for the first row).
    """

    rank: int
    name: str
    replicates: list[LeaderboardEntry]
    headline: Summary
    metrics: dict[str, Summary]
    tied_with_above: bool = False
    overlaps_above: bool = False
    flags: list[str] = field(default_factory=list)
    vs_above: Comparison | None = None

    @property
    def similar_to_above(self) -> bool:
        """Not shown to differ from the entry above (the ``≈`` mark)."""
        return self.vs_above is not None and self.vs_above.not_separated

    @property
    def seeds(self) -> list[int]:
        """Replicate seeds, sorted."""
        return [e.seed for e in self.replicates]

    @property
    def few_seeds(self) -> bool:
        """Fewer than :data:`MIN_SEEDS` replicates."""
        return len(self.replicates) < MIN_SEEDS

    @property
    def manifest(self) -> dict[str, Any]:
        """Manifest of the most recently submitted replicate (authors, code, paper, ...)."""
        return max(self.replicates, key=lambda e: e.submitted).manifest

    @property
    def submitted(self) -> str:
        """Time of the most recent replicate."""
        return max(e.submitted for e in self.replicates)

    def resource(self, name: str) -> Summary | None:
        """Summary of ``runtime_s`` or ``peak_memory_mb`` over replicates (None if unmeasured)."""
        values = [getattr(e.report.provenance, name) for e in self.replicates]
        if all(v is None for v in values):
            return None
        return Summary.of(values)

    def to_dict(self) -> dict[str, Any]:
        """JSON form of the row."""
        m = self.manifest
        code = m.get("code") if isinstance(m.get("code"), dict) else {}
        runtime, memory = self.resource("runtime_s"), self.resource("peak_memory_mb")
        return {
            "rank": self.rank,
            "name": self.name,
            "authors": list(m.get("authors") or []),
            "contact": m.get("contact", ""),
            "code_url": code.get("url", ""),
            "code_commit": code.get("commit", ""),
            "paper": m.get("paper", ""),
            "license": m.get("license", ""),
            "kind": m.get("kind", ""),
            "training_data": m.get("training_data", ""),
            "n_parameters": m.get("n_parameters"),
            "hardware": m.get("hardware", ""),
            "seeds": self.seeds,
            "n_seeds": len(self.replicates),
            "few_seeds": self.few_seeds,
            "headline": self.headline.to_dict(),
            "metrics": {k: s.to_dict() for k, s in sorted(self.metrics.items())},
            "tied_with_above": self.tied_with_above,
            "overlaps_above": self.overlaps_above,
            "similar_to_above": self.similar_to_above,
            "vs_above": self.vs_above.to_dict() if self.vs_above else None,
            "flags": list(self.flags),
            "runtime_s": runtime.to_dict() if runtime else None,
            "peak_memory_mb": memory.to_dict() if memory else None,
            "submitted": self.submitted,
            "entries": [
                {
                    "entry_id": e.entry_id,
                    "seed": e.seed,
                    "submission_sha256": e.submission_sha256,
                    "manifest_sha256": e.manifest_sha256,
                    "dataset_checksum": e.report.provenance.dataset_checksum,
                    "cellbench_version": e.report.provenance.cellbench_version,
                    "submitted": e.submitted,
                }
                for e in self.replicates
            ],
        }


@dataclass
class Leaderboard:
    """A ranked leaderboard for one (dataset version, task, split).

    Attributes:
        key: Which leaderboard.
        headline: Flat key of the ranking metric (e.g. ``"coco_ap/ap"``).
        direction: ``"higher"`` or ``"lower"``.
        ci_level: Coverage of the headline intervals.
        rows: Ranked rows, best first.
        metric_keys: Every metric key shown, headline first, then sorted.
        directions: Direction of each metric key.
        dataset_checksum: Checksum of the dataset build most entries were scored on.
        dataset_card: Snapshot of the dataset card.
        notes: Remarks about the board (inconsistent entries, report notes).
    """

    key: BoardKey
    headline: str
    direction: str
    ci_level: float
    rows: list[RankedEntry]
    metric_keys: list[str]
    directions: dict[str, str]
    dataset_checksum: str
    dataset_card: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (deterministic: no generation timestamp)."""
        return {
            "schema_version": LEADERBOARD_SCHEMA_VERSION,
            "board": self.key.to_dict(),
            "headline": {
                "metric": self.headline,
                "direction": self.direction,
                "ci_level": self.ci_level,
            },
            "ranking_rules": list(RANKING_RULES),
            "metrics": [
                _metric_info(k, self.directions.get(k, "higher")) for k in self.metric_keys
            ],
            "dataset_checksum": self.dataset_checksum,
            "dataset_card": self.dataset_card,
            "rows": [r.to_dict() for r in self.rows],
            "notes": list(self.notes),
            "cellbench_version": __version__,
        }


def _metric_info(key: str, direction: str) -> dict[str, Any]:
    """A metric's key, human name, unit, kind and definition; a direction for quality values."""
    from cellbench.leaderboard.glossary import describe

    info = describe(key)
    return {
        "key": key,
        "name": info.name,
        "unit": info.unit,
        "kind": info.kind,
        "definition": info.definition,
        "direction": None if info.is_count else direction,
    }


def _order_value(value: float, direction: str) -> tuple[int, float]:
    if value is None or math.isnan(value):  # missing ranks last; ±inf is a real value
        return (1, 0.0)
    return (0, -value if direction == "higher" else value)


def _equal(a: float, b: float) -> bool:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return False
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def rank_entries(key: BoardKey, entries: Iterable[LeaderboardEntry]) -> Leaderboard:
    """Aggregate replicates and rank the entries of one leaderboard.

    Args:
        key: The leaderboard.
        entries: Its entries (any order; replicates share the entry name).

    Returns:
        The ranked :class:`Leaderboard`.

    Raises:
        ValueError: If there are no entries, or an entry belongs to another board.
    """
    entries = list(entries)
    if not entries:
        raise ValueError(f"leaderboard {key.path} has no entries")
    wrong = [e.entry_id for e in entries if e.key != key]
    if wrong:
        raise ValueError(f"entries {wrong} do not belong to leaderboard {key.path}")

    notes: list[str] = []
    heads = Counter((e.report.headline.name, e.report.headline.direction) for e in entries)
    (headline, direction), _ = heads.most_common(1)[0]
    if len(heads) > 1:
        notes.append(
            "entries were scored with different headline metrics "
            f"({', '.join(f'{h} ({d})' for h, d in heads)}); ranked by {headline} ({direction})"
        )
    checksums = Counter(e.report.provenance.dataset_checksum for e in entries)
    dataset_checksum = checksums.most_common(1)[0][0]
    ci_level = entries[0].report.headline.ci_level

    groups: dict[str, list[LeaderboardEntry]] = {}
    for e in entries:
        groups.setdefault(e.name, []).append(e)

    directions: dict[str, str] = {}
    for e in entries:
        directions.update(e.report.directions)
    all_keys = sorted({k for e in entries for k in e.report.metrics} | {headline})
    metric_keys = [headline] + [k for k in all_keys if k != headline]
    directions.setdefault(headline, direction)

    rows: list[RankedEntry] = []
    for name, reps in groups.items():
        reps = sorted(reps, key=lambda e: (e.seed, e.submitted))
        head_values = [
            e.report.headline.value
            if e.report.headline.name == headline
            else e.report.metrics.get(headline)
            for e in reps
        ]
        head = Summary.of(head_values)
        same_head = [e for e in reps if e.report.headline.name == headline]
        if same_head:
            head.ci_low = float(np.mean([e.report.headline.ci_low for e in same_head]))
            head.ci_high = float(np.mean([e.report.headline.ci_high for e in same_head]))
        metrics = {k: Summary.of([e.report.metrics.get(k) for e in reps]) for k in metric_keys}
        metrics[headline] = head
        flags = []
        if len(reps) < MIN_SEEDS:
            flags.append(f"{len(reps)} seed{'s' if len(reps) != 1 else ''} (< {MIN_SEEDS})")
        off = [e.seed for e in reps if e.report.provenance.dataset_checksum != dataset_checksum]
        if off:
            flags.append(
                f"seed(s) {off} scored on a different dataset build "
                f"(checksum differs from {dataset_checksum[:12]})"
            )
        seeds = [e.seed for e in reps]
        if len(set(seeds)) != len(seeds):
            flags.append("duplicate seeds among replicates")
        rows.append(RankedEntry(0, name, reps, head, metrics, flags=flags))

    rows.sort(key=lambda r: (_order_value(r.headline.mean, direction), r.name))
    for i, row in enumerate(rows):
        if i == 0:
            row.rank = 1
            continue
        above = rows[i - 1]
        if _equal(row.headline.mean, above.headline.mean):
            row.rank = above.rank
            row.tied_with_above = True
        else:
            row.rank = i + 1
        lo, hi = row.headline.ci_low, row.headline.ci_high
        alo, ahi = above.headline.ci_low, above.headline.ci_high
        if all(_finite(v) for v in (lo, hi, alo, ahi)):
            row.overlaps_above = max(lo, alo) <= min(hi, ahi)
        row.vs_above = compare(above, row, headline, direction, ci_level)

    card: dict[str, Any] = {}
    for e in sorted(entries, key=lambda e: e.submitted):
        card.update(e.dataset_card)
    report_notes = Counter(n for e in entries for n in e.report.notes)
    notes.extend(sorted(report_notes))
    return Leaderboard(
        key=key,
        headline=headline,
        direction=direction,
        ci_level=ci_level,
        rows=rows,
        metric_keys=metric_keys,
        directions=directions,
        dataset_checksum=dataset_checksum,
        dataset_card=card,
        notes=notes,
    )


def replicate_matrix(row: RankedEntry, headline: str) -> tuple[np.ndarray, str] | None:
    """The headline's bootstrap replicates of every seed of an entry, ``(n_seeds, B)``.

    Returns:
        The matrix and the resamples digest, or None when a replicate lacks them (or they
        were drawn differently).
    """
    reps = [e.report.headline for e in row.replicates]
    if not reps or any(h.name != headline or not h.replicates or not h.resamples for h in reps):
        return None
    if len({h.resamples for h in reps}) != 1 or len({len(h.replicates) for h in reps}) != 1:
        return None
    return np.asarray([h.replicates for h in reps], dtype=np.float64), reps[0].resamples


def paired_difference(
    above: np.ndarray,
    below: np.ndarray,
    direction: str = "higher",
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Bootstrap interval of the difference between two entries, paired resample by resample.

    ``above[s, b]`` and ``below[s, b]`` are the headline of seed ``s`` on bootstrap resample
    ``b`` (the same test samples for both entries). With one seed each, the difference on
    resample ``b`` is ``above[0, b] - below[0, b]``. With several seeds, resample ``b`` also
    draws each entry's seeds with replacement (independently for the two entries) and
    compares the means of the drawn seeds' replicates ``b``, so seed-to-seed variance enters
    the interval. Resamples where either side is undefined (NaN, or an infinity on both sides)
    are dropped; the interval is the percentile interval of the differences.

    Args:
        above: ``(n_seeds_above, B)`` replicates of the better-ranked entry.
        below: ``(n_seeds_below, B)`` replicates of the other entry.
        direction: ``higher`` or ``lower``: the difference is oriented so that a positive value
            means ``above`` is better.
        level: Coverage of the interval.
        seed: Seed of the seed resampling (unused with one seed per entry).

    Returns:
        ``(mean of the paired differences, low, high, resamples used)``; NaN values and 0
        resamples when nothing is left.
    """
    a = np.atleast_2d(np.asarray(above, dtype=np.float64))
    b = np.atleast_2d(np.asarray(below, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"replicates differ in length: {a.shape[1]} and {b.shape[1]}")
    n = a.shape[1]
    rng = np.random.default_rng(seed)
    cols = np.arange(n)[:, None]

    def seed_means(m: np.ndarray) -> np.ndarray:
        if m.shape[0] == 1:
            return m[0]
        draws = rng.integers(0, m.shape[0], (n, m.shape[0]))
        return m[draws, cols].mean(axis=1)

    with np.errstate(invalid="ignore"):
        diff = seed_means(a) - seed_means(b)
    if direction == "lower":
        diff = -diff
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    alpha = (1.0 - level) / 2.0
    return (
        float(diff.mean()),
        float(np.quantile(diff, alpha)),
        float(np.quantile(diff, 1.0 - alpha)),
        int(diff.size),
    )


def compare(
    above: RankedEntry, row: RankedEntry, headline: str, direction: str, level: float = 0.95
) -> Comparison:
    """Compare a row with the row ranked directly above it (see rule 4 of the module)."""
    a = replicate_matrix(above, headline)
    b = replicate_matrix(row, headline)
    if a is not None and b is not None and a[1] == b[1]:
        _, lo, hi, n = paired_difference(a[0], b[0], direction, level)
        if n:
            method = PAIRED_SEEDS if max(a[0].shape[0], b[0].shape[0]) > 1 else PAIRED
            with np.errstate(invalid="ignore"):
                diff = above.headline.mean - row.headline.mean
            diff = -diff if direction == "lower" else diff
            return Comparison(method, diff, lo, hi, n, bool(lo <= 0.0 <= hi))
    return Comparison(OVERLAP, not_separated=row.overlaps_above)
