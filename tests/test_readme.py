"""Every Python block of the README runs, in order, on a small generated dataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert blocks and all(b.strip() for b in blocks)


def test_every_python_block_runs(tmp_path):
    """Blocks run in one interpreter, one after the other, as a reader pastes them.

    The datasets they name are the catalog's cards with smaller generator sizes (a catalog
    folder in ``CELLBENCH_CATALOG`` comes first), so the code is the README's, unchanged.
    """
    catalog = tmp_path / "catalog"
    for ident, params in {
        "synthetic-nuclei": {"n_images": 8},
        "synthetic-protein-localisation": {"n_images": 24},
    }.items():
        card = yaml.safe_load((REPO / "datasets" / ident / "card.yaml").read_text())
        card["generator"]["params"].update(params)
        card["size"] = {}
        (catalog / ident).mkdir(parents=True)
        (catalog / ident / "card.yaml").write_text(yaml.safe_dump(card))
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n\n".join(python_blocks()), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CELLBENCH_CATALOG"] = str(catalog)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "coco_ap/ap" in done.stdout
    assert re.search(r"^epoch 1: loss \d+\.\d{3}$", done.stdout, re.MULTILINE), done.stdout
    assert (work / "preds.zarr").is_dir()
