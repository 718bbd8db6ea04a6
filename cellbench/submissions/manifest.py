"""The submission manifest: who made a submission, with what, and what it is.

A manifest is a small YAML file that travels with every submission (``cellbench submit --init``
writes a commented template). It names the entry and its authors, points to the code (URL and
commit), states the training data, parameter count, seed of this replicate, hardware and
license, and says what is submitted: predictions, or a model that cellbench runs itself.

Validation lists every problem at once; unknown keys are refused so that a typo (``auhtors``)
does not silently drop information.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.leaderboard.entry import manifest_digest
from cellbench.leaderboard.formatting import safe_url
from cellbench.store.sample import SPLITS
from cellbench.tasks import get_task, task_names

#: What can be submitted.
KINDS = ("predictions", "torchscript", "onnx", "safetensors", "bioimageio")
#: Model kinds that cellbench runs with the TorchScript/ONNX input-output convention.
CONVENTION_KINDS = ("torchscript", "onnx")
NORMALISATIONS = ("percentile", "minmax", "zscore", "affine", "none")
DEFAULT_NORMALISATION: dict[str, Any] = {"method": "percentile", "low": 1.0, "high": 99.8}

#: Budgets of manifest values.
MAX_INT = (1 << 63) - 1
MAX_TEXT_CHARS = 1000
MAX_NOTES_CHARS = 10_000
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[A-Za-z]{2,}$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_UNSAFE_SCHEMES = frozenset({"javascript", "data", "vbscript", "file"})

_FIELDS = (
    "name",
    "authors",
    "contact",
    "code",
    "paper",
    "training_data",
    "n_parameters",
    "seed",
    "hardware",
    "license",
    "task",
    "dataset",
    "split",
    "kind",
    "submission",
    "normalisation",
    "notes",
    "weights_url",
)
_REQUIRED = (
    "name",
    "authors",
    "contact",
    "code",
    "training_data",
    "n_parameters",
    "seed",
    "hardware",
    "license",
    "task",
    "dataset",
    "kind",
    "submission",
)


def submission_location(named: str, manifest_path: Path | None) -> Path:
    """A manifest's local ``submission`` as a path.

    ``~`` expanded, a ``file://`` URL's path taken, and a relative path resolved against the
    manifest's folder (when ``manifest_path`` is known). Test
    :func:`~cellbench.store.location.is_remote` first: a URL of object storage is not a local
    path.
    """
    from cellbench.store.location import local_path

    p = local_path(os.path.expanduser(named))
    if not p.is_absolute() and manifest_path is not None:
        p = manifest_path.parent / p
    return p


@dataclass(frozen=True)
class SubmissionManifest:
    """A validated submission manifest.

    Attributes:
        name: Entry name shown on the leaderboard (replicates share it).
        authors: Author names.
        contact: E-mail address or http(s) URL.
        code_url: http(s) URL of the code repository.
        code_commit: Commit (7-64 hex digits) the submission was made with.
        paper: Paper URL or reference (may be empty).
        training_data: What the model was trained on (datasets, splits, extra data).
        n_parameters: Number of trainable parameters (0 for methods without any).
        seed: Seed of this replicate.
        hardware: Hardware used for training (and inference for predictions).
        license: License of the submission (code/weights).
        task: Task name.
        dataset: Dataset id.
        dataset_version: Dataset version.
        split: Split predicted (``test`` by default).
        kind: ``predictions``, ``torchscript``, ``onnx`` or ``safetensors``.
        submission: Path of the submitted file/folder (relative to the manifest's folder),
            or the URL of a canonical prediction set on object storage (kind ``predictions``).
        normalisation: Input normalisation for TorchScript/ONNX models.
        notes: Free text.
        weights_url: Optional http(s) link to the model package or weights (leaderboards
            link it).
        path: The manifest file, if read from one.
    """

    name: str
    authors: tuple[str, ...]
    contact: str
    code_url: str
    code_commit: str
    training_data: str
    n_parameters: int
    seed: int
    hardware: str
    license: str
    task: str
    dataset: str
    dataset_version: str
    kind: str
    submission: str
    split: str = "test"
    paper: str = ""
    normalisation: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    weights_url: str = ""
    path: Path | None = None

    @property
    def dataset_ref(self) -> str:
        """``id@version``."""
        return f"{self.dataset}@{self.dataset_version}"

    @property
    def submission_path(self) -> Path:
        """The submitted file or folder, resolved against the manifest's folder (not a URL)."""
        return submission_location(self.submission, self.path)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as stored in leaderboard entries (YAML field layout)."""
        out: dict[str, Any] = {
            "name": self.name,
            "authors": list(self.authors),
            "contact": self.contact,
            "code": {"url": self.code_url, "commit": self.code_commit},
            "paper": self.paper,
            "training_data": self.training_data,
            "n_parameters": self.n_parameters,
            "seed": self.seed,
            "hardware": self.hardware,
            "license": self.license,
            "task": self.task,
            "dataset": self.dataset_ref,
            "split": self.split,
            "kind": self.kind,
            "submission": self.submission,
            "notes": self.notes,
        }
        if self.kind in CONVENTION_KINDS:
            out["normalisation"] = dict(self.normalisation)
        if self.weights_url:  # only when given, so older manifests keep their digest
            out["weights_url"] = self.weights_url
        return out

    @property
    def sha256(self) -> str:
        """Digest of :meth:`to_dict` (layout and comments of the YAML do not count)."""
        return manifest_digest(self.to_dict())


def _text(data: Mapping[str, Any], key: str, problems: list[str], required: bool = True) -> str:
    value = data.get(key)
    if value is None:
        if required:
            problems.append(f"{key}: required")
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        problems.append(f"{key}: must be text, got {type(value).__name__}")
        return ""
    text = str(value).strip()
    if required and not text:
        problems.append(f"{key}: must not be empty")
    limit = MAX_NOTES_CHARS if key == "notes" else MAX_TEXT_CHARS
    if len(text) > limit:
        problems.append(f"{key}: at most {limit} characters (has {len(text)})")
        return text[:limit]
    if _CONTROL.search(text):
        problems.append(f"{key}: contains control characters")
    return text


def _int(data: Mapping[str, Any], key: str, problems: list[str]) -> int:
    value = data.get(key)
    if value is None:
        problems.append(f"{key}: required (a non-negative integer)")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        problems.append(f"{key}: must be a non-negative integer, got {shown}")
        return 0
    if value > MAX_INT:
        problems.append(f"{key}: {value} is larger than {MAX_INT} (a signed 64-bit integer)")
        return 0
    return int(value)


def manifest_problems(data: Any) -> tuple[list[str], dict[str, Any]]:
    """Check a parsed manifest; return every problem and the normalised fields.

    Args:
        data: The parsed YAML (should be a mapping).

    Returns:
        ``(problems, fields)``; ``fields`` holds the keyword arguments of
        :class:`SubmissionManifest` (only meaningful when ``problems`` is empty).
    """
    if not isinstance(data, Mapping):
        return [f"manifest must be a YAML mapping, got {type(data).__name__}"], {}
    problems: list[str] = []
    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: unknown field{hint}")
    for key in _REQUIRED:
        if key not in data:
            problems.append(f"{key}: required")
    present = {k: v for k, v in data.items() if k in _FIELDS}

    def text(key: str, required: bool = True) -> str:
        return _text(present, key, problems, required) if key in present else ""

    out: dict[str, Any] = {}
    out["name"] = text("name")
    if len(out["name"]) > 100:
        problems.append(f"name: at most 100 characters (has {len(out['name'])})")

    authors = present.get("authors")
    if "authors" in present:
        if isinstance(authors, str):
            authors = [authors]
        if (
            not isinstance(authors, list)
            or not authors
            or not all(isinstance(a, str) and a.strip() for a in authors)
        ):
            problems.append("authors: must be a non-empty list of names")
            authors = []
    out["authors"] = tuple(str(a).strip() for a in (authors or []))

    out["contact"] = text("contact")
    if out["contact"] and not (_EMAIL.match(out["contact"]) or safe_url(out["contact"])):
        problems.append(
            f"contact: {out['contact']!r} is neither an e-mail address nor an http(s) URL"
        )

    code = present.get("code")
    out["code_url"], out["code_commit"] = "", ""
    if "code" in present:
        if not isinstance(code, Mapping):
            problems.append("code: must be a mapping with 'url' and 'commit'")
        else:
            url = str(code.get("url") or "").strip()
            commit = str(code.get("commit") or "").strip()
            if not safe_url(url):
                problems.append(f"code.url: {url!r} must be an http(s) URL")
            if not _COMMIT.match(commit):
                problems.append(f"code.commit: {commit!r} must be a commit hash (7-64 hex digits)")
            extra = sorted(set(code) - {"url", "commit"})
            if extra:
                problems.append(f"code: unknown field(s) {', '.join(map(str, extra))}")
            out["code_url"], out["code_commit"] = url, commit.lower()

    out["paper"] = text("paper", required=False)
    scheme = _SCHEME.match(out["paper"])
    if (
        scheme
        and (scheme.group(2) or scheme.group(1).lower() in _UNSAFE_SCHEMES)
        and not safe_url(out["paper"])
    ):
        problems.append(f"paper: {out['paper']!r}: links must be http(s) URLs")

    out["training_data"] = text("training_data")
    out["n_parameters"] = (
        _int(present, "n_parameters", problems) if "n_parameters" in present else 0
    )
    out["seed"] = _int(present, "seed", problems) if "seed" in present else 0
    out["hardware"] = text("hardware")
    out["license"] = text("license")
    out["notes"] = text("notes", required=False)
    out["weights_url"] = text("weights_url", required=False)
    if out["weights_url"] and not safe_url(out["weights_url"]):
        problems.append(f"weights_url: {out['weights_url']!r} must be an http(s) URL")

    out["task"] = text("task")
    if out["task"] and out["task"] not in task_names():
        problems.append(f"task: {out['task']!r} is not one of {', '.join(task_names())}")

    ref = text("dataset")
    out["dataset"], out["dataset_version"] = "", ""
    if ref:
        ident, sep, version = ref.partition("@")
        if not sep or not ident.strip() or not version.strip():
            problems.append(
                f"dataset: {ref!r} must name the version explicitly as id@version "
                "(leaderboards are per dataset version)"
            )
        out["dataset"], out["dataset_version"] = ident.strip(), version.strip()

    out["split"] = text("split", required=False) or "test"
    if out["split"] not in SPLITS:
        problems.append(f"split: {out['split']!r} is not one of {', '.join(SPLITS)}")

    out["kind"] = text("kind")
    if out["kind"] and out["kind"] not in KINDS:
        problems.append(f"kind: {out['kind']!r} is not one of {', '.join(KINDS)}")
    if (
        out["task"] in task_names()
        and not get_task(out["task"]).accepts_models
        and out["kind"] in ("torchscript", "onnx", "safetensors", "bioimageio")
    ):
        spec = get_task(out["task"])
        formats = "; ".join(("a canonical prediction set", *spec.prediction_formats))
        problems.append(
            f"kind: {spec.name} submissions are accepted as predictions only ({formats}); "
            f"cellbench does not run {spec.name} models"
        )
    out["submission"] = text("submission")

    norm = present.get("normalisation")
    out["normalisation"] = {}
    if out["kind"] in CONVENTION_KINDS:
        out["normalisation"] = _normalisation(norm, problems)
    elif norm is not None:
        problems.append(
            "normalisation: only used for torchscript/onnx models (predictions need none; "
            "safetensors packages carry their own in model.json)"
        )
    return problems, out


def _normalisation(norm: Any, problems: list[str]) -> dict[str, Any]:
    if norm is None:
        return dict(DEFAULT_NORMALISATION)
    if not isinstance(norm, Mapping):
        problems.append(
            "normalisation: must be a mapping such as {method: percentile, low: 1, high: 99.8}"
        )
        return dict(DEFAULT_NORMALISATION)
    method = norm.get("method", "percentile")
    if method not in NORMALISATIONS:
        problems.append(
            f"normalisation.method: {method!r} is not one of {', '.join(NORMALISATIONS)}"
        )
        return dict(DEFAULT_NORMALISATION)
    out: dict[str, Any] = {"method": method}
    allowed = {"method"}
    if method == "percentile":
        allowed |= {"low", "high"}
        low, high = norm.get("low", 1.0), norm.get("high", 99.8)
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
        if not ok or not 0 <= low < high <= 100:
            problems.append(
                "normalisation: percentiles must satisfy 0 <= low < high <= 100 "
                f"(got {low}, {high})"
            )
        else:
            out.update(low=float(low), high=float(high))
    elif method == "affine":
        allowed |= {"offset", "scale"}
        values = {k: norm.get(k) for k in ("offset", "scale")}
        numbers = all(
            isinstance(v, list)
            and v
            and all(isinstance(n, int | float) and not isinstance(n, bool) for n in v)
            and all(math.isfinite(n) for n in v)
            for v in values.values()
        )
        if not numbers or len(values["offset"]) != len(values["scale"]):
            problems.append(
                "normalisation: affine needs offset and scale, lists of numbers of equal "
                "length (one per channel)"
            )
        elif any(n <= 0 for n in values["scale"]):
            problems.append("normalisation: affine scale values must be positive")
        else:
            out.update(
                offset=[float(n) for n in values["offset"]],
                scale=[float(n) for n in values["scale"]],
            )
    extra = sorted(set(norm) - allowed)
    if extra:
        problems.append(
            f"normalisation: unknown field(s) {', '.join(map(str, extra))} for {method}"
        )
    return out


def parse_manifest(data: Any, path: str | os.PathLike[str] | None = None) -> SubmissionManifest:
    """Validate a parsed manifest mapping.

    Raises:
        ValidationError: Listing every problem, with the manifest file as context.
    """
    problems, fields = manifest_problems(data)
    where = str(path) if path else "manifest"
    if problems:
        raise ValidationError(problems, context=where)
    return SubmissionManifest(**fields, path=Path(path) if path else None)


def read_manifest_data(path: str | os.PathLike[str]) -> Any:
    """Read a manifest YAML file without validating it.

    The YAML is read within budgets (size, nesting, aliases, integer size, duplicate keys:
    see :mod:`cellbench.strict_yaml`), so a hostile file is one line, not a hang.

    Raises:
        ValidationError: If the file is missing, too large or not valid YAML.
    """
    from cellbench import strict_yaml

    path = Path(path)
    if not path.is_file():
        raise ValidationError([f"{path} does not exist"], context="manifest")
    size = path.stat().st_size
    if size > strict_yaml.MAX_BYTES:
        raise ValidationError(
            [f"{size} bytes; a manifest is at most {strict_yaml.MAX_BYTES} bytes"], str(path)
        )
    try:
        return strict_yaml.load(path.read_bytes())
    except strict_yaml.YamlBudgetError as err:
        raise ValidationError([str(err)], context=str(path)) from None


def load_manifest(path: str | os.PathLike[str]) -> SubmissionManifest:
    """Read and validate a manifest file.

    Raises:
        ValidationError: Listing every problem of the file.
    """
    return parse_manifest(read_manifest_data(path), path)


TEMPLATE = """\
# cellbench submission manifest. Fill in every field, then run:  cellbench submit THIS_FILE
# One manifest per replicate: submit the same `name` with different `seed`s (at least 3) and the
# leaderboard shows mean ± std over seeds.

name: "My method"                  # entry name on the leaderboard (replicates share it)
authors: ["First Author", "Second Author"]
contact: first.author@example.org  # e-mail address or http(s) URL
code:
  url: https://github.com/ORG/REPO  # http(s) only
  commit: 0123456789abcdef0123456789abcdef01234567
paper: ""                          # http(s) URL or reference; may be empty
training_data: "synthetic-nuclei@1.0 train split"  # every dataset/split used for training
n_parameters: 0                    # trainable parameters (0 for methods without any)
seed: 0                            # seed of THIS replicate
hardware: "1x NVIDIA A100 40GB"    # what it was trained (and, for predictions, run) on
license: MIT                       # license of the code/weights/predictions
task: instance-segmentation        # classification | semantic-segmentation |
                                   # instance-segmentation | tracking | augmented-microscopy
dataset: synthetic-nuclei@1.0      # dataset id@version (explicit version)
split: test
kind: predictions                  # predictions | torchscript | onnx | safetensors | bioimageio
submission: predictions.zarr       # path relative to this file:
  # predictions: a canonical prediction set (.zarr) or a format `cellbench score` reads;
  #   a canonical set on object storage may be named by URL (s3://bucket/preds.zarr)
  # torchscript: a torch.jit.save archive;  onnx: an .onnx file
  # safetensors: a model package folder (model.json + model.safetensors) of a cellbench baseline
  # bioimageio: a BioImage.IO 0.5 model package (folder or .zip with rdf.yaml, TorchScript weights)
# normalisation:                   # torchscript/onnx only; how cellbench normalises the input
#   method: percentile             # percentile (default) | minmax | zscore | affine | none
#                                  # (affine: offset: [..], scale: [..] per channel)
#   low: 1.0
#   high: 99.8
notes: ""
# weights_url: https://example.org/my-model.zip   # optional: where the weights can be downloaded
"""


def write_template(path: str | os.PathLike[str] = "submission.yaml") -> Path:
    """Write the commented manifest template, refusing to overwrite an existing file.

    Raises:
        ValidationError: If ``path`` already exists.
    """
    path = Path(path)
    if path.exists():
        raise ValidationError([f"{path} already exists; not overwriting"], context="manifest")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(TEMPLATE)
    return path
