"""No module outside cellbench/tasks/ branches on a task's name: the task is the plugin.

Scans the source with ``ast`` for task-name string literals used in comparisons (``==``,
``!=``, ``in``, ``not in``, including tuples/sets/lists of names), in ``match`` cases and as
keys of dict literals. Declarations (a baseline's ``tasks = ("unet",)``, a synthetic dataset's
task list) are not comparisons and are allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from cellbench.tasks import task_names

PACKAGE = Path(__file__).resolve().parents[2] / "cellbench"
NAMES = frozenset(task_names())


def _names_in(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and node.value in NAMES:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [n for e in node.elts for n in _names_in(e)]
    return []


def task_name_branches(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` of every comparison, match case or dict key on a task-name literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(node.lineno, n) for n in _names_in(operand)]
        elif isinstance(node, ast.MatchValue):
            found += [(node.lineno, n) for n in _names_in(node.value)]
        elif isinstance(node, ast.Dict):
            found += [(node.lineno, n) for k in node.keys if k is not None for n in _names_in(k)]
    return found


def test_the_scan_finds_branches():
    source = (
        'if task == "tracking": pass\n'
        'ok = t in ("classification", "x")\n'
        'KEYS = {"semantic-segmentation": 1}\n'
        "match t:\n"
        '    case "augmented-microscopy": pass\n'
        'tasks = ("instance-segmentation",)\n'
    )
    assert task_name_branches(source) == [
        (1, "tracking"),
        (2, "classification"),
        (3, "semantic-segmentation"),
        (5, "augmented-microscopy"),
    ]


def test_no_module_outside_tasks_compares_task_names():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "tasks":
            continue
        for line, name in task_name_branches(path.read_text(encoding="utf-8")):
            offenders.append(f"cellbench/{rel.as_posix()}:{line}: {name!r}")
    assert offenders == []
