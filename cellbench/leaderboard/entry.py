"""One leaderboard entry: the scores of one replicate of one submission, with its provenance.

An entry is what a leaderboard stores, one JSON file per entry (per replicate seed). It holds the
full :class:`~cellbench.report.ScoreReport` (every metric, groups, per-sample values, details,
bootstrap interval of the headline), the submission manifest as submitted, the digests that tie
the scores to the exact submission and dataset build, and a small snapshot of the dataset card,
so that a leaderboard can be rendered from its entry files alone.

Entry files are written with sorted keys and a fixed indentation so that adding an entry to a
leaderboard kept in git is a one-file, readable diff.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cellbench.report import ScoreReport

ENTRY_SCHEMA_VERSION = 1
#: Characters allowed in one component of a leaderboard path (dataset id, version, task, split).
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
#: Card fields copied into each entry so a leaderboard renders without the dataset at hand.
CARD_FIELDS = (
    "title",
    "license",
    "citation",
    "annotation",
    "splits",
    "homepage",
    "description",
    "class_names",
)


def slugify(text: str, max_len: int = 48) -> str:
    """Lower-case ASCII slug (letters, digits, ``-``) of a free-form name, never empty."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return slug or "entry"


@dataclass(frozen=True, order=True)
class BoardKey:
    """Identifies one leaderboard: a (dataset version, task, split).

    Attributes:
        dataset: Dataset id.
        version: Dataset version.
        task: Task name.
        split: Split scored (``test`` normally).
    """

    dataset: str
    version: str
    task: str
    split: str

    @property
    def path(self) -> str:
        """Relative location of the board: ``<dataset>@<version>/<task>/<split>``."""
        return f"{self.dataset}@{self.version}/{self.task}/{self.split}"

    @property
    def ref(self) -> str:
        """``dataset@version``."""
        return f"{self.dataset}@{self.version}"

    def problems(self) -> list[str]:
        """Components that are unsafe as path parts (empty when the key is usable)."""
        out = []
        for name in ("dataset", "version", "task", "split"):
            value = getattr(self, name)
            if not _COMPONENT.match(value) or ".." in value:
                out.append(
                    f"leaderboard {name} {value!r} must match {_COMPONENT.pattern} (no '..', "
                    "no '/')"
                )
        return out

    @classmethod
    def from_path(cls, path: str) -> BoardKey:
        """Parse ``<dataset>@<version>/<task>/<split>``.

        Raises:
            ValueError: If the path does not have that shape.
        """
        parts = path.strip("/").split("/")
        if len(parts) != 3 or "@" not in parts[0]:
            raise ValueError(f"not a leaderboard path <dataset>@<version>/<task>/<split>: {path}")
        dataset, version = parts[0].split("@", 1)
        return cls(dataset, version, parts[1], parts[2])

    def to_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "dataset": self.dataset,
            "version": self.version,
            "task": self.task,
            "split": self.split,
        }


def _canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys; comments and layout do not count)."""
    return hashlib.sha256(_canonical_json(dict(manifest)).encode()).hexdigest()


@dataclass
class LeaderboardEntry:
    """The scores and provenance of one replicate of one submission.

    Attributes:
        manifest: The submission manifest as a mapping (``name``, ``authors``, ``seed``, ...).
        report: The full score report.
        submission_sha256: Digest of the submitted file or directory (predictions or model).
        submitted: ISO-8601 UTC time the entry was created.
        predictions_uri: Where the scored predictions can be read again (used to draw error
            overlays when publishing): a local path, or a path relative to the leaderboard
            root for predictions kept beside the entries (``<board>/predictions/...``, as
            the committed baselines do); empty if they were not kept.
        dataset_card: Snapshot of the dataset card fields in :data:`CARD_FIELDS`.
        schema_version: Version of this entry layout.
    """

    manifest: dict[str, Any]
    report: ScoreReport
    submission_sha256: str
    submitted: str
    predictions_uri: str = ""
    dataset_card: dict[str, Any] = field(default_factory=dict)
    schema_version: int = ENTRY_SCHEMA_VERSION

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """Entry name as submitted (replicates of one entry share it)."""
        return str(self.manifest.get("name", ""))

    @property
    def seed(self) -> int:
        """Replicate seed."""
        return int(self.manifest.get("seed", 0))

    @property
    def key(self) -> BoardKey:
        """The leaderboard this entry belongs to (from its report)."""
        r = self.report
        return BoardKey(r.dataset, r.dataset_version, r.task, r.split)

    @property
    def name_id(self) -> str:
        """File stem of the entry name: its slug and a short hash of the exact name.

        The hash keeps two names with the same slug (``"U-Net"``, ``"unet"``) apart.
        """
        digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
        return f"{slugify(self.name)}-{digest}"

    @property
    def entry_id(self) -> str:
        """Stable file stem: :attr:`name_id` and the seed.

        The seed makes one file per replicate, so a replicate can be stored only once.
        """
        return f"{self.name_id}__seed-{self.seed}"

    @property
    def owner(self) -> dict[str, Any]:
        """Who owns the entry name: the authors and the code URL of the manifest."""
        authors = self.manifest.get("authors") or []
        if isinstance(authors, str):
            authors = [authors]
        code = self.manifest.get("code") or {}
        url = str(code.get("url", "")) if isinstance(code, Mapping) else ""
        return {"authors": [str(a) for a in authors], "code_url": url}

    @property
    def filename(self) -> str:
        """File name of the entry inside its board's ``entries/`` folder."""
        return f"{self.entry_id}.json"

    @property
    def manifest_sha256(self) -> str:
        """Digest of the manifest (see :func:`manifest_digest`)."""
        return manifest_digest(self.manifest)

    def problems(self) -> list[str]:
        """Inconsistencies between the manifest and the report (empty when consistent)."""
        out = list(self.key.problems())
        m, r = self.manifest, self.report
        if not self.name.strip():
            out.append("entry has no name")
        dataset = str(m.get("dataset", ""))
        if dataset and dataset != f"{r.dataset}@{r.dataset_version}":
            out.append(
                f"manifest dataset {dataset!r} != report dataset {r.dataset}@{r.dataset_version}"
            )
        for field_name, value in (("task", r.task), ("split", r.split)):
            if m.get(field_name) and m[field_name] != value:
                out.append(f"manifest {field_name} {m[field_name]!r} != report {value!r}")
        if not isinstance(m.get("seed", 0), int):
            out.append(f"manifest seed {m.get('seed')!r} is not an integer")
        if not re.fullmatch(r"[0-9a-f]{64}", self.submission_sha256 or ""):
            out.append("submission_sha256 must be a 64-digit hex sha256")
        return out

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN written as ``null``)."""
        return {
            "schema_version": self.schema_version,
            "entry_id": self.entry_id,
            "board": self.key.to_dict(),
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "submission_sha256": self.submission_sha256,
            "submitted": self.submitted,
            "predictions_uri": self.predictions_uri,
            "dataset_card": self.dataset_card,
            "report": self.report.to_dict(),
        }

    def to_json(self) -> str:
        """Diff-friendly JSON text: sorted keys, two-space indent, trailing newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LeaderboardEntry:
        """Rebuild an entry from :meth:`to_dict` output.

        Raises:
            ValueError: If the entry was written by a newer cellbench.
        """
        version = int(data.get("schema_version", ENTRY_SCHEMA_VERSION))
        if version > ENTRY_SCHEMA_VERSION:
            raise ValueError(
                f"leaderboard entry schema {version} is newer than this cellbench understands "
                f"({ENTRY_SCHEMA_VERSION}); upgrade cellbench"
            )
        return cls(
            manifest=dict(data["manifest"]),
            report=ScoreReport.from_dict(data["report"]),
            submission_sha256=str(data["submission_sha256"]),
            submitted=str(data["submitted"]),
            predictions_uri=str(data.get("predictions_uri", "")),
            dataset_card=dict(data.get("dataset_card", {})),
            schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str) -> LeaderboardEntry:
        """Parse :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))


def card_snapshot(card: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of a dataset card kept in each entry (see :data:`CARD_FIELDS`)."""
    return {k: card[k] for k in CARD_FIELDS if k in card and card[k] not in (None, "", {}, [])}
