"""The core install: a virtualenv with ``pip install cellbench`` and no extras, measured.

Builds the cellbench wheel from this checkout, installs it with its core dependencies only into a
fresh virtualenv, then prints the virtualenv's size (goal: under 600 MB, against 6.8 GB when torch,
triton and onnxruntime were core dependencies) and the import weight of the paths the core serves
(data, scoring, leaderboards): wall time and number of modules of a fresh ``import``, in the core
virtualenv and in the full development one.

The install never needs the network once the wheelhouse is filled: wheels are installed with
``--no-index`` from ``--find-links WHEELHOUSE`` (default ``~/.cache/cellbench-dev/wheelhouse``,
or ``$CELLBENCH_WHEELHOUSE``); when something is missing there, ``pip download`` tops it up from
the package index once and the install is retried. ``tests/test_packaging.py`` uses the same
functions.

Run: ``python benchmarks/core_install.py [--venv DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Goal for the size of the core virtualenv, in bytes.
SIZE_GOAL = 600 * 10**6
#: Modules the core paths must never import.
HEAVY = ("torch", "torchvision", "onnxruntime", "safetensors", "datasets", "pyarrow", "s3fs")


def wheelhouse() -> Path:
    """Folder of downloaded wheels reused by every core-venv build."""
    env = os.environ.get("CELLBENCH_WHEELHOUSE")
    return Path(env) if env else Path.home() / ".cache" / "cellbench-dev" / "wheelhouse"


def build_wheel(out: Path) -> Path:
    """Build the cellbench wheel from a copy of this checkout (no network, no build isolation)."""
    src = Path(tempfile.mkdtemp(prefix="cellbench-src-"))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
            shutil.copy2(REPO / name, src / name)
        for name in ("cellbench", "datasets"):
            shutil.copytree(REPO / name, src / name, ignore=ignore)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        subprocess.run(
            [*command, "--quiet", "--wheel-dir", str(out), str(src)], check=True, timeout=300
        )
    finally:
        shutil.rmtree(src, ignore_errors=True)
    return next(out.glob("cellbench-*.whl"))


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run this interpreter's pip against the virtualenv of ``python`` (pip's ``--python``)."""
    command = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=900)


def build_core_venv(
    venv: Path, wheel: Path, house: Path | None = None, *, compile_pyc: bool = True
) -> Path:
    """Create ``venv`` and install ``wheel`` with its core dependencies; return its python.

    The virtualenv is made without pip (this interpreter's pip installs into it), which keeps it
    to what ``pip install cellbench`` brings. ``compile_pyc=False`` skips writing bytecode (about
    half of the install time; what a user's install measures includes it).

    Raises:
        RuntimeError: With pip's output, when the install fails even after a download.
    """
    house = house or wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = ("install", "--quiet", "--no-index", "--find-links", str(house), str(wheel))
    if not compile_pyc:
        install = (*install, "--no-compile")
    done = _pip(python, *install)
    if done.returncode != 0:  # first build here, or new dependencies: fill the wheelhouse once
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(house)]
        got = subprocess.run(
            [*download, "--only-binary", ":all:", str(wheel)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        for stale in house.glob("cellbench-*.whl"):
            stale.unlink()
        if got.returncode != 0:
            raise RuntimeError(f"pip download failed:\n{got.stderr[-3000:]}")
        done = _pip(python, *install)
        if done.returncode != 0:
            raise RuntimeError(f"core install failed:\n{done.stderr[-3000:]}")
    return python


def folder_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import cellbench, cellbench.registry, cellbench.scoring, cellbench.leaderboard, cellbench.cli
import cellbench.tasks.instance_segmentation.task
dt = time.perf_counter() - t0
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"seconds": dt, "modules": len(sys.modules), "heavy": heavy}))
"""


def import_weight(python: Path | str, *, env: dict[str, str] | None = None) -> dict[str, object]:
    """Time and module count of importing the core paths in a fresh ``python`` (best of 3)."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [str(python), "-c", IMPORT_PROBE, json.dumps(HEAVY)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=300,
        )
        runs.append(json.loads(out.stdout))
    return min(runs, key=lambda r: r["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=None, help="where to build (default: temp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellbench-core-"))
    try:
        venv = args.venv or work / "venv"
        if venv.exists():
            shutil.rmtree(venv)
        python = build_core_venv(venv, build_wheel(work))
        size = folder_size(venv)
        verdict = "within" if size < SIZE_GOAL else "OVER"
        print(f"core virtualenv: {size / 1e6:.0f} MB ({verdict} the {SIZE_GOAL / 1e6:.0f} MB goal)")
        outside = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        core = import_weight(python, env=outside)
        dev_env = dict(os.environ, PYTHONPATH=str(REPO))
        dev = import_weight(sys.executable, env=dev_env)
        print("import of data + scoring + leaderboard + CLI paths (best of 3, fresh process):")
        for name, weight in (("core venv", core), ("dev venv", dev)):
            print(
                f"  {name:<10} {weight['seconds']:.2f} s, {weight['modules']} modules, "
                f"heavy modules loaded: {weight['heavy'] or 'none'}"
            )
        return 0 if size < SIZE_GOAL and not core["heavy"] else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
