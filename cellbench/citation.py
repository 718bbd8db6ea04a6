"""How to cite a dataset: BibTeX from a card's structured citation fields.

A card's ``citation`` is the reference as people read it. For tools (BibTeX, Croissant,
reference managers) a card may add ``cite``, the same reference as fields::

    cite:
      type: article                # BibTeX entry type: article, misc, software, ...
      key: caicedo2019nucleus      # citation key (default: <id>-<version>)
      authors: ["Caicedo, Juan C.", "Goodman, Allen"]   # "Last, First" each
      title: "Nucleus segmentation across imaging experiments"
      journal: Nature Methods      # any further BibTeX field: volume, pages, publisher, ...
      year: 2019
      doi: 10.1038/s41592-019-0612-7

A card without ``cite`` is cited as a ``@misc`` entry made from its title, version, homepage and
citation text (authors ``cellbench developers`` for generated data), so every dataset has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cellbench.catalog import DatasetCard

#: Order of fields in an entry (others follow, sorted).
_FIELD_ORDER = (
    "author",
    "title",
    "journal",
    "booktitle",
    "volume",
    "number",
    "pages",
    "year",
    "publisher",
    "version",
    "doi",
    "url",
    "note",
)


def _bib_escape(value: str) -> str:
    """A BibTeX field value: one line, LaTeX specials escaped, braces kept only when balanced."""
    text = " ".join(str(value).split())
    for char in "&%$#_":
        text = text.replace(char, "\\" + char)
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            break
    return text if depth == 0 else text.replace("{", "").replace("}", "")


def citation_fields(card: DatasetCard) -> dict[str, Any]:
    """The card's citation as fields: ``type``, ``key``, ``authors`` (list) and BibTeX fields."""
    cite = dict(card.extra.get("cite") or {})
    generated = card.annotation.get("provenance") == "simulated" and not card.sources
    authors = [str(a) for a in cite.pop("authors", None) or []] or (
        ["cellbench developers"] if generated else []
    )
    entry_type = str(cite.pop("type", "misc"))
    fields: dict[str, Any] = {"title": card.title}
    if entry_type == "misc":
        fields["version"] = card.version
        if card.homepage:
            fields["url"] = card.homepage
        fields["note"] = card.citation
    fields.update({k: v for k, v in cite.items() if k != "key"})
    key = str(cite.get("key") or re.sub(r"[^A-Za-z0-9.:-]", "-", f"{card.id}-{card.version}"))
    return {"type": entry_type, "key": key, "authors": authors, **fields}


def bibtex(card: DatasetCard) -> str:
    """The BibTeX entry of a dataset card (``cellbench datasets cite``)."""
    data = citation_fields(card)
    values: dict[str, str] = {}
    if data["authors"]:
        values["author"] = " and ".join(data["authors"])
    for name, value in data.items():
        if name not in ("type", "key", "authors"):
            values[name] = str(value)
    order = [k for k in _FIELD_ORDER if k in values] + sorted(set(values) - set(_FIELD_ORDER))
    body = ",\n".join(f"  {k} = {{{_bib_escape(values[k])}}}" for k in order)
    return f"@{data['type']}{{{data['key']},\n{body}\n}}\n"


def people(authors: list[str]) -> list[Mapping[str, str]]:
    """``"Last, First"`` names split into ``family``/``given`` (a name without comma is whole)."""
    out = []
    for name in authors:
        family, _, given = name.partition(",")
        out.append({"family": family.strip(), "given": given.strip()} if given else {"name": name})
    return out
