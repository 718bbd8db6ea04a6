"""A TorchScript archive is judged without executing it: hidden ``save`` calls never run."""

import os
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.registry import import_store
from cellbench.store.zarr_store import build_store
from cellbench.submissions.safety import torchscript_problems, torchscript_source_problems
from tests.factories import toy_samples
from tests.submissions.models import SaveOnLoad, script

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}
#: Spellings of ``torch.save(`` that TorchScript compiles and a plain-text pattern misses.
VARIANTS = {
    "space-after-dot": "torch. save(",
    "space-before-dot": "torch .save(",
    "line-continuation": "torch.\\\n      save(",
    "ops-aten": "ops . aten . save(",
}


def _hand_edited(tmp_path: Path, key: str, target: Path) -> Path:
    """A TorchScript archive whose ``__setstate__`` calls ``save`` spelled as ``VARIANTS[key]``."""
    base = script(SaveOnLoad(str(target)), tmp_path / f"base-{key}.pt")
    out = tmp_path / f"{key}.pt"
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(".py"):
                data = data.replace(b"torch.save(", VARIANTS[key].encode())
            zout.writestr(info, data)
    base.unlink()
    return out


def _files(*roots: Path) -> set[str]:
    return {str(p) for r in roots if r.exists() for p in r.rglob("*")}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_hidden_save_variants_are_live_attacks(tmp_path, key):
    """Control: each hand-edited archive really writes its file when torch.jit.load runs it."""
    target = tmp_path / "written-by-load"
    archive = _hand_edited(tmp_path, key, target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(archive))
    assert target.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_each_hidden_save_variant_is_refused_on_submit_and_writes_nothing(
    tmp_path, key, _isolated_cellbench_home
):
    data = tmp_path / "data"
    data.mkdir()
    store = build_store(toy_samples("instance-segmentation", n=4), data / "toy.zarr", CARD)
    import_store(store.path)
    sub = tmp_path / "submission"
    sub.mkdir()
    target = tmp_path / "pwned"
    archive = _hand_edited(sub, key, target)
    manifest = sub / "sub.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "authors": ["a"],
                "contact": "a@example.org",
                "code": {"url": "https://example.org/c", "commit": "abcdef1"},
                "training_data": "none",
                "n_parameters": 0,
                "seed": 0,
                "hardware": "cpu",
                "license": "MIT",
                "task": "instance-segmentation",
                "dataset": "toy@1.0",
                "kind": "torchscript",
                "submission": archive.name,
            }
        )
    )
    board = tmp_path / "boards"
    home = Path(_isolated_cellbench_home)
    watched = (tmp_path, home)  # the attacker's target lies in tmp_path
    before = _files(*watched)
    res = CliRunner().invoke(main, ["submit", str(manifest), "--root", str(board)])
    assert res.exit_code == 1, res.output
    assert "calls torch.save (file access is not allowed)" in res.output
    assert "Traceback" not in res.output
    assert not target.exists()
    assert _files(*watched) == before  # nothing new anywhere: no file, no board, no cache entry
    assert set(os.listdir(sub)) == {archive.name, "sub.yaml"}


def test_source_judgement_covers_namespaces_and_unparsable_code():
    ok = "def forward(self, x: Tensor) -> Tensor:\n    return torch.relu(x)\n"
    assert torchscript_source_problems("m.py", ok) == []
    custom = "def forward(self, x: Tensor) -> Tensor:\n    return ops . evil . run(x)\n"
    assert any("custom op evil::run" in p for p in torchscript_source_problems("m.py", custom))
    via_torch_ops = "def f(self, x: Tensor) -> Tensor:\n    return torch.ops.aten.save(x, 'f')\n"
    assert any("calls torch.save" in p for p in torchscript_source_problems("m.py", via_torch_ops))
    aliased = "def f(self, x: Tensor) -> Tensor:\n    s = torch\n    return s.from_file('f')\n"
    assert any("from_file" in p for p in torchscript_source_problems("m.py", aliased))
    broken = "def f(self, x:\n    return (\n"
    assert "cannot" in torchscript_source_problems("m.py", broken)[0]
    # a string that merely mentions save is not code
    text = "def f(self, x: Tensor) -> str:\n    return 'torch.save(x)'\n"
    assert torchscript_source_problems("m.py", text) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unedited_archive_with_save_refused_statically(tmp_path):
    target = tmp_path / "t"
    path = script(SaveOnLoad(str(target)), tmp_path / "s.pt")
    assert any("calls torch.save" in p for p in torchscript_problems(path))
    assert not target.exists()


def test_onnx_checks_ship_with_the_model_runtime():
    """ONNX submissions are vetted with ``onnx``: the install that runs them must carry it.

    Model submissions need the ``models`` extra (the light core install has no model runtime);
    it carries ``onnx`` beside ``onnxruntime``, so an install that can run ONNX can vet it.
    """
    import tomllib

    from tests.conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    models = project["optional-dependencies"]["models"]
    names = [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in models]
    assert "onnx" in names and "onnxruntime" in names
