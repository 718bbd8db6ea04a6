"""Static HTML: an index of datasets and tasks, and one page per leaderboard.

The pages are rendered from the Jinja2 templates in :mod:`cellbench.leaderboard.templates`
with autoescaping on: this module only prepares plain values (text, numbers, relative paths)
and never builds markup from user text. The pages use one stylesheet and one small script
(sortable tables) from ``assets/``; they load nothing from the network and use only relative
links, so the site works from ``file://`` and from any static host. Links are emitted only for
http(s) URLs, and a Content-Security-Policy forbids inline script, so a hostile manifest can
neither run script nor inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cellbench.leaderboard.display import better, header, headline_phrase, mark, value_text
from cellbench.leaderboard.formatting import (
    MISSING,
    direction_word,
    fmt_count,
    fmt_interval,
    fmt_mean_std,
    fmt_resource,
    fmt_value,
    safe_url,
)
from cellbench.leaderboard.glossary import anchor_of, describe, generic_name
from cellbench.leaderboard.glossary import families as glossary_families
from cellbench.leaderboard.layout import scalar_families, series_families
from cellbench.leaderboard.markdown import group_mean, worst_group
from cellbench.leaderboard.ranking import OVERLAP, RANKING_RULES, Leaderboard, RankedEntry
from cellbench.leaderboard.templates import CSP, render

__all__ = [
    "CSP",
    "FigureRef",
    "card_view",
    "render_board_html",
    "render_glossary_html",
    "render_index_html",
]


@dataclass(frozen=True)
class FigureRef:
    """A rendered plot shown on a leaderboard page.

    Attributes:
        section: Page section (``metrics``, ``confusion``, ``curves``, ``overlays``).
        src: Path relative to the page.
        caption: Caption text (plain text; escaped when rendered).
        alt: Alternative text.
    """

    section: str
    src: str
    caption: str
    alt: str


def _plain_value(value: Any) -> str:
    """Readable text for card values: mappings as ``k v, ...``, lists comma-separated."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain_value(v) for v in value)
    return str(value)


def card_view(card: Mapping[str, Any], ref: str, checksum: str = "") -> dict[str, Any]:
    """The dataset card as the plain values ``card.html`` shows (every key present)."""
    ann = card.get("annotation") or {}
    annotation = ""
    if isinstance(ann, Mapping) and ann.get("provenance"):
        annotation = str(ann["provenance"])
        if ann.get("details"):
            annotation += f" — {ann['details']}"
    splits = card.get("splits") or {}
    split_lines: list[str] = []
    if isinstance(splits, Mapping) and splits:
        split_lines = [str(splits.get("method", ""))]
        split_lines += [f"{k}: {_plain_value(v)}" for k, v in splits.items() if k != "method"]
        split_lines = [line for line in split_lines if line]
    return {
        "title": str(card.get("title") or ref),
        "homepage": card.get("homepage") or "",
        "ref": ref,
        "license": str(card.get("license") or ""),
        "annotation": annotation,
        "splits": split_lines,
        "checksum": checksum,
        "description": str(card.get("description") or ""),
        "citation": str(card.get("citation") or ""),
    }


def _authors(m: Mapping[str, Any]) -> str:
    authors = m.get("authors") or []
    if isinstance(authors, str):
        authors = [authors]
    return ", ".join(str(a) for a in authors)


def _rank_row(row: RankedEntry) -> dict[str, Any]:
    m = row.manifest
    code = m.get("code") if isinstance(m.get("code"), Mapping) else {}
    runtime, memory = row.resource("runtime_s"), row.resource("peak_memory_mb")
    mark, mark_title = "", ""
    if row.tied_with_above:
        mark, mark_title = "=", "same value as the entry above"
    elif row.similar_to_above:
        mark, mark_title = "≈", comparison_text(row)
    return {
        "name": row.name,
        "rank": row.rank,
        "leader": row.rank == 1,
        "mark": mark,
        "mark_title": mark_title,
        "code_url": code.get("url", ""),
        "paper": safe_url(m.get("paper")),
        "flags": list(row.flags),
        "authors": _authors(m),
        "headline": row.headline.mean,
        "headline_text": fmt_mean_std(row.headline.mean, row.headline.std),
        "interval": fmt_interval(row.headline.ci_low, row.headline.ci_high),
        "n_seeds": len(row.replicates),
        "params": m.get("n_parameters"),
        "params_text": fmt_count(m.get("n_parameters")),
        "runtime": runtime.mean if runtime else None,
        "runtime_text": fmt_resource(runtime.mean) if runtime else MISSING,
        "memory": memory.mean if memory else None,
        "memory_text": fmt_resource(memory.mean, 0) if memory else MISSING,
        "submitted": row.submitted[:10],
    }


def _column(board: Leaderboard, key: str, name: str | None = None) -> dict[str, Any]:
    """A sortable metric column: human name, direction mark (quality) or ``count``."""
    return {
        "label": header(board, key, name),
        "key": key,
        "better": better(board, key),
        "title": describe(key).tooltip(),
    }


def _cell(row: RankedEntry, key: str, spread: bool = True) -> tuple[Any, str]:
    s = row.metrics.get(key)
    return (s.mean if s else None), value_text(key, s, spread)


def comparison_text(row: RankedEntry) -> str:
    """One line on how a row compares with the row above (empty for the first row)."""
    c = row.vs_above
    if c is None:
        return ""
    if c.method == OVERLAP:
        if c.not_separated:
            return (
                "not shown to differ from the entry above: 95% intervals overlap (no paired "
                "replicates)"
            )
        return "differs from the entry above: 95% intervals do not overlap (no paired replicates)"
    verdict = "not shown to differ from" if c.not_separated else "differs from"
    return (
        f"{verdict} the entry above: difference {fmt_value(c.difference)}, 95% {c.method} "
        f"interval {fmt_interval(c.ci_low, c.ci_high)}"
    )


def _metric_tables(board: Leaderboard) -> list[dict[str, Any]]:
    out = []
    for family, keys in scalar_families(board.metric_keys, board.headline).items():
        rows = [{"name": r.name, "cells": [_cell(r, k) for k in keys]} for r in board.rows]
        doc = glossary_families().get(family)
        out.append(
            {
                "family": family,
                "title": doc.title if doc else "",
                "columns": [_column(board, k) for k in keys],
                "rows": rows,
            }
        )
    return out


def _series_tables(board: Leaderboard) -> list[dict[str, Any]]:
    out = []
    for family, bases in series_families(board.metric_keys).items():
        tables = []
        for base, points in bases.items():
            name = _series_name(base, points[0][1])
            tables.append(
                {
                    "base": base,
                    "name": name,
                    "arrow": mark(board, points[0][1]),
                    "columns": [_column(board, k, f"@{t:g}") for t, k in points],
                    "rows": [
                        {
                            "name": r.name,
                            "cells": [_cell(r, k, spread=False) for _, k in points],
                        }
                        for r in board.rows
                    ],
                }
            )
        out.append({"family": family, "tables": tables})
    return out


def _series_name(base: str, first_key: str) -> str:
    """Human name of a threshold series (``AP at IoU t``), or its base key."""
    info = describe(first_key)
    return info.generic if info.documented else base


def _group_tables(board: Leaderboard) -> list[dict[str, Any]]:
    fields: dict[str, set[str]] = {}
    for r in board.rows:
        for e in r.replicates:
            for g in e.report.groups:
                fields.setdefault(g.field, set()).update(g.values)
    out = []
    for fld, names in sorted(fields.items()):
        groups = sorted(names)
        rows = []
        for r in board.rows:
            values = [group_mean(r, fld, g, board.headline) for g in groups]
            worst = worst_group(r, fld, board.headline, board.direction)
            rows.append(
                {
                    "name": r.name,
                    "cells": [(v, fmt_value(v)) for v in values],
                    "worst": f"{worst[0]}: {fmt_value(worst[1])}" if worst else MISSING,
                }
            )
        out.append(
            {
                "field": fld,
                "columns": [
                    {"label": g, "key": f"group:{g}", "better": board.direction} for g in groups
                ],
                "rows": rows,
            }
        )
    return out


def _provenance(board: Leaderboard) -> list[dict[str, Any]]:
    out = []
    for r in board.rows:
        for e in r.replicates:
            m = e.manifest
            code = m.get("code") if isinstance(m.get("code"), Mapping) else {}
            out.append(
                {
                    "name": r.name,
                    "seed": e.seed,
                    "kind": m.get("kind", ""),
                    "code_url": code.get("url", ""),
                    "commit": str(code.get("commit", ""))[:12],
                    "training_data": m.get("training_data", ""),
                    "hardware": m.get("hardware", ""),
                    "license": m.get("license", ""),
                    "submission_sha256": e.submission_sha256[:16],
                    "manifest_sha256": e.manifest_sha256[:16],
                    "dataset_checksum": e.report.provenance.dataset_checksum[:16],
                    "cellbench_version": e.report.provenance.cellbench_version,
                }
            )
    return out


_SECTIONS = (
    ("metrics", "Per-metric charts"),
    ("confusion", "Confusion matrices"),
    ("curves", "Metrics versus threshold"),
    ("overlays", "Example errors"),
)


def render_board_html(
    board: Leaderboard,
    figures: Sequence[FigureRef] = (),
    root: str = "../../../",
    notes: Sequence[str] = (),
) -> str:
    """Render one leaderboard page.

    Args:
        board: The ranked leaderboard.
        figures: Plots to show, with paths relative to the page.
        root: Relative path from the page to the site root (for assets and the index).
        notes: Extra remarks from publishing (e.g. why overlays are missing).

    Returns:
        The HTML document.
    """
    key = board.key
    card = board.dataset_card
    sections = []
    for section, heading in _SECTIONS:
        items = [f for f in figures if f.section == section]
        if items:
            sections.append({"id": section, "heading": heading, "figures": items})
    return render(
        "board.html",
        root=root,
        title=f"{card.get('title') or key.ref} — {key.task} ({key.split})",
        key=key,
        card=card_view(card, key.ref, board.dataset_checksum),
        headline=board.headline,
        headline_name=describe(board.headline).name,
        headline_title=describe(board.headline).tooltip(),
        headline_phrase=headline_phrase(board),
        headline_definition=describe(board.headline).definition,
        direction_word=direction_word(board.direction),
        better="higher" if board.direction == "higher" else "lower",
        pct=round(board.ci_level * 100),
        rows=[_rank_row(r) for r in board.rows],
        rules=list(RANKING_RULES),
        metric_tables=_metric_tables(board),
        series=_series_tables(board),
        groups=_group_tables(board),
        figure_sections=sections,
        provenance=_provenance(board),
        notes=[*board.notes, *notes],
    )


def render_index_html(boards: Sequence[tuple[Leaderboard, str]]) -> str:
    """Site index: every dataset with its card and links to its leaderboards.

    Args:
        boards: ``(board, relative folder)`` pairs.

    Returns:
        The HTML document.
    """
    by_dataset: dict[str, list[tuple[Leaderboard, str]]] = {}
    for board, rel in boards:
        by_dataset.setdefault(board.key.ref, []).append((board, rel))
    datasets = []
    for ref, items in sorted(by_dataset.items()):
        card = items[0][0].dataset_card
        rows = []
        for board, rel in sorted(items, key=lambda t: (t[0].key.task, t[0].key.split)):
            top = board.rows[0]
            rows.append(
                {
                    "href": f"{rel}/index.html",
                    "task": board.key.task,
                    "split": board.key.split,
                    "headline": board.headline,
                    "direction_word": direction_word(board.direction),
                    "leader": top.name,
                    "value": top.headline.mean,
                    "value_text": fmt_mean_std(top.headline.mean, top.headline.std),
                    "n_entries": len(board.rows),
                }
            )
        datasets.append(
            {
                "ref": ref,
                "title": str(card.get("title") or ref),
                "card": card_view(card, ref, items[0][0].dataset_checksum),
                "boards": rows,
            }
        )
    return render("index.html", root="", datasets=datasets)


def render_glossary_html(boards: Sequence[tuple[Leaderboard, str]]) -> str:
    """The metric glossary page: every documented metric family and where it is used.

    Args:
        boards: ``(board, relative folder)`` pairs (to link each family to its boards).

    Returns:
        The HTML document.
    """
    used: dict[str, list[dict[str, str]]] = {}
    for board, rel in boards:
        for family in sorted({k.split("/", 1)[0] for k in board.metric_keys}):
            used.setdefault(family, []).append(
                {"href": f"{rel}/index.html", "label": f"{board.key.ref} {board.key.task}"}
            )
    docs = sorted(glossary_families().values(), key=lambda d: (d.family not in used, d.title))
    families = []
    for doc in docs:
        values = []
        for v in doc.values:
            kind = "count" if v.kind == "count" else f"quality, {direction_word(v.direction)}"
            values.append(
                {
                    "anchor": anchor_of(doc.family, v.pattern),
                    "pattern": v.pattern,
                    "name": generic_name(v),
                    "unit": v.unit,
                    "kind_text": kind,
                    "definition": v.definition,
                }
            )
        families.append(
            {
                "family": doc.family,
                "title": doc.title,
                "module": doc.module,
                "class_name": doc.class_name,
                "boards": used.get(doc.family, []),
                "entries": values,
                "docstring": doc.docstring,
            }
        )
    return render("glossary.html", root="", families=families)
