"""Challenge declarations: every problem at once, strict YAML, phases and deadlines."""

from datetime import UTC, datetime

import pytest
import yaml

from cellbench.challenge.config import load_challenge, parse_challenge, strict_yaml
from cellbench.errors import ValidationError

GOOD = {
    "id": "nuclei-1",
    "title": "Nuclei",
    "dataset": "synthetic-nuclei@1.0",
    "task": "instance-segmentation",
    "phases": [
        {"name": "final", "deadline": "2030-06-01T00:00:00Z"},
        {"name": "dev", "deadline": "2030-01-01T00:00:00+01:00"},
    ],
    "limits": {"max_upload": "64MB", "max_model_memory": "2GB", "submissions_per_day": 2},
}


def test_a_good_declaration_and_its_phases(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    c = load_challenge(path)
    assert c.limits.max_upload_bytes == 64 << 20 and c.limits.max_model_memory_bytes == 2 << 30
    assert [p.name for p in c.phases] == ["dev", "final"]  # sorted by deadline
    assert c.phases[0].deadline == datetime(2029, 12, 31, 23, 0, tzinfo=UTC)
    assert c.phase_at(datetime(2029, 6, 1, tzinfo=UTC)).name == "dev"
    assert c.phase_at(datetime(2030, 3, 1, tzinfo=UTC)).name == "final"
    assert c.phase_at(datetime(2030, 7, 1, tzinfo=UTC)) is None
    assert c.closed(datetime(2030, 6, 1, tzinfo=UTC)) and not c.closed(
        datetime(2030, 1, 1, tzinfo=UTC)
    )
    assert c.accepts == ("predictions", "torchscript", "onnx", "safetensors")
    assert type(c).from_dict(c.to_dict()).to_dict() == c.to_dict()


def test_every_problem_listed_at_once():
    bad = {
        "id": "Bad Id",
        "dataset": "no-version",
        "task": "counting",
        "hidden_split": "holdout",
        "accepts": ["pickle"],
        "limits": {"max_upload": "lots", "submisions_per_day": 3, "max_model_runtime_s": -1},
        "partition": {"public_fraction": 1.5, "seed": -2},
        "phases": [{"name": "x", "deadline": "2030-01-01"}],
        "colour": "blue",
    }
    with pytest.raises(ValidationError) as err:
        parse_challenge(bad)
    text = "\n".join(err.value.problems)
    for expected in (
        "title: required",
        "id: 'Bad Id' must be",
        "dataset: 'no-version' must be id@version",
        "task: 'counting' is not one of",
        "hidden_split: 'holdout'",
        "accepts: must be",
        "limits.max_upload: memory size 'lots'",
        "limits.submisions_per_day: unknown field (did you mean 'submissions_per_day'?)",
        "limits.max_model_runtime_s: must be seconds",
        "partition.public_fraction: must be in (0, 1), got 1.5",
        "partition.seed: must be an integer",
        "phases[0].deadline: a deadline needs a time zone",
        "colour: unknown field",
    ):
        assert expected in text, expected
    assert len(err.value.problems) == 13


@pytest.mark.parametrize(
    "text,problem",
    [
        ("a: &x [1, 2]\nb: *x\n", "anchors (&name) are not allowed"),
        ("a: 1\na: 2\n", "key 'a' appears twice"),
        ("a: " + "[" * 30 + "]" * 30 + "\n", "nested deeper than 16 levels"),
        ("x" * 70000, "70000 bytes (at most 65536)"),
        (b"\xff\xfe", "not UTF-8 text"),
    ],
)
def test_strict_yaml_refuses_bombs_duplicates_and_depth(text, problem):
    with pytest.raises(ValidationError) as err:
        strict_yaml(text, "upload")
    assert problem in str(err.value) and str(err.value).startswith("upload: ")
