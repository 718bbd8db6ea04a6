import pytest
import yaml

from cellbench.errors import ValidationError
from cellbench.submissions.manifest import (
    DEFAULT_NORMALISATION,
    TEMPLATE,
    load_manifest,
    manifest_problems,
    parse_manifest,
    write_template,
)

VALID = {
    "name": "My U-Net",
    "authors": ["A. Author", "B. Author"],
    "contact": "a@example.org",
    "code": {"url": "https://github.com/org/repo", "commit": "0123abcd"},
    "paper": "",
    "training_data": "toy@1.0 train",
    "n_parameters": 7_800_000,
    "seed": 2,
    "hardware": "1x A100",
    "license": "MIT",
    "task": "instance-segmentation",
    "dataset": "toy@1.0",
    "split": "test",
    "kind": "predictions",
    "submission": "preds.zarr",
}


def test_template_is_a_valid_manifest_and_never_overwritten(tmp_path):
    problems, fields = manifest_problems(yaml.safe_load(TEMPLATE))
    assert problems == []
    assert fields["kind"] == "predictions" and fields["dataset_version"] == "1.0"
    path = write_template(tmp_path / "submission.yaml")
    assert path.read_text() == TEMPLATE
    with pytest.raises(ValidationError, match="already exists"):
        write_template(path)


def test_valid_manifest_fields_and_digest_ignores_layout(tmp_path):
    m = parse_manifest(VALID, tmp_path / "m.yaml")
    assert m.dataset == "toy" and m.dataset_version == "1.0" and m.seed == 2
    assert m.submission_path == tmp_path / "preds.zarr"
    assert m.to_dict()["code"] == {"url": "https://github.com/org/repo", "commit": "0123abcd"}
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(VALID, sort_keys=True))
    b.write_text("# a comment\n" + yaml.safe_dump(VALID, sort_keys=False, default_flow_style=True))
    assert load_manifest(a).sha256 == load_manifest(b).sha256
    changed = load_manifest(a)
    other = parse_manifest({**VALID, "seed": 3})
    assert changed.sha256 != other.sha256


def test_every_problem_listed_at_once():
    bad = {
        "name": "",
        "auhtors": ["x"],
        "contact": "not an address",
        "code": {"url": "javascript:alert(1)", "commit": "zzz", "branch": "main"},
        "paper": "javascript:alert(2)",
        "training_data": "x",
        "n_parameters": True,
        "seed": -1,
        "hardware": "cpu",
        "license": "MIT",
        "task": "segmentation",
        "dataset": "toy",
        "split": "holdout",
        "kind": "pickle",
        "submission": "x",
        "normalisation": {"method": "percentile"},
    }
    problems, _ = manifest_problems(bad)
    expected = [
        "auhtors: unknown field (did you mean 'authors'?)",
        "authors: required",
        "name: must not be empty",
        "contact: 'not an address' is neither an e-mail address nor an http(s) URL",
        "code.url: 'javascript:alert(1)' must be an http(s) URL",
        "code.commit: 'zzz' must be a commit hash (7-64 hex digits)",
        "code: unknown field(s) branch",
        "paper: 'javascript:alert(2)': links must be http(s) URLs",
        "n_parameters: must be a non-negative integer, got True",
        "seed: must be a non-negative integer, got -1",
        "task: 'segmentation' is not one of classification, semantic-segmentation, "
        "instance-segmentation, tracking, augmented-microscopy",
        "dataset: 'toy' must name the version explicitly as id@version (leaderboards are per "
        "dataset version)",
        "split: 'holdout' is not one of train, val, test",
        "kind: 'pickle' is not one of predictions, torchscript, onnx, safetensors, bioimageio",
        "normalisation: only used for torchscript/onnx models (predictions need none; "
        "safetensors packages carry their own in model.json)",
    ]
    assert sorted(problems) == sorted(expected)
    with pytest.raises(ValidationError) as err:
        parse_manifest(bad, "sub.yaml")
    assert err.value.context == "sub.yaml" and len(err.value.problems) == len(expected)
    assert f"{len(expected)} problems found" in str(err.value)


def test_missing_fields_and_non_mapping():
    problems, _ = manifest_problems({"name": "x"})
    assert "authors: required" in problems and "kind: required" in problems
    assert len([p for p in problems if p.endswith(": required")]) == 12
    assert manifest_problems(["a"])[0] == ["manifest must be a YAML mapping, got list"]


def test_model_kinds_normalisation_and_tracking_rule():
    m = parse_manifest({**VALID, "kind": "onnx", "submission": "m.onnx"})
    assert m.normalisation == DEFAULT_NORMALISATION
    m = parse_manifest({**VALID, "kind": "torchscript", "normalisation": {"method": "zscore"}})
    assert m.normalisation == {"method": "zscore"}
    problems, _ = manifest_problems(
        {**VALID, "kind": "onnx", "normalisation": {"method": "percentile", "low": 99, "high": 1}}
    )
    assert problems == [
        "normalisation: percentiles must satisfy 0 <= low < high <= 100 (got 99, 1)"
    ]
    problems, _ = manifest_problems({**VALID, "task": "tracking", "kind": "torchscript"})
    assert (
        len(problems) == 1
        and "tracking submissions are accepted as predictions only" in (problems[0])
    )


def test_paper_may_be_a_reference_or_doi():
    for paper in ("Smith et al. (2024): Nature 1, 2", "doi:10.1000/xyz", "https://doi.org/10.1/x"):
        assert manifest_problems({**VALID, "paper": paper})[0] == []


def test_unreadable_manifest(tmp_path):
    with pytest.raises(ValidationError, match="does not exist"):
        load_manifest(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValidationError, match="not valid YAML"):
        load_manifest(bad)


def test_optional_weights_url_is_checked_and_kept_only_when_given():
    m = parse_manifest({**VALID, "weights_url": "https://example.org/w.zip"})
    assert m.to_dict()["weights_url"] == "https://example.org/w.zip"
    assert "weights_url" not in parse_manifest(VALID).to_dict()  # older digests unchanged
    problems, _ = manifest_problems({**VALID, "weights_url": "javascript:alert(1)"})
    assert problems == ["weights_url: 'javascript:alert(1)' must be an http(s) URL"]


def test_affine_normalisation_is_validated():
    norm = {"method": "affine", "offset": [1, 2.5], "scale": [3, 0.5]}
    m = parse_manifest({**VALID, "kind": "torchscript", "normalisation": norm})
    assert m.normalisation == {"method": "affine", "offset": [1.0, 2.5], "scale": [3.0, 0.5]}
    for bad, message in [
        ({"offset": [1], "scale": [1, 2]}, "lists of numbers of equal length"),
        ({"offset": [1], "scale": [0]}, "affine scale values must be positive"),
        ({"offset": "x", "scale": [1]}, "lists of numbers of equal length"),
    ]:
        with pytest.raises(ValidationError) as info:
            parse_manifest(
                {**VALID, "kind": "torchscript", "normalisation": {"method": "affine", **bad}}
            )
        assert message in str(info.value)
