"""Hostile and malformed model files are refused before anything is loaded."""

import zipfile

import pytest
import torch

from cellbench.predictions import digest_path
from cellbench.submissions.measure import ResourceMonitor
from cellbench.submissions.safety import (
    Limits,
    graph_op_problems,
    onnx_problems,
    onnx_runtime_shape_problems,
    package_digest,
    package_problems,
    pickle_globals,
    sniff,
    torchscript_problems,
    zip_problems,
)
from tests.submissions.models import (
    Classifier,
    ReadFile,
    SaveOnLoad,
    evil_pickle,
    evil_torch_save,
    fake_torchscript_with_pickle,
    onnx_declared,
    onnx_huge_intermediate,
    onnx_threshold,
    script,
    traversal_zip,
)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "UNPICKLED"
    yield path
    assert not path.exists(), "a submitted pickle was executed"


def test_pickle_checkpoints_refused_never_unpickled(tmp_path, marker):
    raw = evil_pickle(tmp_path / "model.pt", marker)
    zipped = evil_torch_save(tmp_path / "checkpoint.pt", marker)
    assert sniff(raw) == "pickle" and sniff(zipped) == "zip"
    for path in (raw, zipped):
        problems = torchscript_problems(path)
        assert len(problems) == 1
        assert "is a pickle-based checkpoint" in problems[0] and "never unpickles" in problems[0]
        assert onnx_problems(path)[0]  # refused as ONNX too
    # protocol 0 pickles (text opcodes) are recognised by extension
    assert sniff(evil_pickle(tmp_path / "old.pkl", marker, protocol=0)) == "pickle"


def test_safetensors_package_with_pickle_refused(tmp_path, marker):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    evil_pickle(pkg / "model.safetensors", marker)  # a pickle wearing a safetensors name
    (pkg / "model.json").write_text('{"baseline": "unet"}')
    problems = package_problems(pkg)
    assert any("pickle-based checkpoint" in p and "named .safetensors" in p for p in problems)
    other = tmp_path / "pkg2"
    other.mkdir()
    evil_torch_save(other / "model.pt", marker)
    (other / "model.json").write_text("{}")
    problems = package_problems(other)
    assert any("model.pt: is a pickle-based checkpoint" in p for p in problems)
    assert any("model.safetensors is missing" in p for p in problems)
    assert package_problems(evil_torch_save(tmp_path / "single.pt", marker))[0].endswith(
        "TorchScript (torch.jit.save) or ONNX instead"
    )


def test_valid_safetensors_package_passes(tmp_path):
    from safetensors.torch import save_file

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    save_file({"w": torch.ones(3, 2)}, str(pkg / "model.safetensors"))
    (pkg / "model.json").write_text('{"baseline": "unet", "config": {}}')
    assert package_problems(pkg) == []
    assert package_problems(pkg / "model.json") == []  # the model.json path works too
    # a training run directory: logs and the engine's pickled training state are ignored
    digest = package_digest(pkg)
    assert digest == digest_path(pkg)  # same digest as the folder holding only the package
    (pkg / "train.log").write_text("epoch 1\n")
    torch.save({"epoch": 3}, pkg / "last.state.pt")
    assert package_problems(pkg) == []
    assert package_digest(pkg) == digest != digest_path(pkg)
    # a header pointing past the end of the file is refused
    data = (pkg / "model.safetensors").read_bytes()
    (pkg / "model.safetensors").write_bytes(data[:-8])
    assert "outside the file" in package_problems(pkg)[0]


def test_torchscript_zip_with_hostile_pickle_refused(tmp_path, marker):
    for protocol in (2, 4):  # GLOBAL and STACK_GLOBAL opcodes
        path = fake_torchscript_with_pickle(tmp_path / f"p{protocol}.pt", marker, protocol)
        problems = torchscript_problems(path)
        refused = [p for p in problems if "model/data.pkl: pickle references" in p]
        assert refused and all("cannot vet" in p for p in refused), problems
        assert any("pathlib" in p for p in refused)
    found, bad = pickle_globals(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.")
    assert found == set() and bad == []


def test_path_traversal_zip_refused(tmp_path):
    path = traversal_zip(tmp_path / "model.pt")
    problems = torchscript_problems(path)
    assert any("'../../escaped.txt': path traversal" in p for p in problems)
    assert any("'/etc/cron.d/evil': absolute path" in p for p in problems)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_zip_bomb_and_oversized_members_refused(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m/data/0", b"\0" * (4 << 20))
    assert any("zip bomb" in p for p in zip_problems(path))
    small = Limits(max_member_bytes=1 << 20, max_ratio=1e9)
    assert any("at most 1048576" in p for p in zip_problems(path, small))


def test_torchscript_that_writes_files_on_load_refused_before_loading(tmp_path):
    target = tmp_path / "written-by-setstate.pt"
    path = script(SaveOnLoad(str(target)), tmp_path / "setstate.pt")
    assert not target.exists()
    problems = torchscript_problems(path)
    assert problems and "calls torch.save (file access is not allowed)" in problems[0]
    assert not target.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_reading_files_refused_statically_and_in_graph(tmp_path):
    path = script(ReadFile(), tmp_path / "read.pt")
    assert "calls torch.from_file" in torchscript_problems(path)[0]
    module = torch.jit.load(str(path))  # safe here: it reads only when run
    assert graph_op_problems(module) == ["model.forward: uses aten::from_file"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_plain_torchscript_passes(tmp_path):
    path = script(Classifier(), tmp_path / "ok.pt")
    assert torchscript_problems(path) == []
    assert graph_op_problems(torch.jit.load(str(path))) == []
    assert sniff(path) == "zip"


def test_onnx_with_10gb_declared_input_refused_before_allocating(tmp_path, monkeypatch):
    import onnxruntime

    def no_session(*a, **k):
        raise AssertionError("an inference session was created")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    path = onnx_declared(tmp_path / "huge.onnx", [1, 1, 50_000, 50_000])  # 10 GB of float32
    with ResourceMonitor() as mon:
        problems, _info = onnx_problems(path, spatial_ndim=2)
    assert any(
        "declared shape [1, 1, 50000, 50000] needs 9.3 GiB" in p
        and "refused before allocating" in p
        for p in problems
    ), problems
    assert mon.usage.peak_memory_increase_mb < 200  # nothing near 10 GB was touched
    assert path.stat().st_size < 10_000


def test_onnx_absurd_dims_custom_domain_and_external_data(tmp_path):
    problems, _ = onnx_problems(onnx_declared(tmp_path / "dims.onnx", [1, 1, 1 << 40, 1]))
    assert any("declared dimension 1099511627776 is outside" in p for p in problems)
    problems, _ = onnx_problems(
        onnx_declared(tmp_path / "c.onnx", [1, 1, "y", "x"], domain="evil.ops")
    )
    assert any("custom operator domain 'evil.ops'" in p for p in problems)
    problems, _ = onnx_problems(
        onnx_declared(tmp_path / "e.onnx", [1, 1, "y", "x"], external="../../etc/passwd")
    )
    assert any("external data location '../../etc/passwd'" in p for p in problems)


def test_onnx_huge_intermediate_refused_per_input_shape(tmp_path):
    path = onnx_huge_intermediate(tmp_path / "inter.onnx")
    problems, info = onnx_problems(path, spatial_ndim=2)
    assert problems == [] and info is not None  # nothing fixed is declared
    problems = onnx_runtime_shape_problems(path, info, (1, 1, 32, 32))
    assert any("tensor 'big'" in p and "[100000, 100000]" in p for p in problems), problems


def test_onnx_good_model_and_shape_checks(tmp_path):
    path = onnx_threshold(tmp_path / "t.onnx")
    problems, info = onnx_problems(path, spatial_ndim=2)
    assert problems == [] and info.input_name == "image" and info.output_names == ["labels"]
    assert onnx_runtime_shape_problems(path, info, (1, 1, 16, 20)) == []
    problems, _ = onnx_problems(path, spatial_ndim=3)
    assert problems == [f"{path}: input 'image' has rank 4; this dataset needs (1, C, Z, Y, X)"]
    fixed = onnx_threshold(tmp_path / "f.onnx", input_shape=(1, 1, 64, 64))
    _, info = onnx_problems(fixed, spatial_ndim=2)
    assert (
        "input dim 2 is fixed to 64 but the image needs 40"
        in (onnx_runtime_shape_problems(fixed, info, (1, 1, 40, 36))[0])
    )
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"\x00garbage" * 10)
    assert "not a valid ONNX model" in onnx_problems(not_onnx)[0][0]
