"""A BioImage.IO 0.5 model package is accepted as a model submission.

The package follows the BioImage.IO model description 0.5 (``rdf.yaml`` with batch/channel/space
axes, ``scale_range`` preprocessing, test tensors, TorchScript weights with sha256).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cellbench.registry import pull
from cellbench.submissions import submit
from tests.submissions.models import Threshold, script


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _package(folder: Path, preprocessing: list | None = None) -> Path:
    """A TorchScript 'threshold' nucleus segmenter as a BioImage.IO 0.5 package folder."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = script(Threshold(), folder / "weights.pt")
    x = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", torch.jit.load(str(weights))(torch.from_numpy(x)).numpy())
    (folder / "README.md").write_text("Thresholds channel 0 at 0.5: bright pixels are object 1.\n")
    space = [{"type": "space", "id": a, "size": {"min": 16, "step": 8}} for a in "yx"]
    ref = [{"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}} for a in "yx"]
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": "cellbench threshold test model",
        "description": "A test model: thresholds the normalised image.",
        "authors": [{"name": "cellbench developers"}],
        "cite": [{"text": "cellbench", "url": "https://github.com/cellbench/cellbench"}],
        "license": "MIT",
        "documentation": "README.md",
        "inputs": [
            {
                "id": "raw",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["nuclei"]},
                    *space,
                ],
                "test_tensor": {
                    "source": "test_input.npy",
                    "sha256": _sha(folder / "test_input.npy"),
                },
                "preprocessing": preprocessing
                if preprocessing is not None
                else [
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x"],
                            "min_percentile": 1.0,
                            "max_percentile": 99.8,
                        },
                    }
                ],
            }
        ],
        "outputs": [
            {
                "id": "labels",
                "axes": [{"type": "batch"}, *ref],
                "test_tensor": {
                    "source": "test_output.npy",
                    "sha256": _sha(folder / "test_output.npy"),
                },
                "data": {"type": "int64"},
            }
        ],
        "weights": {
            "torchscript": {
                "source": "weights.pt",
                "sha256": _sha(weights),
                "pytorch_version": torch.__version__.split("+")[0],
            }
        },
    }
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
    return folder


def _manifest(folder: Path, submission: Path, store) -> Path:
    data = {
        "name": "BioImage.IO threshold",
        "authors": ["Test Author"],
        "contact": "test@example.org",
        "code": {"url": "https://example.org/code", "commit": "abcdef0"},
        "training_data": "none",
        "n_parameters": 0,
        "seed": 0,
        "hardware": "2-core CPU",
        "license": "MIT",
        "task": "instance-segmentation",
        "dataset": f"{store.id}@{store.version}",
        "split": "test",
        "kind": "bioimageio",
        "submission": str(submission),
    }
    path = folder / "bioimageio.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_bioimageio_package_is_scored_folder_or_zip(tmp_path):
    package = _package(tmp_path / "model")
    store = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    result = submit(_manifest(tmp_path, package, store), root=tmp_path / "lb", n_bootstrap=20)
    extra = result.report.provenance.extra
    assert extra["submission_kind"] == "bioimageio"
    assert extra["bioimageio"]["name"] == "cellbench threshold test model"
    assert result.manifest.normalisation == {"method": "percentile", "low": 1.0, "high": 99.8}
    assert 0.0 <= result.report.headline.value <= 1.0 and result.entry_path

    # the same package zipped is accepted too and scores the same
    archive = shutil.make_archive(str(tmp_path / "model"), "zip", package)
    again = submit(_manifest(tmp_path, Path(archive), store), root=tmp_path / "lb2", n_bootstrap=20)
    assert again.report.headline.value == result.report.headline.value


def test_bioimageio_package_problems_are_listed(tmp_path):
    from cellbench.errors import ValidationError

    package = _package(tmp_path / "model", preprocessing=[{"id": "sigmoid"}])
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    rdf["weights"]["torchscript"]["sha256"] = "0" * 64
    (package / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    store = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    with pytest.raises(ValidationError) as err:
        submit(_manifest(tmp_path, package, store), root=tmp_path / "lb")
    text = str(err.value)
    assert "preprocessing 'sigmoid' is not one cellbench can run" in text
    assert "torchscript weights do not match their sha256" in text
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(
        ValidationError, match=r"evil\.zip: member '\.\./escape\.txt': path traversal"
    ):
        submit(_manifest(tmp_path, evil, store), root=tmp_path / "lb")
    assert not (tmp_path / "lb").exists() or not list((tmp_path / "lb").rglob("entries/*.json"))


def test_fixed_preprocessing_maps_to_affine_normalisation(tmp_path):
    from cellbench.submissions.bioimageio import read_package

    cases = [
        (
            {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": [10.0], "std": [4.0]}},
            {"method": "affine", "offset": [10.0], "scale": [4.0 + 1e-6]},
        ),
        (
            {"id": "scale_linear", "kwargs": {"axis": "channel", "gain": [0.5], "offset": [-1.0]}},
            {"method": "affine", "offset": [2.0], "scale": [2.0]},
        ),
        (
            {"id": "scale_linear", "kwargs": {"gain": 2.0}},
            {"method": "affine", "offset": [-0.0], "scale": [0.5]},
        ),
    ]
    for i, (op, expected) in enumerate(cases):
        package = read_package(_package(tmp_path / f"m{i}", [op]))
        norm = package.normalisation
        assert package.problems == [] and norm["method"] == "affine"
        assert norm["offset"] == pytest.approx(expected["offset"])
        assert norm["scale"] == pytest.approx(expected["scale"], rel=1e-9)
    negative = read_package(
        _package(
            tmp_path / "neg", [{"id": "scale_linear", "kwargs": {"gain": [-1.0], "offset": [0]}}]
        )
    )
    assert negative.problems == [
        f"submission {tmp_path / 'neg' / 'rdf.yaml'}: scale_linear gain must be positive for "
        "cellbench to run it"
    ]


def test_a_package_zip_is_checked_and_extracted_whole_or_not_at_all(tmp_path):
    """The zip is vetted as server uploads are (nothing extracted from a refused one), and
    extraction goes through a scratch folder: a member that fails its CRC halfway leaves no
    folder a later submission would take for the unpacked package."""
    from cellbench.submissions.bioimageio import unpack
    from cellbench.submissions.safety import Limits

    package = _package(tmp_path / "model")
    good = Path(shutil.make_archive(str(tmp_path / "good"), "zip", package))
    cache = tmp_path / "cache"

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rdf.yaml", b"type: model\n")
        zf.writestr("weights.pt", b"\0" * 10_000_000)
    folder, problems = unpack(bomb, cache / "bomb")
    assert folder is None
    assert len(problems) == 1 and problems[0].startswith(
        "submission: bomb.zip: member 'weights.pt' expands "
    ), problems
    assert not cache.exists() or list(cache.iterdir()) == []  # no folder, no scratch

    # rdf.yaml extracts first, then the weights fail their CRC: nothing is left behind
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("rdf.yaml", (package / "rdf.yaml").read_bytes())
        zf.writestr("weights.pt", (package / "weights.pt").read_bytes())
    data = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as zf:
        info = zf.getinfo("weights.pt")
    at = info.header_offset + 30 + len(info.filename) + 100  # inside the member's data
    data[at] ^= 0xFF
    damaged.write_bytes(bytes(data))
    folder, problems = unpack(damaged, cache / "damaged")
    assert folder is None
    assert problems == [
        "submission: damaged.zip: cannot be extracted (Bad CRC-32 for file 'weights.pt')"
    ]
    assert list(cache.iterdir()) == []

    # a limit below the package's size refuses it; the default unpacks it, once
    small = Limits(max_total_bytes=1000)
    assert unpack(good, cache / "good", small)[0] is None and list(cache.iterdir()) == []
    folder, problems = unpack(good, cache / "good")
    assert problems == [] and folder == cache / "good"
    assert _sha(folder / "weights.pt") == _sha(package / "weights.pt")
    assert [p.name for p in cache.iterdir()] == ["good"]  # the scratch folder is gone
    assert unpack(good, cache / "good") == (folder, [])  # found, not extracted again

    # a zip whose files sit in one top-level folder: that folder is the package
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zf:
        for f in package.iterdir():
            zf.write(f, f"my-model/{f.name}")
    folder, problems = unpack(nested, cache / "nested")
    assert problems == [] and folder == cache / "nested" / "my-model"
    assert (folder / "rdf.yaml").is_file()
