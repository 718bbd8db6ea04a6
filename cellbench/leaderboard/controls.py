"""Controls: reference predictions cellbench computes and scores itself for every board.

Each task declares its controls (:meth:`cellbench.tasks.base.Task.controls`): a classical method
(Otsu + watershed, the input image, nearest-neighbour linking, the majority class) and, where
meaningful, the perfect prediction (the ground truth) and the empty one. :func:`compute_controls`
predicts and scores them on the board's split exactly like a submission (same bootstrap seed
and resamples, so entries are compared with them pairwise) and returns them as leaderboard
entries whose manifest says ``kind: control``; :func:`add_controls` stores them in the board's
``controls/`` folder, which only cellbench writes (submissions cannot claim ``kind: control``).

Publishing shows controls beside the ranking, marked as such and not ranked, and derives the
**normalised score** of every entry from them (:func:`normalised`)::

    normalised = (x - best control) / (perfect - best control)

with ``best control`` the best headline among the non-perfect controls (the classical
reference or the empty prediction, whichever scores better) and ``perfect`` the perfect
control's headline. 0 means "no better than the best simple baseline", 1 "perfect"; negative
values are worse than the baseline. Boards without a perfect control (or where the two anchors
coincide) have no normalised score.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from cellbench._version import __version__
from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry, card_snapshot
from cellbench.leaderboard.store import LeaderboardStore

CONTROL_KIND = "control"
CELLBENCH_URL = "https://github.com/cellbench/cellbench"
#: Bootstrap resamples and seed of control scores (the defaults of ``cellbench submit``, so
#: controls and entries draw the same resamples and are compared pairwise).
N_BOOTSTRAP = 1000
SEED = 0


def control_name(name: str) -> str:
    """Entry name of a control (``control: Otsu + watershed``)."""
    return f"control: {name}"


def is_control(entry: LeaderboardEntry) -> bool:
    """Whether an entry is a control computed by cellbench."""
    return entry.manifest.get("kind") == CONTROL_KIND


def control_kind(entry: LeaderboardEntry) -> str:
    """``reference``, ``perfect`` or ``empty``."""
    return str(entry.manifest.get("control", "reference"))


def compute_controls(
    key: BoardKey,
    store: Any = None,
    *,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = SEED,
    progress: Callable[[str], None] | None = None,
) -> list[LeaderboardEntry]:
    """Predict and score every control of a board's task on its dataset split.

    Args:
        key: The board.
        store: The dataset (an opened store, a path or ``id@version``); default ``key.ref``.
        n_bootstrap: Bootstrap resamples of the headline interval.
        seed: Bootstrap seed.
        progress: Called with a line before each control is computed.

    Returns:
        One entry per control, in the task's order.

    Raises:
        CellbenchError: If the dataset is not available or does not serve the task.
    """
    from cellbench.predictions import PredictionSet
    from cellbench.registry import open_dataset
    from cellbench.scoring import collect, summarise
    from cellbench.tasks import get_task

    task = get_task(key.task)
    ds = open_dataset(store if store is not None else key.ref)
    task.check_dataset(ds)
    out = []
    for control in task.controls(ds, key.split):
        if progress:
            progress(f"{key.path}: control {control.name}")
        predictions = control.predict(ds, ds.sample_ids(key.split))
        pset = PredictionSet.from_predictions(
            task.name,
            list(predictions.values()),
            ds.id,
            ds.version,
            key.split,
            producer={"control": control.name, "cellbench": __version__},
        )
        report = summarise(collect(task, ds, key.split, pset), n_bootstrap=n_bootstrap, seed=seed)
        sha = pset.sha256()
        manifest = {
            "name": control_name(control.name),
            "authors": ["cellbench"],
            "contact": CELLBENCH_URL,
            "code": {"url": CELLBENCH_URL, "commit": ""},
            "paper": "",
            "training_data": "none (computed from the test images)"
            if control.kind == "reference"
            else "ground truth"
            if control.kind == "perfect"
            else "none",
            "n_parameters": 0,
            "seed": 0,
            "hardware": "",
            "license": "BSD-3-Clause",
            "task": key.task,
            "dataset": key.ref,
            "split": key.split,
            "kind": CONTROL_KIND,
            "control": control.kind,
            "submission": "",
            "notes": control.description,
        }
        report.provenance.extra["control"] = {"name": control.name, "kind": control.kind}
        out.append(
            LeaderboardEntry(
                manifest=manifest,
                report=report,
                submission_sha256=sha,
                submitted=datetime.now(UTC).isoformat(timespec="seconds"),
                dataset_card=card_snapshot(ds.card),
            )
        )
    return out


def add_controls(
    lb: LeaderboardStore,
    key: BoardKey,
    store: Any = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Compute a board's controls and store them in its ``controls/`` folder.

    Returns:
        The paths written.
    """
    return [lb.put_control(e) for e in compute_controls(key, store, progress=progress)]


def anchors(controls: Sequence[Any], direction: str) -> tuple[Any, Any] | None:
    """The normalisation anchors among ranked control rows: ``(best control, perfect)``.

    Args:
        controls: Control rows (:class:`~cellbench.leaderboard.ranking.RankedEntry`).
        direction: The headline's direction.

    Returns:
        The best non-perfect control and the perfect control, or None when either is missing
        or they have the same value.
    """
    import math

    perfect = [c for c in controls if control_kind(c.replicates[0]) == "perfect"]
    others = [
        c
        for c in controls
        if control_kind(c.replicates[0]) != "perfect" and math.isfinite(c.headline.mean)
    ]
    if not perfect or not others or not math.isfinite(perfect[0].headline.mean):
        return None
    pick = min if direction == "lower" else max
    best = pick(others, key=lambda c: c.headline.mean)
    if best.headline.mean == perfect[0].headline.mean:
        return None
    return best, perfect[0]


def normalised(value: float, zero: float, one: float) -> float:
    """``(value - zero) / (one - zero)``: 0 at the best control, 1 at perfect (NaN if undefined)."""
    import math

    if not all(math.isfinite(v) for v in (value, zero, one)) or one == zero:
        return float("nan")
    return (value - zero) / (one - zero)


def controls_digest(entries: Sequence[LeaderboardEntry]) -> str:
    """A digest of a board's controls (for caches)."""
    h = hashlib.sha256()
    for e in entries:
        h.update(e.submission_sha256.encode())
        h.update(str(e.report.headline.value).encode())
    return h.hexdigest()
