"""The ScoreReport: the one object that scoring hands to submissions and leaderboards.

A report holds every metric value of one prediction set on one dataset split, the task's
headline metric with its bootstrap confidence interval, per-group and worst-group values and
the provenance needed to reproduce it. It round-trips losslessly through JSON.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellbench._version import __version__
from cellbench.errors import CellbenchError

SCHEMA_VERSION = 1


def to_jsonable(value: Any) -> Any:
    """Make values JSON-safe: numpy to Python, NaN to None, ±inf to "inf"/"-inf", tuples to lists.

    JSON has no NaN or infinity; PSNR of a perfect prediction is legitimately +inf.
    """
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def _nan(value: Any) -> Any:
    """Inverse of :func:`to_jsonable` for a number: None is NaN, "inf"/"-inf" infinite."""
    if value is None:
        return float("nan")
    if value in ("inf", "-inf"):
        return float(value)
    return value


@dataclass
class Headline:
    """The task's ranking metric with its uncertainty.

    Attributes:
        name: Flat metric key as in :attr:`ScoreReport.metrics` (e.g. ``"coco_ap/ap"``).
        value: Value on the whole split.
        direction: ``"higher"`` or ``"lower"``: which direction is better.
        ci_low: Lower bound of the bootstrap confidence interval.
        ci_high: Upper bound of the bootstrap confidence interval.
        ci_level: Coverage of the interval (0.95 by default).
        n_bootstrap: Number of bootstrap resamples.
        resampling_unit: What was resampled (``"image"`` or ``"sequence"``).
        replicates: The headline on each bootstrap resample, in resample order (NaN where it is
            undefined); empty when not kept. Two reports whose :attr:`resamples` agree drew
            the same samples in resample ``b``, so their replicates can be compared pairwise
            (the leaderboard's paired comparison).
        resamples: Digest identifying the resamples: the bootstrap seed, the number of
            resamples and the ordered sample ids (empty when replicates are not kept).
    """

    name: str
    value: float
    direction: str
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    ci_level: float = 0.95
    n_bootstrap: int = 0
    resampling_unit: str = "image"
    replicates: list[float] = field(default_factory=list)
    resamples: str = ""


@dataclass
class GroupScores:
    """Metric values per value of one metadata field (plate, microscope, cell line, ...).

    Attributes:
        field: Metadata column used for grouping.
        values: ``{group: {metric key: value}}``.
        counts: Number of samples per group.
        worst_group: Group with the worst headline value.
        worst_value: That worst headline value.
    """

    field: str
    values: dict[str, dict[str, float]]
    counts: dict[str, int]
    worst_group: str | None = None
    worst_value: float = float("nan")


@dataclass
class Provenance:
    """Where a report came from.

    Attributes:
        cellbench_version: Version that computed the scores.
        created: ISO-8601 UTC timestamp.
        dataset_checksum: Checksum of the dataset manifest the ground truth was read from.
        predictions_sha256: sha256 of the scored predictions (file or canonical directory digest).
        environment: Versions of Python, torch, numpy and friends.
        runtime_s: Inference wall time for model submissions, else ``None``.
        peak_memory_mb: Peak resident memory of inference for model submissions, else ``None``.
        extra: Anything else worth keeping (command line, submission manifest digest).
    """

    cellbench_version: str = __version__
    created: str = ""
    dataset_checksum: str = ""
    predictions_sha256: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    runtime_s: float | None = None
    peak_memory_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreReport:
    """Scores of one prediction set on one split of one dataset version for one task.

    Attributes:
        task: Task name (``"instance-segmentation"``, ...).
        dataset: Dataset id.
        dataset_version: Dataset version.
        split: Split scored (``"test"`` usually).
        headline: Ranking metric with confidence interval.
        metrics: Every scalar value, keyed ``"<metric>/<value>"``.
        directions: ``"higher"``/``"lower"`` per key of :attr:`metrics`.
        groups: Per-group values for each grouping field of the task.
        per_sample: ``{sample_id: {metric key: value}}``.
        results: Full metric results (params, details such as curves and matrices).
        notes: Remarks that change how numbers read (e.g. the COCO ``maxDets`` used).
        provenance: Versions, checksums and timestamps.
        schema_version: Version of this report layout.
    """

    task: str
    dataset: str
    dataset_version: str
    split: str
    headline: Headline
    metrics: dict[str, float]
    directions: dict[str, str] = field(default_factory=dict)
    groups: list[GroupScores] = field(default_factory=list)
    per_sample: dict[str, dict[str, float]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: Provenance = field(default_factory=Provenance)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary (NaN is written as ``null``)."""
        return to_jsonable(asdict(self))

    def to_json(self, indent: int = 2) -> str:
        """Serialise to JSON text with sorted keys (diff-friendly)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreReport:
        """Rebuild a report from :meth:`to_dict` output."""
        data = dict(data)
        if data.get("schema_version", SCHEMA_VERSION) > SCHEMA_VERSION:
            raise ValueError(
                f"report schema {data['schema_version']} is newer than this cellbench "
                f"understands ({SCHEMA_VERSION}); upgrade cellbench"
            )
        head = {k: _nan(v) for k, v in data.pop("headline").items()}
        head["replicates"] = [float(_nan(v)) for v in head.get("replicates") or []]
        groups = [
            GroupScores(
                field=g["field"],
                values={
                    k: {m: _nan(v) for m, v in vals.items()} for k, vals in g["values"].items()
                },
                counts=g["counts"],
                worst_group=g.get("worst_group"),
                worst_value=_nan(g.get("worst_value")),
            )
            for g in data.pop("groups", [])
        ]
        prov = Provenance(**data.pop("provenance", {}))
        metrics = {k: _nan(v) for k, v in data.pop("metrics").items()}
        per_sample = {
            s: {k: _nan(v) for k, v in vals.items()}
            for s, vals in data.pop("per_sample", {}).items()
        }
        return cls(
            headline=Headline(**head),
            groups=groups,
            provenance=prov,
            metrics=metrics,
            per_sample=per_sample,
            **data,
        )

    @classmethod
    def from_json(cls, text: str) -> ScoreReport:
        """Parse JSON text written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path | str:
        """Write the report as JSON atomically (temporary file + rename).

        Args:
            path: Destination file, or an fsspec URL (``s3://bucket/report.json``: one PUT of
                the whole document, which object stores make visible all at once or not at
                all).

        Returns:
            The path (or URL) written.
        """
        from cellbench.store.location import is_remote, local_path

        if is_remote(path):
            from cellbench.store.remote import filesystem

            try:
                fs, key = filesystem(path)
                fs.pipe_file(key, (self.to_json() + "\n").encode("utf-8"))
            except Exception as err:  # network and backend errors have no common base class
                raise CellbenchError(
                    f"{path}: the report cannot be written ({type(err).__name__}: {err})"
                ) from None
            return path
        path = local_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CellbenchError(f"{path}: the report cannot be written ({err})") from None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.to_json())
                fh.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScoreReport:
        """Read a report written by :meth:`save` (a local path or an fsspec URL)."""
        from cellbench.store.location import is_remote, local_path

        if is_remote(path):
            from cellbench.store.remote import filesystem

            try:
                fs, key = filesystem(path)
                raw = fs.cat_file(key)
            except FileNotFoundError:
                raise CellbenchError(f"{path}: no such report") from None
            except Exception as err:  # network and backend errors have no common base class
                raise CellbenchError(
                    f"{path}: the report cannot be read ({type(err).__name__}: {err})"
                ) from None
            return cls.from_json(raw.decode("utf-8"))
        return cls.from_json(local_path(path).read_text(encoding="utf-8"))
