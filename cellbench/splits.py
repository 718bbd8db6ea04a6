"""Deterministic, group-aware, optionally stratified train/val/test assignment.

Honest generalisation estimates need samples that share an acquisition (a plate, a well, a
patient, a time-lapse) to land in the same split; otherwise near-duplicates leak from train to
test. :func:`assign_splits` keeps every group whole, follows the requested fractions as
closely as the group sizes allow, can balance a label across splits, and gives the same result
for the same samples and seed whatever their order. :func:`describe_split` writes the sentence
that goes into the dataset card.

Algorithm (the same for every combination of options): the units are the groups (or the
single samples when ``group_by`` is None), sorted by key, shuffled with the seed and then
ordered largest size class first (sizes binned by powers of two, random order within a
class) so that big groups are placed while there is still room. Each unit in turn
goes to the split where it least increases the squared difference between achieved and target
counts, summed over the strata plus, with a smaller weight, the split sizes (targets are
``fraction x stratum size``; without ``stratify_by`` there is a single stratum); ties go to the
first split in train, val, test order. Finally a split with a non-zero fraction that is
still empty takes the unit whose move costs least from a split holding at least two units, so
every such split is non-empty whenever there are enough units. Without groups this reproduces
the fractions to within one sample per split; stratified, to within one sample per split and
stratum (split sizes within about two); with groups, to within about one group. Making a
split non-empty can move it further from a target below one sample (a fraction of 0.01 of 20
samples still gets one).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.store.sample import SPLITS, Sample

#: Fractions used when none are given.
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}

#: Weight of the split-size term next to the per-stratum terms when stratifying. Chosen on
#: 1000 random configurations (5-120 samples, 2-4 strata, random fractions): with 0.3 every
#: stratum stayed within one sample of its target in every split and split sizes within 1.4
#: samples; 1.0 lets a stratum drift by up to 2.4 samples, 0 lets split sizes drift by 2.
_SIZE_WEIGHT = 0.3

#: Mixed into the seed so split draws never coincide with a data generator's stream.
_SPLIT_STREAM = 0x5B17


def split_ids(
    ids: Sequence[str],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
    strata: Sequence[Hashable] | None = None,
    context: str = "split",
) -> dict[str, str]:
    """Assign ids to splits (the core of :func:`assign_splits`, on plain sequences).

    Args:
        ids: Unique sample ids.
        fractions: Split name (``train``, ``val``, ``test``) -> fraction of samples; the
            fractions must be non-negative and sum to 1. Missing splits get 0.
        seed: Non-negative seed.
        groups: One group value per id; ids sharing a value go to the same split.
        strata: One stratum value (e.g. a class) per id, balanced across splits.
        context: Names what is being split in error messages.

    Returns:
        Mapping id -> split name, in the order of ``ids``.

    Raises:
        ValidationError: Listing every problem (bad fractions, duplicate ids, length
            mismatches, fewer groups than splits with a non-zero fraction).
    """
    problems = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        problems.append(f"seed must be a non-negative integer, got {seed!r}")
    n = len(ids)
    if n == 0:
        problems.append("no samples to split")
    duplicates = sorted(i for i, c in Counter(ids).items() if c > 1)
    if duplicates:
        problems.append(f"duplicate sample ids: {_short_list(duplicates)}")
    for name, values in (("groups", groups), ("strata", strata)):
        if values is not None and len(values) != n:
            problems.append(f"{name} has {len(values)} values for {n} ids")
    if problems:
        raise ValidationError(problems, context)

    frac = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    active = [s for s in SPLITS if frac[s] > 0]
    unit_keys, unit_of = _codes(groups if groups is not None else list(ids))
    stratum_keys, stratum_of = _codes(strata if strata is not None else [0] * n)
    n_units, n_strata = len(unit_keys), len(stratum_keys)
    if n_units < len(active):
        what = (
            f"{n_units} group(s) ({_short_list(unit_keys)})"
            if groups is not None
            else (f"{n_units} sample(s)")
        )
        raise ValidationError(
            [
                f"cannot fill {len(active)} splits with a non-zero fraction "
                f"({', '.join(active)}) from {what}; set some fractions to 0 or group more "
                "finely"
            ],
            context,
        )

    # unit x stratum counts, targets per split x stratum
    counts = np.zeros((n_units, n_strata), dtype=np.int64)
    np.add.at(counts, (unit_of, stratum_of), 1)
    sizes = counts.sum(axis=1)
    weight = np.ones(n_strata)
    if n_strata > 1:  # the split sizes are balanced too, as a down-weighted extra stratum
        counts = np.concatenate([counts, sizes[:, None]], axis=1)
        weight = np.append(weight, _SIZE_WEIGHT)
    target = np.array([frac[s] for s in active])[:, None] * counts.sum(axis=0)[None, :]

    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SPLIT_STREAM,)))
    # largest size class first (sizes binned by powers of two), random order within a class
    shuffled = rng.permutation(n_units)
    size_class = np.floor(np.log2(sizes[shuffled])).astype(np.int64)
    order = shuffled[np.argsort(-size_class, kind="stable")]

    achieved = np.zeros_like(target)
    split_of_unit = np.full(n_units, -1, dtype=np.int64)
    for unit in order:
        v = counts[unit]
        # increase of sum_s weight_s (achieved - target)^2 if the unit joins each split
        cost = (weight * v[None, :] * (2.0 * (achieved - target) + v[None, :])).sum(axis=1)
        k = int(np.argmin(cost))  # ties: the first split in train, val, test order
        split_of_unit[unit] = k
        achieved[k] += v

    # repair: an empty split takes the unit whose move costs least from a split with >= 2
    by_fraction = sorted(range(len(active)), key=lambda k: (frac[active[k]], k))
    for k in by_fraction:
        n_units_in = np.bincount(split_of_unit, minlength=len(active))
        if n_units_in[k] > 0:
            continue
        movable = order[n_units_in[split_of_unit[order]] >= 2]
        v = counts[movable]
        d = split_of_unit[movable]
        removal = (weight * v * (v - 2.0 * (achieved[d] - target[d]))).sum(axis=1)
        addition = (weight * v * (v + 2.0 * (achieved[k] - target[k]))).sum(axis=1)
        best = int(np.argmin(removal + addition))
        unit = movable[best]
        achieved[split_of_unit[unit]] -= counts[unit]
        achieved[k] += counts[unit]
        split_of_unit[unit] = k
    return {i: active[split_of_unit[u]] for i, u in zip(ids, unit_of, strict=True)}


def assign_splits(
    samples: Sequence[Sample],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_by: str | None = None,
    stratify_by: str | None = None,
) -> list[Sample]:
    """Return copies of ``samples`` with ``split`` assigned (the inputs are not modified).

    The copies share their arrays with the inputs (no image data is copied).

    Args:
        samples: Samples with unique ids.
        fractions: Split name -> fraction of samples (non-negative, summing to 1).
        seed: Non-negative seed; the same samples (in any order) and seed give the same
            assignment.
        group_by: Key whose value must be shared by a split: ``"id"``, ``"label"`` or a
            ``metadata`` key such as ``"plate"``, ``"well"`` or ``"microscope"``.
        stratify_by: Key to balance across splits (usually ``"label"`` for classification);
            same lookup as ``group_by``.

    Returns:
        New samples in the input order.

    Raises:
        ValidationError: Listing every problem, e.g. samples lacking the ``group_by`` key or
            fewer groups than splits with a non-zero fraction.
    """
    groups = _values(samples, group_by, "group_by") if group_by else None
    strata = _values(samples, stratify_by, "stratify_by") if stratify_by else None
    mapping = split_ids(
        [s.id for s in samples], fractions, seed, groups, strata, context="assign_splits"
    )
    return [replace(s, split=mapping[s.id]) for s in samples]


def describe_split(
    samples: Sequence[Sample],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_by: str | None = None,
    stratify_by: str | None = None,
) -> str:
    """Describe how the samples were split, for a dataset card.

    The description is checked, not trusted: the splits of ``samples`` must be exactly what
    :func:`assign_splits` produces with these arguments.

    Args:
        samples: Samples whose ``split`` was set by :func:`assign_splits`.
        fractions: The fractions passed to :func:`assign_splits`.
        seed: The seed passed to :func:`assign_splits`.
        group_by: The ``group_by`` passed to :func:`assign_splits`.
        stratify_by: The ``stratify_by`` passed to :func:`assign_splits`.

    Returns:
        A paragraph: method, parameters, and per split the number and share of samples, the
        groups it holds and the stratum counts.

    Raises:
        ValidationError: When the samples' splits differ from what the arguments produce.
    """
    expected = assign_splits(samples, fractions, seed, group_by, stratify_by)
    wrong = [s.id for s, e in zip(samples, expected, strict=True) if s.split != e.split]
    if wrong:
        raise ValidationError(
            [
                f"{len(wrong)} sample(s) are not in the split these arguments produce "
                f"({_short_list(wrong)}); pass the arguments given to assign_splits"
            ],
            "describe_split",
        )
    n = len(samples)
    frac = {s: float(fractions.get(s, 0.0)) for s in SPLITS}
    active = [s for s in SPLITS if frac[s] > 0]
    parts = [
        f"Samples were assigned to {'/'.join(active)} with target fractions "
        + "/".join(f"{frac[s]:.2f}" for s in active)
        + f" by cellbench.splits.assign_splits (seed {seed})."
    ]
    groups = _values(samples, group_by, "group_by") if group_by else None
    strata = _values(samples, stratify_by, "stratify_by") if stratify_by else None
    if group_by and groups is not None:
        parts.append(
            f"Grouped by {group_by!r}: all samples sharing a {group_by} are in the same split "
            f"({len(set(groups))} groups), so no {group_by} contributes to more than one split."
        )
    if stratify_by:
        parts.append(f"Stratified by {stratify_by!r}: its values are balanced across splits.")
    for split in active:
        members = [i for i, s in enumerate(samples) if s.split == split]
        line = f"{split}: {len(members)} samples ({100.0 * len(members) / n:.1f}%)"
        if groups is not None:
            names = [str(v) for _, v in sorted({_key(groups[i]) for i in members})]
            line += f", {len(names)} {group_by} group(s): {_short_list(names)}"
        if strata is not None:
            tally = Counter(_key(strata[i]) for i in members)
            shown = ", ".join(f"{k[1]}: {tally[k]}" for k in sorted(tally))
            line += f"; {stratify_by} counts {shown}"
        parts.append(line + ".")
    return " ".join(parts)


def _check_fractions(fractions: Any) -> list[str]:
    """Every problem with a fractions mapping."""
    if not isinstance(fractions, Mapping):
        return [f"fractions must be a mapping of split name to fraction, got {fractions!r}"]
    problems = []
    unknown = [k for k in fractions if k not in SPLITS]
    if unknown:
        problems.append(f"unknown split name(s) {unknown}; expected some of {list(SPLITS)}")
    values = []
    for key, value in fractions.items():
        ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
        if not ok or not math.isfinite(float(value)) or float(value) < 0:
            problems.append(f"fraction of {key!r} must be a number >= 0, got {value!r}")
        else:
            values.append(float(value))
    if not problems:
        total = sum(values)
        if abs(total - 1.0) > 1e-6:
            shown = ", ".join(f"{k}={v}" for k, v in fractions.items())
            problems.append(f"fractions must sum to 1, got {total:g} ({shown})")
    return problems


def _values(samples: Sequence[Sample], key: str, option: str) -> list[Hashable]:
    """The value of ``key`` for every sample (``id``, ``label`` or a metadata key)."""
    out: list[Hashable] = []
    missing = []
    for s in samples:
        if key == "id":
            value: Any = s.id
        elif key == "label":
            value = s.label
        else:
            value = s.metadata.get(key)
        if value is None:
            missing.append(s.id)
        out.append(value.item() if isinstance(value, np.generic) else value)
    if missing:
        where = "label" if key == "label" else f"metadata[{key!r}]"
        raise ValidationError(
            [f"{option}={key!r}: {len(missing)} sample(s) have no {where}: {_short_list(missing)}"],
            "assign_splits",
        )
    return out


def _key(value: Hashable) -> tuple[str, str]:
    """Type-aware sort key of a group or stratum value (``1``, ``True`` and ``"1"`` differ)."""
    return (type(value).__name__, value if isinstance(value, str) else repr(value))


def _codes(values: Sequence[Hashable]) -> tuple[list[str], np.ndarray]:
    """Distinct values (as text, in sorted key order) and the index of every value among them.

    Sorting by key makes the units' order, and so the assignment, independent of the order
    of the samples.
    """
    keys = [_key(v) for v in values]
    distinct = sorted(set(keys))
    position = {k: i for i, k in enumerate(distinct)}
    return [k[1] for k in distinct], np.array([position[k] for k in keys], dtype=np.int64)


def _short_list(items: Sequence[Any], limit: int = 6) -> str:
    """``a, b, c`` or ``a, b, ... (+n more)``."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... (+{len(items) - limit} more)"
