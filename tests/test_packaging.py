"""A built wheel carries the dataset catalog, so a plain ``pip install`` sees every dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest.importorskip("setuptools", minversion="69")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources (the build leaves the checkout untouched)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("cellbench", "datasets"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*command, "--quiet", "--wheel-dir", str(out), str(src)], check=True, timeout=300
    )
    (found,) = out.glob("cellbench-*.whl")
    return found


def test_wheel_ships_every_card_and_recipe_of_the_catalog(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"cellbench/datasets_catalog/{p.relative_to(REPO / 'datasets').as_posix()}"
        for p in (REPO / "datasets").rglob("*")
        if p.is_file() and p.suffix in {".yaml", ".py"} and "__pycache__" not in p.parts
    }
    assert expected and expected <= names
    assert "cellbench/datasets_catalog/dsb2018-stardist/recipe.py" in names
    assert not any("__pycache__" in n for n in names)


def test_wheel_ships_the_site_templates_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    folder = REPO / "cellbench" / "leaderboard" / "templates"
    expected = {
        f"cellbench/leaderboard/templates/{p.relative_to(folder).as_posix()}"
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "cellbench/leaderboard/templates/base.html" in expected
    assert "cellbench/leaderboard/templates/assets/style.css" in expected
    assert expected <= names


def test_installed_wheel_finds_the_catalog_without_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    code = (
        "import json, cellbench; from cellbench.catalog import Catalog, catalog_roots, "
        "load_recipe; c = Catalog(); "
        "print(json.dumps({'file': cellbench.__file__, 'roots': [str(r) for r in "
        "catalog_roots()], 'ids': c.ids(), "
        "'recipe': load_recipe(c.card('dsb2018-stardist')).__name__}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CELLBENCH_CATALOG")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the checkout, so datasets/ beside the sources is not there
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    info = json.loads(done.stdout)
    assert info["file"].startswith(str(site))
    assert info["roots"] == [str(site / "cellbench" / "datasets_catalog")]
    assert info["ids"] == sorted(p.parent.name for p in (REPO / "datasets").glob("*/card.yaml"))
    assert info["recipe"] == "build"
