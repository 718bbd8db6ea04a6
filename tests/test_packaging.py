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
import yaml

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


def test_wheel_registers_the_napari_plugin(wheel):
    """napari discovers the plugin from the installed distribution's entry point."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = zf.read(entry_points).decode()
        manifest = yaml.safe_load(zf.read("cellbench/napari/napari.yaml"))
    assert "[napari.manifest]\ncellbench = cellbench.napari:napari.yaml" in text
    assert manifest["name"] == "cellbench"


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


CORE_SCRIPT = """
import importlib.util, json, sys
import numpy as np
import yaml
from cellbench.registry import load
from cellbench.predictions import Prediction, PredictionSet, write_predictions
store = load("tiny-nuclei")
preds = [
    Prediction(sample_id=s, mask=np.roll(store.sample(s).instances, 3, axis=-1))
    for s in store.sample_ids("test")
]
pset = PredictionSet.from_predictions(
    "instance-segmentation", preds, store.id, store.version, "test"
)
write_predictions("preds.zarr", pset)
from cellbench.submissions import write_template
manifest = yaml.safe_load(open(write_template("entry.yaml")))
manifest.update(submission="preds.zarr", dataset="tiny-nuclei@1.0", name="Shifted truth")
open("entry.yaml", "w").write(yaml.safe_dump(manifest))
missing = [m for m in ("torch", "torchvision", "onnxruntime", "datasets", "pyarrow", "s3fs")
           if importlib.util.find_spec(m) is not None]
print(json.dumps({"installed_heavy": missing}))
"""


def test_core_install_scores_and_publishes_without_torch(wheel, tmp_path):
    """`pip install cellbench` alone: pull, score, submit and publish; no torch anywhere."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from core_install import SIZE_GOAL, build_core_venv, folder_size
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    python = build_core_venv(tmp_path / "venv", wheel, compile_pyc=False)
    cellbench = str(tmp_path / "venv" / "bin" / "cellbench")
    # a small copy of synthetic-nuclei (8 images) keeps the store build short
    card = yaml.safe_load((REPO / "datasets" / "synthetic-nuclei" / "card.yaml").read_text())
    card.update(id="tiny-nuclei", size={})
    card["generator"]["params"]["n_images"] = 8
    (tmp_path / "catalog" / "tiny-nuclei").mkdir(parents=True)
    (tmp_path / "catalog" / "tiny-nuclei" / "card.yaml").write_text(yaml.safe_dump(card))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CELLBENCH_HOME"] = str(tmp_path / "home")
    env["CELLBENCH_CATALOG"] = str(tmp_path / "catalog")
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600
        )

    done = run(cellbench, "datasets", "pull", "tiny-nuclei", "-q", "--offline")
    assert done.returncode == 0, done.stderr
    done = run(str(python), "-c", CORE_SCRIPT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"installed_heavy": []}
    score = "--task", "instance-segmentation", "--dataset", "tiny-nuclei", "preds.zarr"
    done = run(cellbench, "score", *score, "--bootstrap", "50", "--json", "-q")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["headline"]["name"] == "coco_ap/ap" and 0 < report["headline"]["value"] < 1
    done = run(cellbench, "submit", "entry.yaml", "--root", "lb", "--bootstrap", "50", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["report"]["headline"] == report["headline"]
    done = run(cellbench, "leaderboard", "publish", "--root", "lb", "--out", "site")
    assert done.returncode == 0, done.stderr
    board = json.loads(next((work / "site").rglob("leaderboard.json")).read_text())
    assert board["rows"][0]["name"] == "Shifted truth"
    assert "Shifted truth" in (work / "site" / "index.html").read_text()
    done = run(cellbench, "env")
    assert done.returncode == 0 and "extras           none (core install)" in done.stdout
    # what needs an extra says which, in one line
    done = run(cellbench, "train", "semantic-segmentation", "--dataset", "tiny-nuclei")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: `cellbench train` needs torch, which the core install leaves out: "
        "pip install 'cellbench[train]'"
    ]
    # without bytecode here; `python benchmarks/core_install.py` measures a user's install
    size = folder_size(tmp_path / "venv")
    assert size < SIZE_GOAL, f"core virtualenv is {size / 1e6:.0f} MB"
