"""Dataset cards and the catalog of what exists.

Every dataset lives in a folder ``datasets/<id>/`` holding ``card.yaml`` (the current version's
card) and ``recipe.py`` (how to build the canonical store from the sources). Older versions keep
their card under ``datasets/<id>/versions/<version>.yaml``. The card is the single source of
truth about a dataset: id, version, title, tasks, description, sources (with mirrors and
sha256), license, citation, annotation provenance, how the splits were made, size, class names
and the checksum of the built store.

Catalog folders are found, in order, in ``$CELLBENCH_CATALOG`` (``os.pathsep``-separated), in
the installed package (``cellbench/datasets_catalog``) and in the source checkout
(``<repo>/datasets``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from cellbench import settings
from cellbench.errors import CardError, DatasetNotFoundError
from cellbench.licenses import spdx_problems
from cellbench.tasks.registry import task_names

#: Where a dataset's targets come from: drawn by people, made by a program, simulated, a mix,
#: or measured (an acquired signal such as the fluorescence targets of label-free prediction,
#: which nobody annotated).
PROVENANCE = ("manual", "automatic", "simulated", "mixed", "measured")
_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
REQUIRED_FIELDS = (
    "id",
    "version",
    "title",
    "tasks",
    "description",
    "license",
    "citation",
    "annotation",
    "splits",
    "sources",
)


@dataclass(frozen=True)
class DatasetCard:
    """A dataset card: everything a user must know before using a dataset version.

    Attributes:
        id: Short stable identifier (lowercase, digits, ``-``).
        version: Dataset version (semantic versioning recommended).
        title: Human-readable title.
        tasks: Tasks the dataset serves (see :func:`cellbench.tasks.task_names`).
        description: What the data shows and how it was acquired.
        license: SPDX license identifier or expression (:mod:`cellbench.licenses`).
        citation: How to cite the data (a full reference; structured fields for BibTeX and
            Croissant go in ``extra["cite"]``, see :mod:`cellbench.citation`).
        annotation: ``{"provenance": manual|automatic|simulated|mixed, "details": str}``.
        splits: ``{"method": str, ...}``: how train/val/test were made and why.
        sources: Named source files: ``{name: {urls: [...], sha256: ..., ...}}``; empty for
            generated data.
        class_names: Class tables (``label`` for classification, ``semantic`` for semantic
            segmentation).
        size: Declared size (``samples``, ``bytes``) for listings before a pull.
        checksums: ``{"store": digest}`` of the canonical store the recipe builds.
        homepage: Project or paper page.
        groups: Metadata columns meant as evaluation groups (plate, microscope, ...).
        extra: Any further card fields (kept verbatim).
        path: Folder of the card (recipe and docs live beside it).
    """

    id: str
    version: str
    title: str
    tasks: tuple[str, ...]
    description: str
    license: str
    citation: str
    annotation: dict[str, Any]
    splits: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    class_names: dict[str, list[str]] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    homepage: str = ""
    groups: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.id}@{self.version}"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: Path | None = None) -> DatasetCard:
        """Build and validate a card, listing every problem at once.

        Raises:
            CardError: One message naming the card file and every missing or invalid field.
        """
        where = str(path) if path else f"card {data.get('id', '?')}"
        problems = [f"missing required field {k!r}" for k in REQUIRED_FIELDS if k not in data]
        tasks = data.get("tasks", [])
        if isinstance(tasks, str):
            tasks = [tasks]
        known = task_names()
        unknown = [t for t in tasks if t not in known]
        if "tasks" in data and (not tasks or unknown):
            problems.append(
                f"tasks {unknown or tasks!r} invalid; expected some of {', '.join(known)}"
            )
        annotation = data.get("annotation", {})
        if "annotation" in data and (
            not isinstance(annotation, Mapping) or annotation.get("provenance") not in PROVENANCE
        ):
            problems.append("annotation.provenance must be one of " + ", ".join(PROVENANCE))
        if "splits" in data and not (
            isinstance(data["splits"], Mapping) and data["splits"].get("method")
        ):
            problems.append("splits.method must say how the splits were made")
        sources = data.get("sources", {})
        if "sources" in data and not isinstance(sources, Mapping):
            problems.append("sources must be a mapping of name -> {urls, sha256, ...}")
        for key in ("id", "version", "title", "description", "license", "citation"):
            if key in data and not str(data[key]).strip():
                problems.append(f"field {key!r} is empty")
        if str(data.get("license", "")).strip():
            problems += spdx_problems(str(data["license"]))
        ident = str(data.get("id", ""))
        if ident and not _ID_PATTERN.fullmatch(ident):
            problems.append(f"id {ident!r} must use lowercase letters, digits and '-'")
        if problems:
            raise CardError(f"{where}: invalid dataset card: " + "; ".join(problems))
        known = set(REQUIRED_FIELDS) | {"class_names", "size", "checksums", "homepage", "groups"}
        return cls(
            id=ident,
            version=str(data["version"]),
            title=str(data["title"]),
            tasks=tuple(tasks),
            description=str(data["description"]).strip(),
            license=str(data["license"]),
            citation=str(data["citation"]).strip(),
            annotation=dict(annotation),
            splits=dict(data["splits"]),
            sources={str(k): dict(v) for k, v in dict(sources or {}).items()},
            class_names={k: list(v) for k, v in dict(data.get("class_names") or {}).items()},
            size=dict(data.get("size") or {}),
            checksums={k: str(v) for k, v in dict(data.get("checksums") or {}).items()},
            homepage=str(data.get("homepage", "")),
            groups=tuple(data.get("groups") or ()),
            extra={k: v for k, v in data.items() if k not in known},
            path=path.parent if path else None,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> DatasetCard:
        """Read and validate a ``card.yaml``."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise CardError(f"{path}: unreadable dataset card ({err})") from err
        if not isinstance(data, Mapping):
            raise CardError(f"{path}: dataset card must be a YAML mapping")
        return cls.from_mapping(data, path)

    def snapshot(self) -> dict[str, Any]:
        """Card fields stored inside the built store (without derived size and checksums)."""
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "tasks": list(self.tasks),
            "description": self.description,
            "license": self.license,
            "citation": self.citation,
            "annotation": self.annotation,
            "splits": self.splits,
            "sources": self.sources,
            "class_names": self.class_names,
            "homepage": self.homepage,
            "groups": list(self.groups),
            **self.extra,
        }

    def to_dict(self) -> dict[str, Any]:
        """All card fields, including size and checksums."""
        out = self.snapshot()
        out["size"] = self.size
        out["checksums"] = self.checksums
        return out


def catalog_roots() -> list[Path]:
    """Folders searched for dataset cards, in priority order."""
    roots = settings.catalog_dirs()
    here = Path(__file__).resolve().parent
    roots += [here / "datasets_catalog", here.parent / "datasets"]
    return [r for r in roots if r.is_dir()]


class Catalog:
    """The datasets that exist: cards (all versions) and their recipes.

    Args:
        roots: Catalog folders; defaults to :func:`catalog_roots`.
    """

    def __init__(self, roots: Iterable[Path] | None = None) -> None:
        self.roots = list(roots) if roots is not None else catalog_roots()
        self._cards: dict[str, dict[str, Path]] = {}
        self._latest: dict[str, str] = {}
        for root in reversed(self.roots):  # earlier roots override later ones
            for card_file in sorted(root.glob("*/card.yaml")):
                self._index(card_file, latest=True)
                for old in sorted((card_file.parent / "versions").glob("*.yaml")):
                    self._index(old, latest=False)

    def _index(self, card_file: Path, latest: bool) -> None:
        data = yaml.safe_load(card_file.read_text(encoding="utf-8")) or {}
        ident = str(data.get("id") or card_file.parent.name)
        version = str(data.get("version", ""))
        self._cards.setdefault(ident, {})[version] = card_file
        if latest:
            self._latest[ident] = version

    def ids(self) -> list[str]:
        """Dataset ids, sorted."""
        return sorted(self._cards)

    def versions(self, dataset_id: str) -> list[str]:
        """Known versions of a dataset (latest last)."""
        self._check_id(dataset_id)
        latest = self._latest.get(dataset_id)
        others = sorted(v for v in self._cards[dataset_id] if v != latest)
        return others + ([latest] if latest else [])

    def _check_id(self, dataset_id: str) -> None:
        if dataset_id not in self._cards:
            close = difflib.get_close_matches(dataset_id, self.ids(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise DatasetNotFoundError(
                f"unknown dataset {dataset_id!r}{hint} (see `cellbench datasets list`)"
            )

    def card(self, dataset_id: str, version: str | None = None) -> DatasetCard:
        """Return the validated card of a dataset version (latest when ``version`` is None).

        Raises:
            DatasetNotFoundError: For an unknown id or version.
            CardError: For an invalid card.
        """
        self._check_id(dataset_id)
        version = version or self._latest.get(dataset_id)
        path = self._cards[dataset_id].get(str(version))
        if path is None:
            raise DatasetNotFoundError(
                f"dataset {dataset_id!r} has no version {version!r} "
                f"(known: {', '.join(self.versions(dataset_id))})"
            )
        return DatasetCard.from_yaml(path)

    def cards(self) -> list[DatasetCard]:
        """Latest card of every dataset."""
        return [self.card(i) for i in self.ids()]


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split ``"id@version"`` into ``(id, version)``; version is None when absent."""
    if "@" in ref:
        ident, version = ref.split("@", 1)
        return ident.strip(), version.strip() or None
    return ref.strip(), None


@lru_cache(maxsize=64)
def _load_module(path: str, mtime: float) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"cellbench_recipe_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise CardError(f"{path}: cannot load recipe")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_recipe(card: DatasetCard) -> Callable[..., Any]:
    """Return the ``build(context)`` function of a card's recipe.

    The card's ``recipe`` field is either a file beside the card (default ``recipe.py``) or a
    ``package.module:function`` reference.

    Raises:
        CardError: If the recipe file or its ``build`` function is missing.
    """
    ref = str(card.extra.get("recipe", "recipe.py"))
    if ":" in ref and not ref.endswith(".py"):
        module_name, _, func = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise CardError(f"dataset {card.ref}: recipe module {module_name!r} ({err})") from err
        build = getattr(module, func, None)
        if not callable(build):
            raise CardError(f"dataset {card.ref}: recipe {ref!r} is not a function")
        return build
    if card.path is None:
        raise CardError(f"dataset {card.ref}: card has no folder, so no recipe")
    recipe = card.path / ref
    if not recipe.is_file():
        raise CardError(f"dataset {card.ref}: recipe {recipe} not found")
    module = _load_module(str(recipe), recipe.stat().st_mtime)
    build = getattr(module, "build", None)
    if not callable(build):
        raise CardError(f"{recipe}: must define build(context) returning samples")
    return build
