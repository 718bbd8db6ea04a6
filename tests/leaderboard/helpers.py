"""Builders of score reports and leaderboard entries for leaderboard tests.

Reports here are inputs to the leaderboard (what scoring hands over); their numbers are chosen
by the tests, so rankings and renderings can be checked against hand-computed expectations.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cellbench.leaderboard.entry import LeaderboardEntry
from cellbench.report import GroupScores, Headline, Provenance, ScoreReport

CHECKSUM = "c" * 64
CARD = {
    "title": "Toy nuclei",
    "license": "CC-BY-4.0",
    "citation": "Toy et al. (2024). Toy nuclei.",
    "annotation": {"provenance": "simulated", "details": "generated"},
    "splits": {"method": "random by image", "seed": 0},
}


def make_report(
    value: float,
    ci: tuple[float, float] | None = None,
    *,
    dataset: str = "toy",
    version: str = "1.0",
    task: str = "instance-segmentation",
    split: str = "test",
    headline: str = "matching/f1@0.50",
    direction: str = "higher",
    metrics: dict[str, float] | None = None,
    groups: dict[str, dict[str, float]] | None = None,
    checksum: str = CHECKSUM,
    runtime_s: float | None = None,
    peak_memory_mb: float | None = None,
    results: list[dict[str, Any]] | None = None,
) -> ScoreReport:
    lo, hi = ci if ci is not None else (value - 0.05, value + 0.05)
    all_metrics = {headline: value, **(metrics or {})}
    group_list = []
    if groups:
        worst = min(groups, key=lambda g: groups[g][headline])
        group_list.append(
            GroupScores(
                field="plate",
                values=groups,
                counts={g: 2 for g in groups},
                worst_group=worst,
                worst_value=groups[worst][headline],
            )
        )
    return ScoreReport(
        task=task,
        dataset=dataset,
        dataset_version=version,
        split=split,
        headline=Headline(headline, value, direction, lo, hi, 0.95, 200, "image"),
        metrics=all_metrics,
        directions={k: direction for k in all_metrics},
        groups=group_list,
        results=results or [],
        provenance=Provenance(
            created="2024-05-01T12:00:00+00:00",
            dataset_checksum=checksum,
            predictions_sha256="p" * 64,
            runtime_s=runtime_s,
            peak_memory_mb=peak_memory_mb,
        ),
    )


def make_manifest(name: str, seed: int = 0, **over: Any) -> dict[str, Any]:
    m = {
        "name": name,
        "authors": ["A. Author"],
        "contact": "a@example.org",
        "code": {"url": "https://example.org/code", "commit": "abcdef1"},
        "paper": "",
        "training_data": "toy@1.0 train",
        "n_parameters": 1000,
        "seed": seed,
        "hardware": "cpu",
        "license": "MIT",
        "task": "instance-segmentation",
        "dataset": "toy@1.0",
        "split": "test",
        "kind": "predictions",
        "submission": "preds.zarr",
        "notes": "",
    }
    m.update(over)
    return m


def make_entry(name: str, value: float, seed: int = 0, **report_kw: Any) -> LeaderboardEntry:
    manifest_over = report_kw.pop("manifest", {})
    report = make_report(value, **report_kw)
    return LeaderboardEntry(
        manifest=make_manifest(name, seed, task=report.task, **manifest_over),
        report=report,
        submission_sha256=hashlib.sha256(f"{name}:{seed}".encode()).hexdigest(),
        submitted=f"2024-05-0{1 + seed % 9}T12:00:00+00:00",
        dataset_card=dict(CARD),
    )


def add_one(root: str, name: str, seed: int, barrier: Any) -> str:
    """Store one entry after all processes reached the barrier (for concurrency tests)."""
    from cellbench.leaderboard.store import EntryExistsError, LeaderboardStore

    entry = make_entry(name, 0.5 + seed / 100, seed=seed)
    barrier.wait()
    try:
        LeaderboardStore(root).add(entry)
        return "ok"
    except EntryExistsError:
        return "exists"


def add_as_author(root: str, author: str, seed: int, barrier: Any) -> str:
    """Store entry "contested" by ``author`` after every process reached the barrier."""
    from cellbench.errors import ValidationError
    from cellbench.leaderboard.store import LeaderboardStore

    entry = make_entry("contested", 0.5, seed=seed, manifest={"authors": [author]})
    barrier.wait()
    try:
        LeaderboardStore(root).add(entry)
        return "ok"
    except ValidationError as err:
        return "refused" if "already used" in str(err) else f"error: {err}"
