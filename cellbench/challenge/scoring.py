"""Score a challenge submission: one pass over the hidden split, two partitions, nothing leaked.

:func:`score_challenge` collects the per-sample statistics once
(:func:`cellbench.scoring.collect`, which also validates every sample), then summarises the
public and the private part of the split separately (:func:`cellbench.scoring.summarise`, with
the challenge's bootstrap settings). Only aggregates leave this module: the headline with its
interval and the aggregate metrics of each part, never per-sample values, per-group values,
confusion matrices or other details, which would tell a participant about individual hidden
labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from cellbench.challenge.prepare import PreparedChallenge
from cellbench.predictions import PredictionSet
from cellbench.report import ScoreReport
from cellbench.scoring import Collected, collect, summarise


def subset(collected: Collected, ids: Sequence[str]) -> Collected:
    """The statistics of some of the collected samples (in the collected order)."""
    keep = set(ids)
    index = [i for i, sid in enumerate(collected.sample_ids) if sid in keep]
    return replace(
        collected,
        sample_ids=[collected.sample_ids[i] for i in index],
        stats={name: [values[i] for i in index] for name, values in collected.stats.items()},
        sample_values={
            name: [values[i] for i in index] for name, values in collected.sample_values.items()
        },
    )


def aggregate_summary(report: ScoreReport, n_samples: int) -> dict[str, Any]:
    """What may be published of a report on hidden data: headline and aggregate metrics.

    Undefined values (NaN) become None (``null`` in JSON).
    """
    from cellbench.challenge.receipts import json_safe

    head = report.headline
    return json_safe(
        {
            "n_samples": n_samples,
            "headline": {
                "name": head.name,
                "value": head.value,
                "ci_low": head.ci_low,
                "ci_high": head.ci_high,
                "ci_level": head.ci_level,
                "n_bootstrap": head.n_bootstrap,
                "direction": head.direction,
            },
            "metrics": dict(report.metrics),
        }
    )


def score_challenge(challenge: PreparedChallenge, predictions: PredictionSet) -> dict[str, Any]:
    """Validate and score predictions of the hidden split; return public-safe aggregates.

    Returns:
        ``{"public": summary, "private": summary, "predictions_sha256": ...}`` (see
        :func:`aggregate_summary`).

    Raises:
        ValidationError: Listing every problem of the predictions (nothing is scored).
    """
    config = challenge.config
    collected = collect(config.task, challenge.store, config.hidden_split, predictions)
    out: dict[str, Any] = {"predictions_sha256": predictions.sha256()}
    for part, ids in (("public", challenge.public_ids), ("private", challenge.private_ids)):
        report = summarise(
            subset(collected, ids),
            n_bootstrap=config.n_bootstrap,
            seed=config.bootstrap_seed,
            groups=[],
        )
        out[part] = aggregate_summary(report, len(ids))
    return out
