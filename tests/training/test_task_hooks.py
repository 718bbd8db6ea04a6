"""The training engine asks the task: hooks of every task, and no task names in the engine."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from cellbench.errors import CellbenchError
from cellbench.tasks import get_task, task_names
from cellbench.tasks.training import TaskTraining
from cellbench.training.baseline import DataSpec
from cellbench.training.data import build_index
from cellbench.training.errors import DataError, TrainingError
from cellbench.training.inference import predict_image
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings
from cellbench.training.tiles import Tiler
from tests.training.toy_models import ToyConfig, ToyPointwise

TRAINING = Path(__file__).resolve().parents[2] / "cellbench" / "training"
BUILT_IN = [
    "classification",
    "semantic-segmentation",
    "instance-segmentation",
    "tracking",
    "augmented-microscopy",
]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_task_declares_its_training_hooks(name):
    task = get_task(name)
    hooks = task.training()
    assert isinstance(hooks, TaskTraining) and hooks.task is task
    assert hooks.keys[0] == "image"
    # every batch key is read from a ground-truth field the task declares
    assert set(hooks.fields.values()) <= set(task.ground_truth_fields)
    assert hooks.has_classes == (task.class_table is not None)


def _task_literals(node: ast.AST, names: set[str]) -> list[str]:
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and sub.value in names:
            found.append(sub.value)
    return found


def test_no_training_module_compares_against_a_task_name():
    names = set(task_names())
    offenders = []
    for path in sorted(TRAINING.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                hits = [h for o in operands for h in _task_literals(o, names)]
                if hits:
                    offenders.append(f"{path.relative_to(TRAINING)}:{node.lineno} {hits}")
    assert offenders == []


def test_the_tracker_detector_task_comes_from_the_tracking_task():
    hooks = get_task("tracking").training()
    assert hooks.sequences and hooks.frame_task in task_names()
    assert get_task(hooks.frame_task).training().fields == hooks.fields


class _FloatMask(ToyPointwise):
    """A semantic model whose mask comes back as float: the task's output check refuses it."""

    name = "toy-pointwise"

    @torch.no_grad()
    def predict(self, image):
        return {"mask": self(image.float())[0].argmax(0).float().numpy()}


def test_inference_outputs_go_through_the_task_output_check():
    spec = DataSpec(task="semantic-segmentation", in_channels=1, class_names=("a", "b"))
    model = _FloatMask(ToyConfig(), spec).eval()
    image = np.ones((1, 12, 10), np.uint16)
    with pytest.raises(
        TrainingError,
        match=r"^img \(toy-pointwise\): model output is invalid: mask has float dtype float32",
    ):
        predict_image(
            model, image, "cyx", Normaliser(), InferenceSettings(), torch.device("cpu"), "img"
        )


def test_instance_stitching_keeps_scores_only_of_pasted_objects():
    stitcher = get_task("instance-segmentation").training().stitcher((4, 8))
    tiles = list(Tiler((4, 6), 0.5).tiles((4, 8)))
    assert [t.start for t in tiles] == [(0, 0), (0, 2)]
    left = np.zeros((4, 6), np.int32)
    left[:, 2:6] = 1  # object 1, first pixel (0, 2): in the left tile's core
    stitcher.add(tiles[0], {"mask": left, "object_ids": [1], "object_scores": [0.9]})
    right = np.zeros((4, 6), np.int32)
    right[:, 3:4] = 1  # image columns 5: first pixel (0, 5) is in the right tile's core ...
    stitcher.add(tiles[1], {"mask": right, "object_ids": [1], "object_scores": [0.4]})
    out = stitcher.result()  # ... but every pixel of it is taken by object 1 already
    assert np.unique(out["mask"]).tolist() == [0, 1]
    assert out["object_ids"].tolist() == [1] and out["object_scores"].tolist() == [0.9]


def test_a_task_without_training_hooks_is_refused_by_name(make_store):
    from cellbench.tasks import register, unregister
    from cellbench.tasks.semantic_segmentation.task import SemanticSegmentationTask

    class Untrainable(SemanticSegmentationTask):
        name = "untrainable-segmentation"

        def training(self):
            return super(SemanticSegmentationTask, self).training()

    register(Untrainable())
    try:
        with pytest.raises(
            CellbenchError, match="'untrainable-segmentation' has no training hooks"
        ):
            get_task("untrainable-segmentation").training()
        store = make_store("semantic-segmentation")
        with pytest.raises(DataError, match="has no training hooks"):
            build_index(store, "untrainable-segmentation", "train", Normaliser())
    finally:
        unregister("untrainable-segmentation")
