"""What commands print: tables that never cut an id, JSON for scripts, ``--out -`` as stdout.

Every command that lists or reports something takes ``--json`` (one JSON document on stdout,
nothing else there; messages go to stderr) so scripts never parse tables. Tables size their id
columns to the longest id, so neither a pipe nor an 80-column terminal prints ``dsb2018-s…``.
A file option given ``-`` writes to stdout.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:  # rich is imported when a table is printed, not on --json paths
    from rich.console import Console
    from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

#: Width of tables written to a pipe or file (a terminal uses its own width).
PIPE_WIDTH = 220
#: The file name that means standard output.
STDOUT = "-"


def console(*, stderr: bool = False) -> Console:
    """A rich console: the terminal's width, or :data:`PIPE_WIDTH` when piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPE_WIDTH
    return Console(highlight=False, soft_wrap=True, width=width, stderr=stderr)


def json_option(func: F) -> F:
    """The ``--json`` flag (parameter ``as_json``), spelled the same on every command."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout instead of tables.",
    )(func)


def strict_json(data: Any) -> Any:
    """``data`` with NaN and infinities as ``None`` (standard JSON has no such numbers)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {str(k): strict_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(v) for v in data]
    return data


def emit_json(data: Any) -> None:
    """Print ``data`` as indented standard JSON on stdout (paths and the like as strings)."""
    text = json.dumps(strict_json(data), indent=2, default=str, ensure_ascii=False)
    click.echo(text)


def id_column(table: Table, header: str, ids: Iterable[str]) -> None:
    """Add a column that shows every id in full, however narrow the terminal."""
    width = max([len(header), *(len(i) for i in ids)])
    table.add_column(header, no_wrap=True, min_width=width)


def is_stdout(path: str | Path | None) -> bool:
    """Whether a file option names standard output (``-``)."""
    return path is not None and str(path) == STDOUT


def info(message: str, *, quiet_stdout: bool) -> None:
    """Print a human message: on stderr when stdout carries data (JSON or ``--out -``)."""
    click.echo(message, err=quiet_stdout)
