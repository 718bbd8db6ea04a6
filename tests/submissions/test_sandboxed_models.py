"""Submitted TorchScript models that misbehave: hidden file access, runaway loops, memory hogs.

Every model is loaded and run only in the sandbox child; these tests check that a model that
slips past the static checks still cannot write a file, and that limits stop runaway models
with a message saying which limit and how far the run got, leaving nothing behind.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellbench.errors import ValidationError
from cellbench.registry import import_store
from cellbench.store.zarr_store import build_store
from cellbench.submissions import submit
from cellbench.submissions.core import run_sandboxed
from cellbench.submissions.manifest import parse_manifest
from cellbench.submissions.safety import torchscript_problems
from cellbench.submissions.sandbox import (
    SandboxError,
    SandboxLimitError,
    SandboxLimits,
    capabilities,
)
from tests.factories import toy_samples
from tests.submissions.models import (
    HIDDEN_SAVE_SPELLINGS,
    Hog,
    Spin,
    respelled_save_on_load,
    script,
)

CARD = {"id": "toy-inst", "version": "1.0", "tasks": ["instance-segmentation"]}
LANDLOCK = capabilities()["landlock_abi"]


@pytest.fixture
def toy(tmp_path):
    store = build_store(toy_samples("instance-segmentation", n=8), tmp_path / "t.zarr", CARD)
    import_store(store.path)
    return store


def _manifest(folder: Path, model: Path, **over):
    data = {
        "name": "hostile",
        "authors": ["a"],
        "contact": "a@example.org",
        "code": {"url": "https://example.org/c", "commit": "abcdef1"},
        "training_data": "none",
        "n_parameters": 0,
        "seed": 0,
        "hardware": "cpu",
        "license": "MIT",
        "task": "instance-segmentation",
        "dataset": "toy-inst@1.0",
        "kind": "torchscript",
        "submission": model.name,
        **over,
    }
    path = folder / "m.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    return path


def _files_under(*roots: Path) -> set[Path]:
    return {p for r in roots if r.exists() for p in r.rglob("*")}


@pytest.mark.parametrize("spelling", sorted(HIDDEN_SAVE_SPELLINGS))
def test_respelled_torch_save_is_refused_and_writes_nothing(spelling, toy, tmp_path):
    target = tmp_path / "written-on-load.pt"
    model = respelled_save_on_load(tmp_path, target, HIDDEN_SAVE_SPELLINGS[spelling])
    problems = torchscript_problems(model)
    assert any("save" in p for p in problems), problems
    manifest = _manifest(tmp_path, model)
    home = Path(os.environ["CELLBENCH_HOME"])
    before = _files_under(home, tmp_path)
    with pytest.raises(ValidationError) as err:
        submit(manifest, root=tmp_path / "lb", predictions_dir=tmp_path / "p")
    assert "the model was not run" in str(err.value)
    assert not target.exists()
    assert _files_under(home, tmp_path) == before  # nothing written anywhere


@pytest.mark.skipif(LANDLOCK == 0, reason="kernel without Landlock: writes cannot be confined")
def test_sandbox_stops_a_model_that_slipped_past_the_checks(toy, tmp_path, cli_env):
    """Bypass the static checks on purpose: __setstate__ runs in the child and cannot write."""
    # control: loaded in a plain process, the archive does write its file
    control = tmp_path / "control"
    control.mkdir()
    loaded = respelled_save_on_load(control, control / "written.pt", "torch. save(")
    code = f"import torch; torch.jit.load({str(loaded)!r})"
    subprocess.run([sys.executable, "-c", code], env=cli_env, check=True, capture_output=True)
    assert (control / "written.pt").is_file()

    target = tmp_path / "written-on-load.pt"
    model = respelled_save_on_load(tmp_path, target, HIDDEN_SAVE_SPELLINGS["space-after-dot"])
    manifest = parse_manifest(
        {**_yaml(_manifest(tmp_path, model)), "submission": str(model)}, tmp_path / "m.yaml"
    )
    with pytest.raises((SandboxError, ValidationError)) as err:
        run_sandboxed(manifest, toy, tmp_path / "out.zarr", "cpu")
    # torch's save ignores the refused write; the graph check in the child then refuses it
    assert "uses aten::save" in str(err.value)
    assert not target.exists() and not (tmp_path / "out.zarr").exists()


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_runaway_model_stopped_at_five_seconds(toy, tmp_path):
    model = script(Spin(), tmp_path / "spin.pt")
    manifest = parse_manifest(
        {**_yaml(_manifest(tmp_path, model)), "submission": str(model)}, tmp_path / "m.yaml"
    )
    with pytest.raises(SandboxLimitError) as err:
        run_sandboxed(manifest, toy, tmp_path / "out.zarr", "cpu", sandbox=SandboxLimits(5))
    assert err.value.limit == "wall-clock"
    assert f"{model}: model run stopped at the wall-clock limit of 5 s after 0 of 2 samples" in (
        str(err.value)
    )
    assert 5 <= err.value.result.model_runtime_s < 15
    assert not (tmp_path / "out.zarr").exists()


def test_memory_hog_stopped_and_submit_cli_leaves_nothing(toy, tmp_path, cli_cmd, cli_env):
    model = script(Hog(), tmp_path / "hog.pt")
    path = _manifest(tmp_path, model)
    preds = tmp_path / "preds"
    run = subprocess.run(
        [
            *cli_cmd,
            "submit",
            str(path),
            "--root",
            str(tmp_path / "lb"),
            "--predictions-dir",
            str(preds),
            "--max-memory",
            "1GB",
            "--max-runtime",
            "120",
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {model}: model run stopped at the memory limit of 1024 MB")
    assert "after 0 of 2 samples" in line and "Traceback" not in run.stderr
    assert not (tmp_path / "lb").exists()
    assert not preds.exists() or list(preds.iterdir()) == []
