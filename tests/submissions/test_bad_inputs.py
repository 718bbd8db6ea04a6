"""Every bad input is a clean rejection: one error, exit 1 or 2, nothing written anywhere.

One parametrised test per class of input the fuzzing found crashing, hanging or wrongly
accepted: manifests, prediction sets (canonical Zarr, TIFF folders, CSVs) and model packages
or models. Each case runs ``cellbench submit`` in process and checks the exit code, that the
output starts with one ``error:`` line naming the expectation, that there is no traceback,
that no board or cache entry appears, and that it took seconds, not minutes.
"""

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.registry import import_store
from cellbench.store.cache import cellbench_home
from cellbench.store.zarr_store import build_store
from tests.factories import toy_samples
from tests.submissions.models import linear_classifier_package

INSTANCE = "instance-segmentation"
MANIFEST = {
    "name": "m",
    "authors": ["a"],
    "contact": "a@example.org",
    "code": {"url": "https://example.org/c", "commit": "abcdef1"},
    "training_data": "none",
    "n_parameters": 0,
    "seed": 0,
    "hardware": "cpu",
    "license": "MIT",
    "task": INSTANCE,
    "dataset": "toy@1.0",
    "kind": "predictions",
    "submission": "preds.zarr",
}


@pytest.fixture
def world(tmp_path):
    """Two registered toy datasets (instance segmentation, classification) and a work folder."""
    inst = build_store(
        toy_samples(INSTANCE, n=8),
        tmp_path / "data" / "toy.zarr",
        {"id": "toy", "version": "1.0", "tasks": [INSTANCE]},
    )
    cls = build_store(
        toy_samples("classification", n=8),
        tmp_path / "data" / "toyc.zarr",
        {"id": "toyc", "version": "1.0", "tasks": ["classification"]},
        {"label": ["a", "b", "c"]},
    )
    import_store(inst.path)
    import_store(cls.path)
    work = tmp_path / "sub"
    work.mkdir()
    return {"inst": inst, "cls": cls, "work": work, "boards": tmp_path / "boards"}


def _manifest(work: Path, **fields) -> Path:
    path = work / "sub.yaml"
    path.write_text(yaml.safe_dump({**MANIFEST, **fields}))
    return path


def _perfect_instance(world) -> Path:
    store = world["inst"]
    ids = store.sample_ids("test")
    preds = [Prediction(s, mask=np.asarray(store.labels(s)[...]).astype(np.int32)) for s in ids]
    return write_predictions(
        world["work"] / "preds.zarr",
        PredictionSet.from_predictions(INSTANCE, preds, "toy", "1.0", "test"),
    )


def _perfect_classification(world) -> Path:
    store = world["cls"]
    ids = store.sample_ids("test")
    preds = [Prediction(s, label=store.label(s), scores=np.eye(3)[store.label(s)]) for s in ids]
    return write_predictions(
        world["work"] / "preds.zarr",
        PredictionSet.from_predictions("classification", preds, "toyc", "1.0", "test"),
    )


def _first_mask(preds: Path) -> Path:
    return next(p for p in sorted((preds / "samples").iterdir()) if p.is_dir()) / "mask"


def _edit(file: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def _header(change: Callable[[dict], None]) -> Callable[[dict], None]:
    return lambda m: change(m["attributes"]["cellbench_predictions"])


def _files(*roots: Path) -> set[str]:
    return {str(p) for r in roots if r.exists() for p in r.rglob("*")}


def _refused(world, manifest: Path, expect: str, codes=(1, 2)) -> str:
    home = cellbench_home()
    watched = (home / "submissions", home / "stores", home / "tmp")
    before = _files(*watched)
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = CliRunner().invoke(
            main, ["submit", str(manifest), "--root", str(world["boards"]), "--n-bootstrap", "5"]
        )
    elapsed = time.monotonic() - started
    out = res.output
    assert res.exit_code in codes, (out, res.exception)
    assert "Traceback" not in out
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert out.startswith("error:") and len(errors) == 1, out
    assert expect in out, out
    assert not world["boards"].exists()
    assert _files(*watched) == before
    assert elapsed < 60, elapsed
    return out


# ---------------------------------------------------------------------------- manifests
MANIFEST_CASES: dict[str, tuple[str, str]] = {
    "alias bomb": (
        "name: m\n"
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "anchors (&name) are not allowed",
    ),
    "deep nesting": ("notes: " + "[" * 20000 + "]" * 20000 + "\n", "nested deeper than 16"),
    "5000-digit integer": ("n_parameters: " + "7" * 5000 + "\n", "integer with 5000 digits"),
    "seed of 1e250": ("seed: 1" + "0" * 250 + "\n", "integer with 251 digits"),
    "duplicate keys": ("seed: 1\nseed: 2\n", "key 'seed' appears twice"),
    "huge file": ("notes: '" + "x" * 70_000 + "'\n", "a manifest is at most 65536 bytes"),
    "latin-1 bytes": ("name: caf\xe9\n", "not UTF-8 text"),
    "huge seed": ("seed: 99999999999999999999\n", "integer with 20 digits"),
    "seed above 64 bits": ("seed: 9999999999999999999\n", "larger than 9223372036854775807"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_bad_manifest_is_one_line(world, case):
    text, expect = MANIFEST_CASES[case]
    _perfect_instance(world)
    base = yaml.safe_dump({k: v for k, v in MANIFEST.items() if k not in text.split(":")[0]})
    path = world["work"] / "sub.yaml"
    encoding = "latin-1" if case == "latin-1 bytes" else "utf-8"
    path.write_bytes((text + base).encode(encoding))
    _refused(world, path, expect)


# ---------------------------------------------------------------------------- predictions
def _zarr_json_truncated(w):
    p = _perfect_instance(w)
    (p / "zarr.json").write_text((p / "zarr.json").read_text()[:60] + "cellbench_predictions")
    return "zarr.json is not readable prediction-set metadata"


def _zarr_json_garbage(w):
    p = _perfect_instance(w)
    (p / "zarr.json").write_bytes(b"\x00\xffcellbench_predictions\x13" * 50)
    return "zarr.json is not readable prediction-set metadata"


def _chunk_garbage(w):
    p = _perfect_instance(w)
    (_first_mask(p) / "c" / "0" / "0").write_bytes(os.urandom(300))
    return "mask: unreadable"


def _chunk_truncated(w):
    p = _perfect_instance(w)
    chunk = _first_mask(p) / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    return "mask: unreadable"


def _chunk_missing(w):
    p = _perfect_instance(w)
    (_first_mask(p) / "c" / "0" / "0").unlink()  # Zarr alone would read background
    return "mask: 1 of 1 chunk files are missing (c/0/0)"


def _every_chunk_not_boolean(w):
    p = _perfect_instance(w)
    _edit(p / "zarr.json", _header(lambda h: h.update(every_chunk="yes")))
    return "header field 'every_chunk' must be true or false"


def _unknown_codec(w):
    p = _perfect_instance(w)
    _edit(_first_mask(p) / "zarr.json", lambda m: m["codecs"][-1].update(name="no-such-codec"))
    return "unreadable array metadata"


def _huge_declared(w):
    p = _perfect_instance(w)

    def grow(m):
        m["shape"] = [100_000, 100_000]

    _edit(_first_mask(p) / "zarr.json", grow)
    return "mask declares shape (100000, 100000), far larger than the ground truth"


def _nan_fill(w):
    p = _perfect_instance(w)
    _edit(_first_mask(p) / "zarr.json", lambda m: m.update(data_type="float32", fill_value="NaN"))
    return "mask"


def _float64_for_int(w):
    p = _perfect_instance(w)
    _edit(_first_mask(p) / "zarr.json", lambda m: m.update(data_type="float64", fill_value=0.0))
    return "mask"


def _no_sample_ids(w):
    p = _perfect_instance(w)
    _edit(p / "zarr.json", _header(lambda h: h.pop("sample_ids")))
    return "header has no sample_ids list"


def _duplicate_sample_ids(w):
    p = _perfect_instance(w)
    _edit(p / "zarr.json", _header(lambda h: h["sample_ids"].append(h["sample_ids"][0])))
    return "sample_ids listed more than once"


def _bad_sample_id(w):
    p = _perfect_instance(w)
    _edit(p / "zarr.json", _header(lambda h: h["sample_ids"].append("x" * 5000)))
    return "are not sample ids"


def _string_scores(w):
    p = _perfect_classification(w)
    import zarr

    root = zarr.open_group(str(p), mode="r+")
    del root["table/scores"]
    root.create_array("table/scores", data=np.array([["a", "b", "c"]] * 2))
    return "table/scores: dtype"


def _fractional_labels(w):
    p = _perfect_classification(w)
    import zarr

    root = zarr.open_group(str(p), mode="r+")
    del root["table/label"]
    root.create_array("table/label", data=np.array([0.5, 1.5]))
    return "table/label: dtype float64 must be an integer type"


def _too_few_rows(w):
    p = _perfect_classification(w)
    import zarr

    root = zarr.open_group(str(p), mode="r+")
    del root["table/label"]
    root.create_array("table/label", data=np.array([0], dtype=np.int64))
    return "table/label: shape (1,), expected (2,)"


def _tiff_folder(w, writer: Callable[[Path, str], None]) -> Path:
    folder = w["work"] / "preds"
    folder.mkdir()
    for sid in w["inst"].sample_ids("test"):
        writer(folder, sid)
    return folder


def _garbage_tiff(w):
    _tiff_folder(w, lambda f, s: (f / f"{s}.tif").write_bytes(b"II*\x00" + os.urandom(200)))
    return "not a readable TIFF"


def _zero_byte_tiff(w):
    _tiff_folder(w, lambda f, s: (f / f"{s}.tif").write_bytes(b""))
    return "not a readable TIFF"


def _truncated_tiff(w):
    import tifffile

    def write(folder, sid):
        tifffile.imwrite(folder / f"{sid}.tif", np.ones((40, 36), np.uint16))
        raw = (folder / f"{sid}.tif").read_bytes()
        (folder / f"{sid}.tif").write_bytes(raw[: len(raw) // 3])

    _tiff_folder(w, write)
    return "not a readable TIFF"


def _symlink_outside(w):
    secret = w["work"].parent / "secret.tif"
    secret.write_bytes(b"secret")
    _tiff_folder(w, lambda f, s: (f / f"{s}.tif").symlink_to(secret))
    return "symbolic link to"


def _csv(w, text: bytes) -> None:
    (w["work"] / "preds.csv").write_bytes(text)


def _csv_huge_id(w):
    _csv(w, b"sample_id,label\n" + b"x" * 100_000 + b",1\n")
    return "is not a sample id"


def _csv_huge_label(w):
    _csv(w, b"sample_id,label\nclas-003," + b"9" * 5000 + b"\n")
    return "is neither a class index nor a class name"


def _csv_latin1(w):
    _csv(w, "sample_id,label\nclas-003,caf\xe9\n".encode("latin-1"))
    return "not UTF-8 text"


def _csv_wrong_task(w):
    _csv(w, b"sample_id,object_id,score,label\nclas-003,1,0.5,1\n")
    return "is this a CSV for another task?"


def _csv_fractional(w):
    _csv(w, b"sample_id,label\nclas-003,1.5\nclas-007,0\n")
    return "label '1.5' is neither a class index nor a class name"


PREDICTION_CASES: dict[str, tuple[Callable, dict]] = {
    "truncated zarr.json": (_zarr_json_truncated, {}),
    "garbage zarr.json": (_zarr_json_garbage, {}),
    "garbage chunk": (_chunk_garbage, {}),
    "truncated chunk": (_chunk_truncated, {}),
    "missing chunk": (_chunk_missing, {}),
    "every_chunk not boolean": (_every_chunk_not_boolean, {}),
    "unknown codec": (_unknown_codec, {}),
    "declared 100000x100000": (_huge_declared, {}),
    "NaN fill value": (_nan_fill, {}),
    "float64 declared for int data": (_float64_for_int, {}),
    "no sample_ids": (_no_sample_ids, {}),
    "duplicate sample_ids": (_duplicate_sample_ids, {}),
    "huge sample id in header": (_bad_sample_id, {}),
    "string score array": (_string_scores, {"task": "classification", "dataset": "toyc@1.0"}),
    "fractional float labels": (
        _fractional_labels,
        {"task": "classification", "dataset": "toyc@1.0"},
    ),
    "too few rows": (_too_few_rows, {"task": "classification", "dataset": "toyc@1.0"}),
    "garbage TIFF": (_garbage_tiff, {"submission": "preds"}),
    "zero-byte TIFF": (_zero_byte_tiff, {"submission": "preds"}),
    "truncated TIFF": (_truncated_tiff, {"submission": "preds"}),
    "symlink outside": (_symlink_outside, {"submission": "preds"}),
    **{
        name: (fn, {"task": "classification", "dataset": "toyc@1.0", "submission": "preds.csv"})
        for name, fn in (
            ("CSV with a huge id", _csv_huge_id),
            ("CSV with a huge label", _csv_huge_label),
            ("Latin-1 CSV", _csv_latin1),
            ("CSV of another task", _csv_wrong_task),
            ("CSV with fractional labels", _csv_fractional),
        )
    },
}


@pytest.mark.parametrize("case", sorted(PREDICTION_CASES))
def test_bad_predictions_are_refused_cleanly(world, case):
    make, fields = PREDICTION_CASES[case]
    expect = make(world)
    _refused(world, _manifest(world["work"], **fields), expect)


def test_the_fixture_predictions_are_accepted(world):
    """Control: the unmodified prediction sets score."""
    _perfect_instance(world)
    res = CliRunner().invoke(
        main,
        ["submit", str(_manifest(world["work"])), "--dry-run", "--n-bootstrap", "5"],
    )
    assert res.exit_code == 0, res.output
    shutil.rmtree(world["work"] / "preds.zarr")
    _perfect_classification(world)
    manifest = _manifest(world["work"], task="classification", dataset="toyc@1.0")
    res = CliRunner().invoke(main, ["submit", str(manifest), "--dry-run", "--n-bootstrap", "5"])
    assert res.exit_code == 0, res.output


# ---------------------------------------------------------------------------- models
def _package(w, change: Callable[[dict], None]) -> dict:
    folder = linear_classifier_package(w["work"] / "pkg", "toyc@1.0")
    _edit(folder / "model.json", change)
    return {
        "task": "classification",
        "dataset": "toyc@1.0",
        "kind": "safetensors",
        "submission": "pkg",
    }


class Raises(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this model always fails")


class ReturnsString(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> str:
        return "a cat"


class ReturnsList(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> list[int]:
        return [1, 2, 3]


class ThreeChannels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).round().to(torch.int32)[:, 0]


def _torchscript(w, module: torch.nn.Module) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(w["work"] / "model.pt"))
    return {"kind": "torchscript", "submission": "model.pt"}


MODEL_CASES: dict[str, tuple[Callable, str]] = {
    "unknown normalisation mode": (
        lambda w: _package(w, lambda m: m["normalisation"].update(mode="sqrt")),
        "normalisation.mode 'sqrt' is not one of",
    ),
    "unknown structure": (
        lambda w: _package(w, lambda m: m.update(normalisation=["percentile"])),
        "normalisation must be an object, got list",
    ),
    "negative tile size": (
        lambda w: _package(w, lambda m: m["inference"].update(tile_size=[-256, 256])),
        "tile_size [-256, 256] must hold sizes between 1 and 65536",
    ),
    "360 GB inference": (
        lambda w: _package(w, lambda m: m["inference"].update(image_size=[60000, 60000])),
        "asks for 13 GiB per float32 channel",
    ),
    "tile overlap 1": (
        lambda w: _package(w, lambda m: m["inference"].update(tile_overlap=1.0)),
        "tile_overlap 1.0 must be in [0, 0.9]",
    ),
    "model that raises": (
        lambda w: _torchscript(w, Raises()),
        "the model raised",
    ),
    "model returning a string": (
        lambda w: _torchscript(w, ReturnsString()),
        "output 0 is a str, expected a tensor",
    ),
    "model returning a list of ints": (
        lambda w: _torchscript(w, ReturnsList()),
        "output 0 is a int, expected a tensor",
    ),
    "model expecting 3 channels": (
        lambda w: _torchscript(w, ThreeChannels()),
        "with the dataset's 1 channel(s)",
    ),
}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_models_are_refused_cleanly(world, case):
    make, expect = MODEL_CASES[case]
    fields = make(world)
    _refused(world, _manifest(world["work"], **fields), expect)
