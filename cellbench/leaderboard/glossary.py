"""Human names, units and one-line definitions of metric values, read from metric docstrings.

Every metric class documents the values it reports in a ``Glossary:`` section of its docstring
(the metric's docstring is the one place a metric is defined), one entry per value::

    Glossary:
        ap@<t> (fraction 0-1; quality): AP at IoU <t>. COCO average precision at the one IoU
            threshold <t> (AP50 at 0.50, AP75 at 0.75).

that is ``<pattern> (<unit>; <kind>): <Human name>. <definition>``, continuation lines indented
further. ``<kind>`` is ``quality`` (a score with a better direction) or ``count`` (a count or a
reference size: shown as a number with no direction). A ``<placeholder>`` in the pattern
matches any text (a threshold, a class or channel name, an area range) and is substituted into
the name and the definition.

The docstrings are read from the source files of :mod:`cellbench.metrics` with :mod:`ast`
(nothing is imported, so describing a board stays cheap); a class is found by its ``name``
class attribute, which is the family part of a flat metric key (``coco_ap`` in
``coco_ap/ap@0.50``). A key without a glossary entry keeps its raw name.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

KINDS = ("quality", "count")
_ENTRY = re.compile(
    r"^(?P<pattern>\S+)\s+\((?P<unit>[^;()]*);\s*(?P<kind>[a-z]+)\):\s+"
    r"(?P<name>.+?)\.(?:\s+(?P<definition>.*))?$"
)
_PLACEHOLDER = re.compile(r"<([A-Za-z_]+)>")


@dataclass(frozen=True)
class ValueDoc:
    """One ``Glossary:`` entry of a metric class.

    Attributes:
        family: The metric's ``name`` (first part of a flat key).
        pattern: Value name pattern (``ap@<t>``, ``precision/<class>``).
        name: Human name, placeholders unsubstituted.
        unit: Unit text (``fraction 0-1``, ``dB``, ``objects``).
        kind: ``quality`` or ``count``.
        definition: One-line definition, placeholders unsubstituted.
        direction: ``higher`` or ``lower`` (which is better; from the class's
            ``lower_is_better``); meaningful for quality values only.
    """

    family: str
    pattern: str
    name: str
    unit: str
    kind: str
    definition: str
    direction: str = "higher"

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """The pattern as a regular expression over value names."""
        parts = _PLACEHOLDER.split(self.pattern)
        out = []
        for i, part in enumerate(parts):
            out.append(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+)")
        return re.compile("^" + "".join(out) + "$")

    @property
    def placeholders(self) -> list[str]:
        """Placeholder names of the pattern, in order."""
        return _PLACEHOLDER.findall(self.pattern)


@dataclass(frozen=True)
class FamilyDoc:
    """A metric class as the glossary shows it.

    Attributes:
        family: The metric's ``name``.
        class_name: The class (``CocoAP``).
        module: Module path of the class (``cellbench.metrics.coco``).
        title: First line of the docstring.
        docstring: The whole docstring (cleaned), glossary section included.
        values: Its glossary entries, in docstring order.
    """

    family: str
    class_name: str
    module: str
    title: str
    docstring: str
    values: tuple[ValueDoc, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class MetricLabel:
    """How one flat metric key is shown.

    Attributes:
        key: The flat key (``coco_ap/ap@0.50``).
        name: Human name with placeholders filled in (``AP at IoU 0.50``).
        unit: Unit text (empty when unknown).
        kind: ``quality`` or ``count``.
        definition: One-line definition (empty when unknown).
        family: Metric name.
        family_title: First line of the metric's docstring (empty when unknown).
        anchor: Id of the value's entry on the glossary page (empty when unknown).
        documented: Whether the key has a glossary entry.
        generic: The entry's name with placeholders shown by name (``AP at IoU t``), for a
            whole series; the value name when unknown.
    """

    key: str
    name: str
    unit: str = ""
    kind: str = "quality"
    definition: str = ""
    family: str = ""
    family_title: str = ""
    anchor: str = ""
    documented: bool = False
    generic: str = ""

    @property
    def is_count(self) -> bool:
        """A count or reference size (no better direction)."""
        return self.kind == "count"

    def tooltip(self) -> str:
        """``name (unit): definition`` for a ``title`` attribute."""
        unit = f" ({self.unit})" if self.unit else ""
        text = f"{self.name}{unit}"
        return f"{text}: {self.definition}" if self.definition else text


def parse_glossary(
    docstring: str, family: str, lower_is_better: frozenset[str] = frozenset()
) -> tuple[list[ValueDoc], list[str]]:
    """Glossary entries of one docstring, and a line for every malformed entry.

    Args:
        docstring: A metric class docstring.
        family: The metric's ``name``.
        lower_is_better: Value base names for which lower is better (the class attribute).
    """
    lines = inspect.cleandoc(docstring or "").splitlines()
    try:
        start = lines.index("Glossary:")
    except ValueError:
        return [], []
    entries: list[str] = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if line.startswith("        ") and entries:  # continuation
            entries[-1] += " " + line.strip()
        elif line.startswith("    ") and not line.startswith("     "):
            entries.append(line.strip())
        else:
            break
    out, problems = [], []
    for text in entries:
        m = _ENTRY.match(text)
        if m is None or m["kind"] not in KINDS:
            problems.append(
                f"{family}: glossary entry not '<pattern> (<unit>; quality|count): <Name>. "
                f"<definition>': {text!r}"
            )
            continue
        base = m["pattern"].split("@", 1)[0].split("/", 1)[0]
        out.append(
            ValueDoc(
                family=family,
                pattern=m["pattern"],
                name=m["name"].strip(),
                unit=m["unit"].strip(),
                kind=m["kind"],
                definition=(m["definition"] or "").strip(),
                direction="lower" if base in lower_is_better else "higher",
            )
        )
    return out, problems


def _class_attr(node: ast.ClassDef, attr: str) -> Any:
    """The literal value of a class attribute (``name = "coco_ap"``), or None."""
    for stmt in node.body:
        targets: list[Any] = []
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign):
            targets = [stmt.target]
        if any(isinstance(t, ast.Name) and t.id == attr for t in targets) and stmt.value:
            value = stmt.value
            if isinstance(value, ast.Call) and value.args:  # frozenset({...})
                value = value.args[0]
            try:
                return ast.literal_eval(value)
            except ValueError:
                return None
    return None


@functools.cache
def families() -> dict[str, FamilyDoc]:
    """Every documented metric family of :mod:`cellbench.metrics`, by metric name."""
    out: dict[str, FamilyDoc] = {}
    root = resources.files("cellbench") / "metrics"
    stack = [(root, "cellbench.metrics")]
    while stack:
        folder, package = stack.pop()
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if item.is_dir() and (item / "__init__.py").is_file():
                stack.append((item, f"{package}.{item.name}"))
                continue
            if not item.name.endswith(".py"):
                continue
            module = package if item.name == "__init__.py" else f"{package}.{item.name[:-3]}"
            tree = ast.parse(item.read_text(encoding="utf-8"))
            for node in tree.body:
                if not isinstance(node, ast.ClassDef):
                    continue
                name = _class_attr(node, "name")
                doc = ast.get_docstring(node)
                if not isinstance(name, str) or not doc or "Glossary:" not in doc:
                    continue
                lower = frozenset(_class_attr(node, "lower_is_better") or ())
                values, _ = parse_glossary(doc, name, lower)
                out[name] = FamilyDoc(
                    family=name,
                    class_name=node.name,
                    module=module,
                    title=doc.splitlines()[0].strip(),
                    docstring=doc,
                    values=tuple(values),
                )
    return out


def _fill(text: str, groups: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: groups.get(m.group(1), m.group(0)), text)


def anchor_of(family: str, pattern: str) -> str:
    """Glossary page id of an entry (letters, digits, ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", f"{family}-{pattern}".lower()).strip("-")


@functools.cache
def describe(key: str) -> MetricLabel:
    """The human name, unit, kind and definition of a flat metric key.

    Exact patterns win over patterns with placeholders; among those, the longest literal text
    wins (``f1_pooled@<t>`` before ``f1@<t>``). Unknown keys keep their value name.
    """
    family, sep, value = key.partition("/")
    if not sep:
        return MetricLabel(key=key, name=key, generic=key)
    doc = families().get(family)
    if doc is None:
        return MetricLabel(key=key, name=value, family=family, generic=value)
    candidates = sorted(
        doc.values,
        key=lambda v: (bool(v.placeholders), -len(_PLACEHOLDER.sub("", v.pattern))),
    )
    for v in candidates:
        m = v.regex.match(value)
        if m is None:
            continue
        groups = {k: s for k, s in m.groupdict().items() if s is not None}
        return MetricLabel(
            key=key,
            name=_fill(v.name, groups),
            unit=v.unit,
            kind=v.kind,
            definition=_fill(v.definition, groups),
            family=family,
            family_title=doc.title,
            anchor=anchor_of(family, v.pattern),
            documented=True,
            generic=generic_name(v),
        )
    return MetricLabel(key=key, name=value, family=family, family_title=doc.title, generic=value)


def generic_name(doc: ValueDoc) -> str:
    """An entry's name with placeholders shown by name (``AP at IoU t``)."""
    return _PLACEHOLDER.sub(lambda m: m.group(1), doc.name)


def problems() -> list[str]:
    """Malformed glossary entries of every metric class (empty when all parse)."""
    out: list[str] = []
    for doc in families().values():
        out += parse_glossary(doc.docstring, doc.family)[1]
    return out
