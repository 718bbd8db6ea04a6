"""Import paths stay light: what a fresh process pays before doing any work.

CTC scoring is benchmarked as a whole process and the CLI starts on every command, so these
paths must not pull in heavy libraries they do not use (checked by module, not by timing).
"""

import subprocess
import sys

import pytest

HEAVY = ("scipy.stats", "skimage", "pycocotools", "torch", "datasets")
#: What the core install leaves out: never imported on the data, scoring or leaderboard paths.
EXTRAS = ("torch", "torchvision", "safetensors", "onnxruntime", "datasets", "pyarrow", "s3fs")


@pytest.mark.parametrize(
    "module",
    [
        "cellbench.metrics.tracking",
        "cellbench.tasks.tracking.ctc",
        "cellbench.scoring",
        "cellbench.cli",
        "cellbench",
    ],
)
def test_import_does_not_pull_heavy_libraries(module, cli_env):
    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    loaded = [m for m in out.split(",") if m]
    assert loaded == [], f"importing {module} loads {loaded}"


def test_ctc_folder_scoring_does_not_load_the_store(cli_env):
    # score_ctc_folders is timed as a whole process against py-ctcmetrics and traccuracy.
    code = (
        "import sys, cellbench.tasks.tracking.ctc; "
        "print(','.join(m for m in ('zarr', 'cellbench.store.zarr_store') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    assert out == ""


@pytest.mark.parametrize(
    "module",
    [
        "cellbench.registry",
        "cellbench.leaderboard",
        "cellbench.submissions",
        "cellbench.croissant",
        "cellbench.napari",
        "cellbench.tasks.instance_segmentation.task",
    ],
)
def test_core_paths_import_no_extra(module, cli_env):
    code = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {EXTRAS!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout.strip()
    assert [m for m in out.split(",") if m] == [], f"importing {module} loads extras"
