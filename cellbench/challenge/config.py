"""A challenge declared in YAML: what is scored, on what, for whom, until when.

Example (``examples/challenge.yaml``)::

    id: nuclei-challenge
    title: Segment synthetic nuclei
    dataset: synthetic-nuclei@1.0
    task: instance-segmentation
    hidden_split: test
    accepts: [predictions, torchscript, onnx, safetensors]
    limits:
      submissions_per_day: 5
      max_upload: 256MB
      max_model_runtime_s: 600
      max_model_memory: 4GB
    partition: {public_fraction: 0.5, group_by: well, seed: 0}
    public_metadata: [plate, microscope]
    scoring: {n_bootstrap: 1000, bootstrap_seed: 0}
    phases:
      - {name: open, deadline: 2030-01-01T00:00:00Z}

Every problem of a file is listed at once (:class:`~cellbench.errors.ValidationError`);
unknown keys are refused, so a typo does not silently change the rules. YAML is read with
:func:`strict_yaml`: bounded size and depth, no aliases, no duplicate keys (also used for the
manifests that clients upload).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellbench import strict_yaml as strict_yaml_module
from cellbench.errors import ValidationError

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_KINDS = ("predictions", "torchscript", "onnx", "safetensors")
_TOP = (
    "id",
    "title",
    "description",
    "rules",
    "dataset",
    "task",
    "hidden_split",
    "accepts",
    "limits",
    "partition",
    "public_metadata",
    "scoring",
    "metric_parameters",
    "phases",
)
_LIMITS = (
    "submissions_per_day",
    "max_upload",
    "max_model_runtime_s",
    "max_model_memory",
)
#: Largest YAML document read (challenge files and uploaded manifests).
MAX_YAML_BYTES = strict_yaml_module.MAX_BYTES


def strict_yaml(text: str | bytes, where: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse YAML from an untrusted source with :func:`cellbench.strict_yaml.load`'s budgets.

    Bounded size, depth, node count and numbers; no aliases or duplicate keys.

    Raises:
        ValidationError: One line naming ``where`` and what is wrong.
    """
    try:
        return strict_yaml_module.load(text, max_bytes=max_bytes)
    except strict_yaml_module.YamlBudgetError as err:
        raise ValidationError([str(err)], context=where) from None


def parse_size(value: Any) -> int:
    """``256MB`` / ``4GB`` / a byte count -> bytes (see :func:`~.sandbox.parse_bytes`)."""
    from cellbench.submissions.sandbox import parse_bytes

    return parse_bytes(value)


@dataclass(frozen=True)
class Phase:
    """A phase of a challenge: submissions are accepted until its deadline (UTC)."""

    name: str
    deadline: datetime


@dataclass(frozen=True)
class ChallengeLimits:
    """Limits of a challenge.

    Attributes:
        submissions_per_day: Submissions per team per UTC day.
        max_upload_bytes: Largest upload accepted (also bounds unpacked archives).
        max_model_runtime_s: Wall-clock seconds a model run may take.
        max_model_memory_bytes: Memory a model run may add beyond its runtime.
    """

    submissions_per_day: int = 5
    max_upload_bytes: int = 256 << 20
    max_model_runtime_s: float = 600.0
    max_model_memory_bytes: int = 4 << 30


@dataclass(frozen=True)
class Partition:
    """How the hidden split is cut into a public and a private part.

    Attributes:
        public_fraction: Share of samples (or groups) scored on the public leaderboard.
        group_by: Metadata column whose values stay together (None: single samples).
        seed: Seed of the assignment.
    """

    public_fraction: float = 0.5
    group_by: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class ChallengeConfig:
    """A validated challenge declaration (see the module docstring for the YAML)."""

    id: str
    title: str
    dataset: str
    task: str
    hidden_split: str = "test"
    description: str = ""
    rules: str = ""
    accepts: tuple[str, ...] = _KINDS
    limits: ChallengeLimits = field(default_factory=ChallengeLimits)
    partition: Partition = field(default_factory=Partition)
    public_metadata: tuple[str, ...] = ()
    n_bootstrap: int = 1000
    bootstrap_seed: int = 0
    metric_parameters: dict[str, Any] | None = None
    phases: tuple[Phase, ...] = ()
    path: Path | None = None

    @property
    def final_deadline(self) -> datetime | None:
        """The last phase's deadline (None: open forever)."""
        return max((p.deadline for p in self.phases), default=None)

    def phase_at(self, when: datetime) -> Phase | None:
        """The phase accepting submissions at ``when`` (None when all deadlines passed)."""
        for phase in sorted(self.phases, key=lambda p: p.deadline):
            if when < phase.deadline:
                return phase
        return None if self.phases else Phase("open", datetime.max.replace(tzinfo=UTC))

    def closed(self, when: datetime) -> bool:
        """Whether the final deadline has passed (the private leaderboard is then shown)."""
        final = self.final_deadline
        return final is not None and when >= final

    def to_dict(self) -> dict[str, Any]:
        """JSON form (deadlines as ISO 8601 UTC)."""
        out = asdict(self)
        out.pop("path")
        out["phases"] = [
            {"name": p.name, "deadline": p.deadline.isoformat().replace("+00:00", "Z")}
            for p in self.phases
        ]
        out["accepts"] = list(self.accepts)
        out["public_metadata"] = list(self.public_metadata)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChallengeConfig:
        """Inverse of :meth:`to_dict` (no validation: for configs stored by the server)."""
        d = dict(data)
        d["limits"] = ChallengeLimits(**d.get("limits", {}))
        d["partition"] = Partition(**d.get("partition", {}))
        d["accepts"] = tuple(d.get("accepts", _KINDS))
        d["public_metadata"] = tuple(d.get("public_metadata", ()))
        d["phases"] = tuple(
            Phase(p["name"], _parse_time(p["deadline"])) for p in d.get("phases", [])
        )
        return cls(**d)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        when = value
    else:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("a deadline needs a time zone (e.g. 2030-01-01T00:00:00Z)")
    return when.astimezone(UTC)


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{where}{key}: unknown field{hint}")
    return out


def _positive_int(value: Any, where: str, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 10**9:
        problems.append(f"{where}: must be a positive integer, got {value!r}")
        return 1
    return int(value)


def parse_challenge(data: Any, where: str = "challenge") -> ChallengeConfig:
    """Validate a parsed challenge mapping; list every problem at once.

    Raises:
        ValidationError: Naming each field and what it must be.
    """
    from cellbench.tasks import task_names

    if not isinstance(data, Mapping):
        raise ValidationError([f"must be a YAML mapping, got {type(data).__name__}"], where)
    problems = _unknown(data, _TOP, "")
    for key in ("id", "title", "dataset", "task", "phases"):
        if key not in data:
            problems.append(f"{key}: required")
    out: dict[str, Any] = {}
    for key in ("id", "title", "description", "rules", "dataset", "task", "hidden_split"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > 20000:
            problems.append(f"{key}: must be text (at most 20000 characters)")
            continue
        out[key] = value.strip()
    if "id" in out and not _ID.match(out["id"]):
        problems.append(f"id: {out['id']!r} must be lower-case letters, digits and '-' (<= 64)")
    if "dataset" in out:
        ident, sep, version = out["dataset"].partition("@")
        if not sep or not ident or not version:
            problems.append(f"dataset: {out['dataset']!r} must be id@version")
    if "task" in out and out["task"] not in task_names():
        problems.append(f"task: {out['task']!r} is not one of {', '.join(task_names())}")
    if out.get("hidden_split", "test") not in ("train", "val", "test"):
        problems.append(f"hidden_split: {out['hidden_split']!r} is not train, val or test")

    accepts = data.get("accepts", list(_KINDS))
    if not isinstance(accepts, list) or not accepts or not all(a in _KINDS for a in accepts):
        problems.append(f"accepts: must be a non-empty list of {', '.join(_KINDS)}")
    else:
        out["accepts"] = tuple(dict.fromkeys(accepts))

    limits = data.get("limits", {})
    if not isinstance(limits, Mapping):
        problems.append("limits: must be a mapping")
    else:
        problems += _unknown(limits, _LIMITS, "limits.")
        kw: dict[str, Any] = {}
        if "submissions_per_day" in limits:
            kw["submissions_per_day"] = _positive_int(
                limits["submissions_per_day"], "limits.submissions_per_day", problems
            )
        for key, target in (
            ("max_upload", "max_upload_bytes"),
            ("max_model_memory", "max_model_memory_bytes"),
        ):
            if key in limits:
                try:
                    kw[target] = parse_size(limits[key])
                except Exception as err:  # CellbenchError with a clear line
                    problems.append(f"limits.{key}: {err}")
        if "max_model_runtime_s" in limits:
            value = limits["max_model_runtime_s"]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 < value <= 7 * 86400)
            ):
                problems.append("limits.max_model_runtime_s: must be seconds in (0, 604800]")
            else:
                kw["max_model_runtime_s"] = float(value)
        out["limits"] = ChallengeLimits(**kw)

    part = data.get("partition", {})
    if not isinstance(part, Mapping):
        problems.append("partition: must be a mapping")
    else:
        problems += _unknown(part, ("public_fraction", "group_by", "seed"), "partition.")
        frac = part.get("public_fraction", 0.5)
        if isinstance(frac, bool) or not isinstance(frac, int | float) or not 0 < frac < 1:
            problems.append(f"partition.public_fraction: must be in (0, 1), got {frac!r}")
            frac = 0.5
        group = part.get("group_by")
        if group is not None and not isinstance(group, str):
            problems.append("partition.group_by: must be a metadata column name")
            group = None
        seed = part.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            problems.append(f"partition.seed: must be an integer in [0, 2^32), got {seed!r}")
            seed = 0
        out["partition"] = Partition(float(frac), group, int(seed))

    meta = data.get("public_metadata", [])
    if not isinstance(meta, list) or not all(isinstance(m, str) for m in meta):
        problems.append("public_metadata: must be a list of metadata column names")
    else:
        out["public_metadata"] = tuple(meta)

    scoring = data.get("scoring", {})
    if not isinstance(scoring, Mapping):
        problems.append("scoring: must be a mapping")
    else:
        problems += _unknown(scoring, ("n_bootstrap", "bootstrap_seed"), "scoring.")
        n = scoring.get("n_bootstrap", 1000)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= 100000:
            problems.append("scoring.n_bootstrap: must be an integer in [0, 100000]")
        else:
            out["n_bootstrap"] = n
        seed = scoring.get("bootstrap_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            problems.append("scoring.bootstrap_seed: must be a non-negative integer")
        else:
            out["bootstrap_seed"] = seed

    params = data.get("metric_parameters")
    if params is not None:
        if not isinstance(params, Mapping):
            problems.append("metric_parameters: must map metric name to its parameters")
        else:
            out["metric_parameters"] = dict(params)

    phases = data.get("phases", [])
    if not isinstance(phases, list) or not phases:
        problems.append("phases: must be a non-empty list of {name, deadline}")
    else:
        parsed = []
        for i, phase in enumerate(phases):
            if not isinstance(phase, Mapping) or set(phase) != {"name", "deadline"}:
                problems.append(f"phases[{i}]: must have exactly 'name' and 'deadline'")
                continue
            try:
                parsed.append(Phase(str(phase["name"]), _parse_time(phase["deadline"])))
            except (TypeError, ValueError) as err:
                problems.append(f"phases[{i}].deadline: {err}")
        names = [p.name for p in parsed]
        if len(set(names)) != len(names):
            problems.append("phases: names must be unique")
        out["phases"] = tuple(sorted(parsed, key=lambda p: p.deadline))
    if problems:
        raise ValidationError(problems, context=where)
    return ChallengeConfig(**out)


def load_challenge(path: str | Path) -> ChallengeConfig:
    """Read and validate a challenge YAML file.

    Raises:
        ValidationError: Listing every problem of the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValidationError([f"{path} does not exist"], context="challenge")
    data = strict_yaml(path.read_bytes(), str(path))
    config = parse_challenge(data, str(path))
    return ChallengeConfig(**{**_fields(config), "path": path})


def _fields(config: ChallengeConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in config.__dataclass_fields__}
