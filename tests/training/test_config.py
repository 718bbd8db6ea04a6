import pytest

from cellbench.errors import ValidationError
from cellbench.training.config import TrainConfig, parse_override, size_tuple


def test_unknown_key_is_one_line_naming_it_and_the_accepted_keys(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("baseline: unet\nlearning_rate: 0.1\n")
    with pytest.raises(ValidationError) as info:
        TrainConfig.from_yaml(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: unknown config key(s) 'learning_rate'")
    assert "accepted: task, dataset, baseline, model, epochs" in message
    assert "lr" in message.split("accepted:")[1]


def test_every_invalid_value_is_reported_at_once():
    with pytest.raises(ValidationError) as info:
        TrainConfig.from_dict(
            {
                "optimizer": "adam",
                "lr": -1,
                "batch_size": 6,
                "patches_per_read": 4,
                "augment": ["flip", "warp"],
                "patch_size": [0, 64],
                "norm_low": 99,
                "norm_high": 1,
            }
        )
    problems = info.value.problems
    joined = "\n".join(problems)
    assert "optimizer: 'adam' is invalid (expected one of sgd, adamw)" in joined
    assert "lr: -1 is invalid" in joined
    assert "batch_size: 6 must be a multiple of patches_per_read (4)" in joined
    assert "augment: ['flip', 'warp'] is invalid" in joined
    assert "patch_size: [0, 64] is invalid" in joined
    assert "norm_high: 1 is invalid" in joined
    assert len(problems) == 6


def test_yaml_exponent_without_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: 5e-5\nmodel: {width: 4}\n")
    cfg = TrainConfig.from_yaml(path)
    assert cfg.lr == pytest.approx(1e-3) and cfg.weight_decay == pytest.approx(5e-5)
    assert cfg.model == {"width": 4}


def test_defaults_sgd_with_momentum_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.momentum, cfg.schedule) == ("sgd", 0.9, "cosine")
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg


def test_merged_overrides_and_model_keys():
    cfg = TrainConfig.from_dict({"baseline": "unet", "model": {"depth": 4}, "lr": 0.1})
    merged = cfg.merged({"lr": 0.03, "epochs": None, "model.base_channels": 16})
    assert merged.lr == 0.03 and merged.epochs == cfg.epochs
    assert merged.model == {"depth": 4, "base_channels": 16}
    key, value = parse_override("augment=[flip, rot90]")
    assert (key, value) == ("augment", ["flip", "rot90"])
    with pytest.raises(ValidationError, match="key=value"):
        parse_override("lr")


def test_run_fields_required_and_sizes():
    with pytest.raises(ValidationError) as info:
        TrainConfig(baseline="unet").require_run_fields()
    assert len(info.value.problems) == 2
    assert size_tuple(64, 3) == (64, 64, 64)
    with pytest.raises(ValidationError, match="2 entries for 3 spatial axes"):
        size_tuple([64, 64], 3, "patch_size")
