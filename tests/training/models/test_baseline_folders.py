import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from cellbench.training.baseline import DataSpec, get_baseline

ROOT = Path(__file__).resolve().parents[3] / "baselines"
FOLDERS = sorted(p.parent for p in ROOT.glob("*/*/config.yaml"))
SPECS = {
    "classification": DataSpec("classification", 2, class_names=("a", "b")),
    "semantic-segmentation": DataSpec("semantic-segmentation", 1, class_names=("a", "b")),
    "instance-segmentation": DataSpec("instance-segmentation", 1),
    "tracking": DataSpec("tracking", 1),
    "augmented-microscopy": DataSpec("augmented-microscopy", 1, out_channels=2),
}


def test_one_folder_per_task_and_model():
    assert [f"{p.parent.name}/{p.name}" for p in FOLDERS] == [
        "augmented-microscopy/unet-regression",
        "classification/resnet18",
        "instance-segmentation/embedding-unet",
        "instance-segmentation/maskrcnn",
        "semantic-segmentation/unet",
        "tracking/tracker",
    ]


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds_the_model_and_readme_states_the_command(folder, baseline_runner):
    task, name = folder.parent.name, folder.name
    data = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    assert data["task"] == task and data["baseline"] == name
    cls = get_baseline(name)
    model_fields = dict(data["model"])
    for key in ("pretrained", "backbone_weights"):  # weight files are not part of the repo
        if key in model_fields:
            model_fields[key] = "none"
    cls(cls.config_class.from_dict(model_fields), SPECS[task])
    if importlib.util.find_spec("cellbench.training.config") is not None:
        from cellbench.training.config import TrainConfig  # the engine's validation, once merged

        TrainConfig.from_yaml(folder / "config.yaml")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    command = re.sub(r"\\\n\s*", "", readme)
    found = re.search(
        rf"cellbench train {task} --dataset (\S+) --baseline {name} "
        rf"--config baselines/{task}/{name}/config\.yaml",
        command,
    )
    assert found, "README must state the exact training command"
    from cellbench.catalog import Catalog

    assert task in Catalog().card(found.group(1)).tasks  # a real catalog dataset for the task
    # the results sections are exactly what the runner renders from the results files
    for profile in baseline_runner.PROFILE.values():
        assert readme.count(profile.markers[0]) == 1, profile.name
        assert baseline_runner.render_block(folder, profile) in readme, profile.name
    if not (folder / "results-gpu.json").exists():
        assert "GPU results: not yet measured." in readme
