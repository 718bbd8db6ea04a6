"""Submissions: manifests, model packages and their safety checks, scoring with provenance.

A submission is either predictions for a dataset split (anything
:func:`cellbench.predictions.load_predictions` reads) or a model that cellbench runs itself:
TorchScript or ONNX following the I/O convention of :mod:`cellbench.submissions.runners`, or a
safetensors model package of one of cellbench's baselines. A YAML manifest travels with it
(:mod:`cellbench.submissions.manifest`; ``cellbench submit --init`` writes a template).
Model files are vetted before anything is loaded (:mod:`cellbench.submissions.safety` states
the threat model); pickles are never loaded.

Typical use::

    from cellbench.submissions import submit

    result = submit("my-entry/submission.yaml", root="leaderboards")
    print(result.report.headline.value, result.entry_path)
"""

from __future__ import annotations

from cellbench.submissions.core import (
    SubmissionResult,
    add_report,
    evaluate_submission,
    submit,
    task_problems,
)
from cellbench.submissions.manifest import (
    KINDS,
    TEMPLATE,
    SubmissionManifest,
    load_manifest,
    manifest_problems,
    parse_manifest,
    write_template,
)
from cellbench.submissions.measure import ResourceMonitor, ResourceUsage
from cellbench.submissions.safety import DEFAULT_LIMITS, Limits

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "TEMPLATE",
    "Limits",
    "ResourceMonitor",
    "ResourceUsage",
    "SubmissionManifest",
    "SubmissionResult",
    "add_report",
    "evaluate_submission",
    "load_manifest",
    "manifest_problems",
    "parse_manifest",
    "submit",
    "task_problems",
    "write_template",
]
