"""Ship the dataset catalog inside the wheel.

All metadata lives in ``pyproject.toml``. The catalog (``datasets/<id>/card.yaml`` and
``recipe.py``) sits at the repository root, where a checkout or an editable install finds it;
a built wheel copies it to ``cellbench/datasets_catalog`` (searched by
``cellbench.catalog.catalog_roots``), so ``pip install cellbench`` gets the same catalog.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CATALOG = Path(__file__).resolve().parent / "datasets"
SHIPPED = (".yaml", ".yml", ".py", ".md")


class BuildPyWithCatalog(build_py):
    """``build_py`` that also copies ``datasets/`` into the package."""

    def run(self) -> None:
        """Build the package, then copy the catalog's cards and recipes beside it."""
        super().run()
        if getattr(self, "editable_mode", False) or not CATALOG.is_dir():
            return  # editable installs read datasets/ in place
        dest = Path(self.build_lib) / "cellbench" / "datasets_catalog"
        for source in sorted(CATALOG.rglob("*")):
            rel = source.relative_to(CATALOG)
            if source.is_file() and source.suffix in SHIPPED and "__pycache__" not in rel.parts:
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildPyWithCatalog})
