"""SciPy's ``linear_sum_assignment`` without the 0.26 s import of ``scipy.optimize``.

``from scipy.optimize import linear_sum_assignment`` runs ``scipy/optimize/__init__.py``, which
imports scipy.sparse, scipy.linalg and every optimiser: 0.26-0.40 s of a scoring process here
(``python -X importtime``, x86_64, SciPy 1.17), against an import goal of 0.25 s for all of
``cellbench score``. The solver itself is one compiled extension module, ``scipy.optimize._lsap``,
whose ``linear_sum_assignment`` is the very function ``scipy.optimize`` re-exports. It is loaded
here from its file without running the package's ``__init__`` (a few milliseconds once NumPy is
loaded); the results are therefore scipy's, bit for bit, ties included (object errors follow
DeepCell's assignment exactly, so a different solver's tie-breaking would change classes).

When ``scipy.optimize`` is already imported, or the extension is not where SciPy 1.x keeps it
(a future layout), or loading it fails for any reason, the public import is used instead:
slower to import, same answers. ``tests/metrics/test_lsap.py`` compares both on tied, rectangular
and degenerate matrices; ``tests/test_import_weight.py`` checks that a scoring process with split
and merged objects does not import ``scipy.optimize``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


def linear_sum_assignment(cost: Any, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.optimize.linear_sum_assignment(cost, maximize)``: rows and their columns."""
    return _solver()(cost, maximize)


@cache
def _solver() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    public = sys.modules.get("scipy.optimize")
    if public is not None:
        return public.linear_sum_assignment
    try:
        return _extension_solver()
    except Exception:  # any layout or loading problem: the public import gives the same answers
        from scipy.optimize import linear_sum_assignment as public_solver

        return public_solver


def _extension_solver() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """``linear_sum_assignment`` of the ``scipy.optimize._lsap`` extension, loaded by file."""
    name = "scipy.optimize._lsap"
    spec = importlib.util.find_spec("scipy")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ImportError("scipy is not installed")
    folder = Path(spec.origin).parent / "optimize"
    files = [folder / f"_lsap{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise ImportError(f"no {name} extension in {folder}")
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    module_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if module_spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    loader.exec_module(module)
    solver = module.linear_sum_assignment
    # one known answer (ties broken as scipy does), or the public import is used
    rows, cols = solver(np.array([[1.0, 1.0], [1.0, 1.0]]))
    if rows.tolist() != [0, 1] or cols.tolist() != [0, 1]:
        raise ImportError(f"{name} answered {rows}, {cols}")
    return solver
