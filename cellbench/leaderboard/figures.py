"""Which charts a board gets, and the data each one draws.

A handful per board, each answering one question; everything else stays in sortable tables:

* ``metrics``: the headline of every entry with its 95% interval, controls beside them (a
  forest plot, ``plots/bar-<headline>.png``), and one such chart per metric the task lists in
  :attr:`~cellbench.tasks.base.Task.key_metrics`;
* ``groups``: the headline per group, for every metadata field with at least two groups in the
  split (does the ranking hold on every plate, microscope, cell line?);
* ``curves``: precision, recall, F1 or AP against the IoU threshold (instance segmentation);
* ``errors``: the error counts the task lists in
  :attr:`~cellbench.tasks.base.Task.error_breakdown` (split/merge/missed/false objects;
  AOGM operations and division errors), one stacked bar per entry;
* ``confusion``: the confusion matrices of the top entries (classification, semantic).

Charts are drawn through :mod:`cellbench.leaderboard.figcache`, keyed by the data they show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellbench.leaderboard import figcache, plots
from cellbench.leaderboard.entry import LeaderboardEntry
from cellbench.leaderboard.formatting import fmt_interval, fmt_value, is_number
from cellbench.leaderboard.glossary import describe
from cellbench.leaderboard.html import FigureRef
from cellbench.leaderboard.layout import curve_series, series_families
from cellbench.leaderboard.markdown import group_mean
from cellbench.leaderboard.ranking import Leaderboard, RankedEntry

#: Most entries drawn in one chart (the tables list every entry).
MAX_ROWS = 25


def _unit_range(key: str) -> tuple[float, float] | None:
    unit = describe(key).unit
    if unit.startswith("fraction"):
        return (0.0, 1.0)
    if unit.startswith("correlation") or unit.startswith("index -1"):
        return (-1.0, 1.0)
    return None


def _axis_label(board: Leaderboard, key: str) -> str:
    info = describe(key)
    word = (
        "lower is better" if board.directions.get(key, "higher") == "lower" else "higher is better"
    )
    unit = f" ({info.unit})" if info.unit and not info.unit.startswith("fraction") else ""
    return f"{info.name}{unit}, {word}"


def _drawn_rows(board: Leaderboard) -> list[RankedEntry]:
    return board.rows[:MAX_ROWS]


def forest(board: Leaderboard, key: str, folder: Path) -> FigureRef | None:
    """The forest plot of one metric (entries with intervals, then controls)."""
    is_head = key == board.headline
    rows: list[dict[str, Any]] = []
    for r in _drawn_rows(board):
        s = r.metrics.get(key)
        if s is None:
            continue
        lo, hi = (s.ci_low, s.ci_high) if is_head else (s.mean - s.std, s.mean + s.std)
        rows.append(
            {
                "label": r.name,
                "mean": s.mean,
                "low": lo if is_number(lo) else None,
                "high": hi if is_number(hi) else None,
                "role": "leader" if r.rank == 1 else "entry",
            }
        )
    for c in board.controls:
        s = c.metrics.get(key)
        if s is None:
            continue
        rows.append(
            {
                "label": c.name,
                "mean": s.mean,
                "low": s.ci_low if is_head and is_number(s.ci_low) else None,
                "high": s.ci_high if is_head and is_number(s.ci_high) else None,
                "role": "control",
            }
        )
    if not any(is_number(r["mean"]) or r["mean"] in (math.inf, -math.inf) for r in rows):
        return None
    info = describe(key)
    whisker = (
        f"lines: {round(board.ci_level * 100)}% bootstrap interval over test {board_unit(board)}s"
        if is_head
        else "lines: ± standard deviation over seeds (none for one seed)"
    )
    name = f"plots/bar-{plots.file_stem(key)}.png"
    title = info.name if not is_head else f"{info.name}: the headline"
    inputs = {"rows": rows, "x": _axis_label(board, key), "title": title, "w": whisker}
    figcache.draw(
        folder / name,
        "forest",
        inputs,
        lambda p: plots.forest_chart(
            rows, inputs["x"], title, p, whisker=whisker, unit_range=_unit_range(key)
        ),
    )
    leader = board.rows[0]
    s = leader.metrics.get(key)
    summary = f"leader {leader.name} {fmt_value(s.mean if s else None)}"
    if is_head:
        summary += f" {fmt_interval(s.ci_low, s.ci_high) if s else ''}"
    caption = (
        f"{info.name} of every entry (dot; the leader in orange)"
        + (f" with its {round(board.ci_level * 100)}% bootstrap interval" if is_head else "")
        + ("; controls computed by cellbench in grey (diamonds)" if board.controls else "")
        + f". {_axis_label(board, key).split(', ')[-1].capitalize()}."
    )
    return FigureRef("metrics", name, caption, f"Dot plot of {info.name} per entry: {summary}.")


def board_unit(board: Leaderboard) -> str:
    """What the bootstrap resampled (``image``, ``sequence``)."""
    for r in board.rows:
        return r.replicates[0].report.headline.resampling_unit or "sample"
    return "sample"


def groups(board: Leaderboard, folder: Path) -> list[FigureRef]:
    """One dot plot per metadata field with at least two groups: the headline per group."""
    levels: dict[str, set[str]] = {}
    for r in [*board.rows, *board.controls]:
        for e in r.replicates:
            for g in e.report.groups:
                levels.setdefault(g.field, set()).update(g.values)
    out = []
    drawn = [*_drawn_rows(board)[:12], *board.controls]
    for fld, names in sorted(levels.items()):
        if len(names) < 2:
            continue
        ordered = sorted(names)
        values = [[group_mean(r, fld, g, board.headline) for g in ordered] for r in drawn]
        labels = [r.name for r in drawn]
        info = describe(board.headline)
        name = f"plots/groups-{plots.file_stem(fld)}.png"
        title = f"{info.name} by {fld}"
        xlabel = _axis_label(board, board.headline)
        inputs = {"names": labels, "groups": ordered, "values": values, "x": xlabel, "t": title}
        figcache.draw(
            folder / name,
            "groups",
            inputs,
            lambda p, o=ordered, v=values, lb=labels, t=title, x=xlabel: plots.group_chart(
                lb, o, v, x, t, p
            ),
        )
        spread = [
            max(v for v in row if v is not None) - min(v for v in row if v is not None)
            for row in values
            if sum(v is not None for v in row) > 1
        ]
        worst = f" The widest gap between groups is {fmt_value(max(spread))}." if spread else ""
        out.append(
            FigureRef(
                "groups",
                name,
                f"{info.name} of each entry in each {fld} ({', '.join(ordered)}), "
                f"from the test samples of that group.{worst}",
                f"Dot plot of {info.name} per {fld} for each entry.",
            )
        )
    return out


def curves(board: Leaderboard, folder: Path, top_k: int) -> list[FigureRef]:
    """Score-versus-threshold curves, for metrics with precision/recall/F1/AP series."""
    out = []
    rows = board.rows[: max(top_k, 5)]
    for family, series in series_families(board.metric_keys).items():
        drawn = curve_series(series, preferred_only=True)
        if not drawn:
            continue
        panels = []
        for base, points in drawn.items():
            info = describe(points[0][1])
            lines = [
                (r.name, [r.metrics[k].mean if k in r.metrics else None for _, k in points])
                for r in rows
            ]
            unit = all(
                0 <= v <= 1 for _, ys in lines for v in ys if v is not None and math.isfinite(v)
            )
            panels.append(
                {
                    "title": info.generic if info.documented else base.split("/", 1)[-1],
                    "thresholds": [t for t, _ in points],
                    "lines": lines,
                    "unit": unit,
                    "xlabel": "IoU threshold"
                    if info.documented and "IoU" in info.generic
                    else "threshold",
                }
            )
        doc = describe(next(iter(drawn.values()))[0][1])
        title = f"{doc.family_title or family}: against the threshold"
        name = f"plots/curves-{plots.file_stem(family)}.png"
        figcache.draw(
            folder / name,
            "curves",
            {"panels": panels, "title": title},
            lambda p, pn=panels, t=title: plots.curves_chart(pn, t, p),
        )
        labels = ", ".join(p["title"] for p in panels)
        out.append(
            FigureRef(
                "curves",
                name,
                f"{labels} of the top {len(rows)} entries at each threshold: a stricter "
                "threshold asks for a closer match to the ground truth.",
                f"Line charts of {labels} against the threshold ({family}).",
            )
        )
    return out


def errors(board: Leaderboard, folder: Path, breakdown: Mapping[str, Any]) -> list[FigureRef]:
    """Stacked error counts per entry, one chart per group of counts the task declares."""
    out = []
    drawn = [*_drawn_rows(board)[:12], *board.controls]
    for title, pairs in breakdown.items():
        present = [(label, key) for label, key in pairs if key in board.metric_keys]
        if not present:
            continue
        counts = [
            [
                r.metrics[k].mean if k in r.metrics and is_number(r.metrics[k].mean) else None
                for _, k in present
            ]
            for r in drawn
        ]
        if not any(v for row in counts for v in row if v):
            continue
        names = [r.name for r in drawn]
        labels = [label for label, _ in present]
        name = f"plots/errors-{plots.file_stem(title)}.png"
        xlabel = "count on the test split (mean over seeds)"
        figcache.draw(
            folder / name,
            "errors",
            {"names": names, "labels": labels, "counts": counts, "title": title},
            lambda p, n=names, lb=labels, c=counts, t=title, x=xlabel: plots.breakdown_chart(
                n, lb, c, t, x, p
            ),
        )
        out.append(
            FigureRef(
                "errors",
                name,
                f"{title}: {', '.join(labels)} of each entry, summed over the test split "
                "(fewer is better); definitions in the glossary.",
                f"Stacked bar chart of {title.lower()} per entry.",
            )
        )
    return out


def find_confusion(entry: LeaderboardEntry) -> tuple[list[list[float]], list[str]] | None:
    """Confusion-matrix counts and class names from a report's metric details, if present.

    Looks for a details value under a key containing ``confusion`` that is a square matrix (or
    a mapping holding one under ``counts``/``matrix``); class names come from the details
    (``class_names``/``labels``) or the dataset card's ``label`` class table.
    """

    def square(value: Any) -> list[list[float]] | None:
        if isinstance(value, Mapping):
            for k in ("counts", "matrix", "confusion_matrix"):
                if k in value:
                    return square(value[k])
            return None
        if (
            isinstance(value, list)
            and value
            and all(isinstance(r, list) and len(r) == len(value) for r in value)
            and all(isinstance(x, int | float) for r in value for x in r)
        ):
            return value
        return None

    for result in entry.report.results:
        details = result.get("details") or {}
        if not isinstance(details, Mapping):
            continue
        keys = sorted(details, key=lambda k: (k != "confusion_matrix", str(k)))
        for k in keys:
            v = details[k]
            if "confusion" not in str(k).lower():
                continue
            matrix = square(v)
            if matrix is None:
                continue
            names = details.get("class_names") or details.get("labels")
            if isinstance(v, Mapping):
                names = v.get("class_names") or v.get("labels") or names
            if not names:
                names = (entry.dataset_card.get("class_names") or {}).get("label") or []
            return matrix, [str(n) for n in names]
    return None


def confusion(
    board: Leaderboard, folder: Path, unit: str, top_k: int
) -> tuple[list[FigureRef], list[str]]:
    """Confusion matrices of the top entries (first seed), or a note for each missing one."""
    figures, notes = [], []
    for row in board.rows[:top_k]:
        entry = row.replicates[0]
        found = find_confusion(entry)
        if found is None:
            notes.append(f"{row.name}: no confusion matrix in the report's details")
            continue
        matrix, names = found
        name = f"plots/confusion-{plots.file_stem(entry.entry_id)}.png"
        title = f"{row.name} (seed {entry.seed})"
        figcache.draw(
            folder / name,
            "confusion",
            {"m": matrix, "names": names, "title": title},
            lambda p, m=matrix, n=names, t=title: plots.confusion_chart(m, n, t, p),
        )
        figures.append(
            FigureRef(
                "confusion",
                name,
                f"{row.name}, seed {entry.seed}: rows are the true class, columns the predicted "
                f"class; colour is the fraction of the true class, numbers are {unit}.",
                f"Confusion matrix of {row.name}",
            )
        )
    return figures, notes


def board_figures(
    board: Leaderboard, folder: Path, task: Any, *, top_k: int
) -> tuple[list[FigureRef], list[str]]:
    """Every chart of a board (see the module docstring) and notes on what is missing."""
    figures: list[FigureRef] = []
    notes: list[str] = []
    for key in [board.headline, *task.key_metrics]:
        if key == board.headline and figures:
            continue
        if key not in board.metric_keys:
            continue
        ref = forest(board, key, folder)
        if ref is not None:
            figures.append(ref)
    figures += groups(board, folder)
    figures += curves(board, folder, top_k)
    figures += errors(board, folder, task.error_breakdown)
    if task.confusion_unit is not None:
        refs, why = confusion(board, folder, task.confusion_unit, top_k)
        figures += refs
        notes += why
    return figures, notes
