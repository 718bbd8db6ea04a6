"""The store (HF export/import included) asks tasks through hooks and never names a task.

Scans every module under ``cellbench/store/`` for task names used as values: operands of a
comparison (``task == "tracking"``, ``task in ("classification", ...)``), members of a tuple,
list or set literal, and dictionary keys. Task names inside messages and docstrings are fine.
"""

import ast
from pathlib import Path

import cellbench
from cellbench.tasks import task_names

STORE = Path(cellbench.__file__).parent / "store"


def _task_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and node.value in task_names():
        return node.value
    return None


def task_name_uses(source: str) -> list[tuple[int, str, str]]:
    """``(line, task name, how it is used)`` for every task name used as a value."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                name = _task_name(operand)
                if name:
                    found.append((node.lineno, name, "compared"))
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            for element in node.elts:
                name = _task_name(element)
                if name:
                    found.append((node.lineno, name, "listed"))
        elif isinstance(node, ast.Dict):
            for key in node.keys:
                name = _task_name(key) if key is not None else None
                if name:
                    found.append((node.lineno, name, "a dictionary key"))
    return sorted(found)


def test_the_scan_finds_each_kind_of_task_name_use():
    source = (
        'a = task == "tracking"\n'
        'b = task in ("classification", "other")\n'
        'c = {"augmented-microscopy": 1}\n'
        'd = f"task {task!r} is not tracking"  # a message: fine\n'
        'e = "instance-segmentation"  # a lone constant: fine\n'
    )
    assert task_name_uses(source) == [
        (1, "tracking", "compared"),
        (2, "classification", "listed"),
        (3, "augmented-microscopy", "a dictionary key"),
    ]


def test_no_module_under_store_names_a_task():
    modules = sorted(STORE.rglob("*.py"))
    assert STORE / "hf" / "importer.py" in modules
    uses = [
        f"{path.relative_to(STORE.parent)}:{line}: {name!r} {how}"
        for path in modules
        for line, name, how in task_name_uses(path.read_text(encoding="utf-8"))
    ]
    assert uses == []
