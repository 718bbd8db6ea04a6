"""The commands that reproduce a leaderboard entry from a fresh clone, built from checked fields.

Commands are assembled only from validated manifest fields (http(s) code URL, hexadecimal
commit, dataset reference, task and split names) and quoted for the shell with
:func:`shlex.quote`, so a hostile manifest cannot smuggle a command into what a reader copies.
Commands written in an entry's notes (the baselines name their exact training command there)
are included only when they consist of plain characters (letters, digits, ``. _ / @ = : + , -``
and spaces) and start with ``python``, ``cellbench`` or ``make``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

from cellbench.leaderboard.entry import LeaderboardEntry
from cellbench.leaderboard.formatting import safe_url

CELLBENCH_REPO = "https://github.com/cellbench/cellbench"
_SAFE_COMMAND = re.compile(r"^(python|cellbench|make) [A-Za-z0-9._/@=:+, -]+$")
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")


def note_commands(notes: str) -> list[str]:
    """Plain commands quoted in backticks in an entry's notes (see the module docstring)."""
    found = re.findall(r"`([^`\n]+)`", notes or "")
    return [c.strip() for c in found if _SAFE_COMMAND.match(c.strip())]


def reproduce_commands(
    entry: LeaderboardEntry, links: Mapping[str, str] | None = None
) -> list[str]:
    """Shell lines that reproduce an entry's scores, starting from nothing but a shell.

    Args:
        entry: The entry (or control).
        links: Its published files (``predictions``: page-relative path of kept predictions).

    Returns:
        Lines, comments included, ready to paste into a shell.
    """
    m = entry.manifest
    key = entry.key
    q = shlex.quote
    if m.get("kind") == "control":
        return [
            f"git clone {CELLBENCH_REPO} cellbench && cd cellbench",
            "pip install -e .",
            f"cellbench datasets pull {q(key.ref)}",
            f"cellbench leaderboard controls {q(key.ref)} {q(key.task)} --split {q(key.split)} "
            "--root leaderboards",
        ]
    code = m.get("code") if isinstance(m.get("code"), Mapping) else {}
    url = safe_url(code.get("url", ""))
    commit = str(code.get("commit", ""))
    lines = ["# the entry's code, at the commit it was submitted with"] if url else []
    if url:
        lines.append(f"git clone {q(url)} entry-code && cd entry-code")
        if _COMMIT.match(commit):
            lines.append(f"git checkout {commit}")
    lines.append(
        "pip install -e ." if url.rstrip("/") == CELLBENCH_REPO else "pip install cellbench"
    )
    lines.append(f"cellbench datasets pull {q(key.ref)}")
    commands = note_commands(str(m.get("notes", "")))
    if commands:
        lines.append("# how the authors made it (from the entry's notes)")
        lines += commands
    predictions = (links or {}).get("predictions")
    if predictions:
        local = predictions.rsplit("/", 1)[-1].removesuffix(".zip")
        lines.append("# score the kept predictions (the file linked above)")
        if predictions.endswith(".zip"):
            lines.append(f"unzip {q(local + '.zip')}")
        lines.append(
            f"cellbench score {q(local)} --task {q(key.task)} --dataset {q(key.ref)} "
            f"--split {q(key.split)} --out report.json"
        )
    else:
        what = (
            "predictions" if m.get("kind") == "predictions" else f"{m.get('kind', 'model')} model"
        )
        lines.append(f"# score it: the manifest above, with `submission:` pointing at the {what}")
        lines.append("cellbench submit submission.yaml")
    return lines
