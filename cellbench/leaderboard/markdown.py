"""Markdown rendering: one README per leaderboard, and an index of every leaderboard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cellbench.leaderboard.display import header, headline_phrase, mark, value_text
from cellbench.leaderboard.formatting import (
    MISSING,
    direction_word,
    fmt_count,
    fmt_interval,
    fmt_mean_std,
    fmt_resource,
    fmt_value,
    md_code,
    md_escape,
    md_fence,
    md_link,
)
from cellbench.leaderboard.glossary import describe
from cellbench.leaderboard.layout import scalar_families, series_families
from cellbench.leaderboard.ranking import RANKING_RULES, Leaderboard, RankedEntry


def rank_label(row: RankedEntry) -> str:
    """Rank text with its markers: ``=`` tied with the entry above, ``≈`` not shown to differ."""
    mark = "=" if row.tied_with_above else ("≈" if row.similar_to_above else "")
    return f"{mark}{row.rank}"


def _authors(manifest: Mapping[str, Any]) -> str:
    authors = manifest.get("authors") or []
    if isinstance(authors, str):
        authors = [authors]
    return ", ".join(str(a) for a in authors)


def _row_flags(row: RankedEntry) -> str:
    return "; ".join(row.flags)


def _table(header: Sequence[str], align: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def card_lines(card: Mapping[str, Any], ref: str, checksum: str = "") -> list[str]:
    """Dataset card summary lines (title, license, annotation provenance, splits, citation)."""
    lines = []
    title = card.get("title") or ref
    lines.append(f"**Dataset**: {md_link(title, card.get('homepage'))} ({md_code(ref)})")
    if card.get("license"):
        lines.append(f"**License**: {md_escape(card['license'])}")
    ann = card.get("annotation") or {}
    if isinstance(ann, Mapping) and ann.get("provenance"):
        extra = f" — {md_escape(ann['details'])}" if ann.get("details") else ""
        lines.append(f"**Annotation**: {md_escape(ann['provenance'])}{extra}")
    splits = card.get("splits") or {}
    if isinstance(splits, Mapping) and splits.get("method"):
        lines.append(f"**Splits**: {md_escape(splits['method'])}")
    if checksum:
        lines.append(f"**Dataset checksum**: {md_code(checksum)}")
    return lines


def render_markdown(board: Leaderboard, plots: Mapping[str, str] | None = None) -> str:
    """Render one leaderboard as a README.

    Args:
        board: The ranked leaderboard.
        plots: Relative paths of rendered plots (``{"headline": "plots/....png", ...}``); the
            headline chart is embedded when given.

    Returns:
        Markdown text.
    """
    key = board.key
    card = board.dataset_card
    title = card.get("title") or key.ref
    head = board.headline
    out = [
        f"# {md_escape(title)} — {md_escape(key.task)} ({md_escape(key.split)} split)",
        "",
        "<!-- machine-written by `cellbench leaderboard publish`; edit the entry files instead -->",
        "",
    ]
    out += [line + "  " for line in card_lines(card, key.ref, board.dataset_checksum)]
    out += [
        "",
        f"**Headline metric**: {md_escape(headline_phrase(board))}, {md_code(head)}; "
        f"{round(board.ci_level * 100)}% bootstrap interval over test samples.",
        "",
    ]
    rank_header = [
        "rank",
        "entry",
        "authors",
        f"{md_escape(describe(head).name)} (mean ± std)",
        f"{round(board.ci_level * 100)}% interval",
        "seeds",
        "params",
        "runtime (s)",
        "peak memory (MB)",
        "submitted",
        "flags",
    ]
    rows = []
    for r in board.rows:
        m = r.manifest
        code = m.get("code") if isinstance(m.get("code"), Mapping) else {}
        runtime, memory = r.resource("runtime_s"), r.resource("peak_memory_mb")
        rows.append(
            [
                rank_label(r),
                md_link(r.name, code.get("url")),
                md_escape(_authors(m)),
                fmt_mean_std(r.headline.mean, r.headline.std),
                fmt_interval(r.headline.ci_low, r.headline.ci_high),
                str(len(r.replicates)),
                fmt_count(m.get("n_parameters")),
                fmt_resource(runtime.mean) if runtime else MISSING,
                fmt_resource(memory.mean, 0) if memory else MISSING,
                md_escape(r.submitted[:10]),
                md_escape(_row_flags(r)),
            ]
        )
    out.append(_table(rank_header, ["r", "l", "l", "r", "l", "r", "r", "r", "r", "l", "l"], rows))
    out += [
        "",
        "Markers: `=` same value as the entry above; `≈` not shown to differ from the entry above "
        "(paired bootstrap, see the rules).",
    ]
    out += [""] + [f"- {md_escape(rule)}" for rule in RANKING_RULES]
    if plots and plots.get("headline"):
        out += ["", f"![{md_escape(describe(head).name)} per entry]({plots['headline']})"]

    out += ["", "## All metrics (mean ± std over seeds)", ""]
    for family, keys in scalar_families(board.metric_keys, board.headline).items():
        title = describe(keys[0]).family_title
        out += [f"### {md_escape(title or family)} ({md_code(family, in_table=False)})", ""]
        head_row = ["entry"] + [md_escape(header(board, k)) for k in keys]
        body = [
            [md_escape(r.name)] + [value_text(k, r.metrics.get(k)) for k in keys]
            for r in board.rows
        ]
        out += [_table(head_row, ["l"] + ["r"] * len(keys), body), ""]

    series = series_families(board.metric_keys)
    if series:
        out += ["## Metrics by threshold (mean over seeds)", ""]
    for family, bases in series.items():
        out += [f"<details><summary>{md_escape(family)}</summary>", ""]
        for base, points in bases.items():
            info = describe(points[0][1])
            name = f" {md_escape(info.generic)}" if info.documented else ""
            out += [f"**{md_escape(base)}**{name} ({mark(board, points[0][1])})", ""]
            head_row = ["entry"] + [f"@{t:g}" for t, _ in points]
            body = [
                [md_escape(r.name)] + [value_text(k, r.metrics.get(k), False) for _, k in points]
                for r in board.rows
            ]
            out += [_table(head_row, ["l"] + ["r"] * len(points), body), ""]
        out += ["</details>", ""]

    group_section = _groups_markdown(board)
    if group_section:
        out += ["## Per group", "", *group_section]

    out += ["## Provenance and reproduction", ""]
    out.append(
        "Show this board: "
        + md_code(f"cellbench leaderboard show {key.ref} {key.task} --split {key.split}")
        + ". "
        "Each entry was scored with `cellbench submit MANIFEST.yaml`; the digests below identify "
        "the exact submission, manifest and dataset build."
    )
    out.append("")
    prov_header = [
        "entry",
        "seed",
        "kind",
        "submission sha256",
        "manifest sha256",
        "dataset checksum",
        "cellbench",
    ]
    body = []
    for r in board.rows:
        for e in r.replicates:
            body.append(
                [
                    md_escape(r.name),
                    str(e.seed),
                    md_escape(e.manifest.get("kind", "")),
                    md_code(e.submission_sha256[:16]),
                    md_code(e.manifest_sha256[:16]),
                    md_code(e.report.provenance.dataset_checksum[:16]),
                    md_escape(e.report.provenance.cellbench_version),
                ]
            )
    out += [_table(prov_header, ["l", "r", "l", "l", "l", "l", "l"], body), ""]
    if board.notes:
        out += ["## Notes", ""] + [f"- {md_escape(n)}" for n in board.notes] + [""]
    citation = card.get("citation")
    if citation:
        out += ["## Citation", "", *md_fence(citation), ""]
    return "\n".join(out).rstrip() + "\n"


def _groups_markdown(board: Leaderboard) -> list[str]:
    """Headline value per group and the worst group, mean over seeds, one table per field."""
    fields: dict[str, set[str]] = {}
    for r in board.rows:
        for e in r.replicates:
            for g in e.report.groups:
                fields.setdefault(g.field, set()).update(g.values)
    out: list[str] = []
    for fld, names in sorted(fields.items()):
        groups = sorted(names)
        out += [f"### by {md_escape(fld)} ({md_escape(describe(board.headline).name)})", ""]
        header = ["entry"] + [md_escape(g) for g in groups] + ["worst group"]
        body = []
        for r in board.rows:
            cells = [md_escape(r.name)]
            for g in groups:
                cells.append(fmt_value(group_mean(r, fld, g, board.headline)))
            worst = worst_group(r, fld, board.headline, board.direction)
            cells.append(f"{md_escape(worst[0])}: {fmt_value(worst[1])}" if worst else MISSING)
            body.append(cells)
        out += [_table(header, ["l"] + ["r"] * (len(groups) + 1), body), ""]
    return out


def group_mean(row: RankedEntry, fld: str, group: str, metric: str) -> float | None:
    """Mean over replicates of a metric's value in one group (None if absent)."""
    values = []
    for e in row.replicates:
        for g in e.report.groups:
            if g.field == fld and group in g.values and metric in g.values[group]:
                values.append(g.values[group][metric])
    if not values:
        return None
    return float(sum(values) / len(values))


def worst_group(
    row: RankedEntry, fld: str, metric: str, direction: str
) -> tuple[str, float] | None:
    """Group with the worst seed-averaged metric value for one field."""
    names = {n for e in row.replicates for g in e.report.groups if g.field == fld for n in g.values}
    scored = [(n, group_mean(row, fld, n, metric)) for n in sorted(names)]
    scored = [(n, v) for n, v in scored if v is not None and v == v]
    if not scored:
        return None
    pick = max if direction == "lower" else min
    return pick(scored, key=lambda t: t[1])


def render_index_markdown(boards: Sequence[tuple[Leaderboard, str]]) -> str:
    """Markdown index of every leaderboard (``(board, relative folder)`` pairs)."""
    out = [
        "# cellbench leaderboards",
        "",
        "<!-- machine-written by `cellbench leaderboard publish` -->",
        "",
    ]
    by_dataset: dict[str, list[tuple[Leaderboard, str]]] = {}
    for board, rel in boards:
        by_dataset.setdefault(board.key.ref, []).append((board, rel))
    for ref, items in sorted(by_dataset.items()):
        card = items[0][0].dataset_card
        out += [f"## {md_escape(card.get('title') or ref)} ({md_code(ref)})", ""]
        out += [line + "  " for line in card_lines(card, ref)]
        out.append("")
        header = ["task", "split", "headline", "leader", "value", "entries"]
        body = []
        for board, rel in sorted(items, key=lambda t: (t[0].key.task, t[0].key.split)):
            top = board.rows[0]
            body.append(
                [
                    f"[{md_escape(board.key.task)}]({rel}/README.md)",
                    md_escape(board.key.split),
                    f"{md_escape(describe(board.headline).name)} "
                    f"({direction_word(board.direction)})",
                    md_escape(top.name),
                    fmt_mean_std(top.headline.mean, top.headline.std),
                    str(len(board.rows)),
                ]
            )
        out += [_table(header, ["l", "l", "l", "l", "r", "r"], body), ""]
    return "\n".join(out).rstrip() + "\n"
