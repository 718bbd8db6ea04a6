"""A task's Hugging Face hooks drive the generic importer and the dataset card.

Two throwaway tasks are registered from this module: ``cell-counting`` declares its own column
mapping (a Hub category, a required label column, its own column check and a reader that
relabels instance ids), ``bare-cells`` declares none. Nothing outside this module changes.
"""

from typing import Any, ClassVar

import datasets
import numpy as np
import pytest
import yaml
from datasets import Array2D, Dataset, DatasetDict, Features

from cellbench.errors import CellbenchError, ValidationError
from cellbench.registry import import_hf
from cellbench.store import hf
from cellbench.store.hf.task_columns import (
    ForeignLabels,
    ForeignRowError,
    HFTaskColumns,
    NoHFColumns,
    array_column_problems,
)
from cellbench.tasks import get_task, register, unregister
from cellbench.tasks.instance_segmentation.task import InstanceSegmentationTask


class CountingColumns(HFTaskColumns):
    """Instance masks whose ids become 1..n; a mask without cells is refused."""

    task_category: ClassVar[str | None] = "object-detection"
    required_columns: ClassVar[tuple[str, ...]] = ("label_column",)

    def check_label_column(self, features: Features, column: str, where: str) -> list[str]:
        return array_column_problems(where, features, column, integer=True)

    def foreign_labels(self, splits, column: str, source: str) -> ForeignLabels:
        def read(mask: Any, axes: str) -> dict[str, Any]:
            ids = np.unique(mask[mask > 0])
            if ids.size == 0:
                raise ForeignRowError(f"column {column!r} holds no cells")
            lut = np.zeros(int(mask.max()) + 1, dtype=np.uint16)
            lut[ids] = np.arange(1, ids.size + 1)
            return {"instances": lut[mask]}

        return ForeignLabels({}, read)


class CountingTask(InstanceSegmentationTask):
    name: ClassVar[str] = "cell-counting"
    title: ClassVar[str] = "Cell counting"

    def hf_columns(self) -> HFTaskColumns:
        return CountingColumns()


class BareTask(InstanceSegmentationTask):
    name: ClassVar[str] = "bare-cells"
    title: ClassVar[str] = "A task without a Hugging Face column mapping"


@pytest.fixture(autouse=True)
def _tasks():
    datasets.disable_progress_bars()
    register(CountingTask())
    register(BareTask())
    yield
    unregister("cell-counting")
    unregister("bare-cells")
    datasets.enable_progress_bars()


def _masks(second: np.ndarray) -> DatasetDict:
    features = Features({"image": Array2D((4, 5), "uint16"), "mask": Array2D((4, 5), "int32")})
    first = np.zeros((4, 5), np.int32)
    first[0, :2] = 7
    first[2:, 3:] = 42
    images = [np.full((4, 5), i, np.uint16) for i in range(2)]
    ds = Dataset.from_dict({"image": images, "mask": [first, second]}, features=features)
    return DatasetDict({"train": ds})


def test_the_task_hooks_read_the_label_column():
    second = np.zeros((4, 5), np.int32)
    second[1, 1] = 3
    mapping = hf.ColumnMapping("cell-counting", "counted", "1", label_column="mask")
    store = import_hf(_masks(second), mapping=mapping)
    assert store.tasks == ["cell-counting"] and store.card["class_names"] == {}
    first = store.sample("train-000000").instances
    assert first.dtype == np.uint16
    assert first.tolist() == [[1, 1, 0, 0, 0], [0] * 5, [0, 0, 0, 2, 2], [0, 0, 0, 2, 2]]
    assert int(store.sample("train-000001").instances[1, 1]) == 1
    header = yaml.safe_load(
        hf.dataset_card(hf.ExportPlan.from_store(store).metadata).split("---")[1]
    )
    assert header["task_categories"] == ["object-detection"]


def test_the_task_hooks_report_problems():
    no_cells = _masks(np.zeros((4, 5), np.int32))
    mapping = hf.ColumnMapping("cell-counting", "counted", "1", label_column="mask")
    with pytest.raises(ValidationError, match=r"split 'train' row 1: column 'mask' holds no cells"):
        import_hf(no_cells, mapping=mapping)
    float_mask = no_cells.cast_column("mask", Array2D((4, 5), "float32"))
    with pytest.raises(ValidationError) as err:
        import_hf(float_mask, mapping=mapping)
    assert err.value.problems == [
        "split 'train': column 'mask' is Array2D(shape=(4, 5), dtype='float32'); expected an "
        "integer label image (Array2D..Array5D or nested List of ints) or Image"
    ]
    missing = hf.ColumnMapping("cell-counting", "counted", "1").problems()
    assert missing == ["task 'cell-counting' needs a label column (--label-column)"]


class _SetsTheImage(CountingColumns):
    def foreign_labels(self, splits, column: str, source: str) -> ForeignLabels:
        return ForeignLabels({}, lambda value, axes: {"image": value})


def test_a_hook_may_set_ground_truth_fields_only(monkeypatch):
    monkeypatch.setattr(CountingTask, "hf_columns", lambda self: _SetsTheImage())
    mapping = hf.ColumnMapping("cell-counting", "counted", "1", label_column="mask")
    with pytest.raises(CellbenchError) as err:
        import_hf(_masks(np.ones((4, 5), np.int32)), mapping=mapping)
    assert str(err.value) == (
        "task 'cell-counting': its Hugging Face column mapping sets 'image', not a ground-truth "
        "field (instances, label, semantic, target, target_channel_names, tracks)"
    )


def test_a_task_without_hooks_is_exported_but_not_imported():
    assert isinstance(get_task("bare-cells").hf_columns(), NoHFColumns)
    assert hf.ColumnMapping("bare-cells", "bare", "1", label_column="mask").problems() == [
        "task 'bare-cells' cannot be imported from a foreign dataset (the task declares no "
        "Hugging Face column mapping); build a cellbench store with an ingester instead"
    ]
    assert hf.ColumnMapping("nope", "x", "1").problems() == [
        "task 'nope' is not one of classification, semantic-segmentation, "
        "instance-segmentation, augmented-microscopy, cell-counting (--task)"
    ]
    metadata = {
        "dataset": {
            "id": "x",
            "version": "1",
            "tasks": ["bare-cells", "cell-counting", "tracking"],
        },
        "store": {"n_samples": 3},
    }
    header = yaml.safe_load(hf.dataset_card(metadata).split("---")[1])
    assert header["task_categories"] == ["image-segmentation", "object-detection"]
    assert header["tags"][-3:] == ["bare-cells", "cell-counting", "tracking"]


def test_every_builtin_task_declares_its_hf_columns():
    declared = {
        name: (type(get_task(name).hf_columns()).__module__, get_task(name).hf_columns())
        for name in ("classification", "semantic-segmentation", "instance-segmentation")
    }
    for name, (module, columns) in declared.items():
        assert module == f"cellbench.tasks.{name.replace('-', '_')}.hf"
        assert columns.import_refusal is None and columns.required_columns == ("label_column",)
    tracking = get_task("tracking").hf_columns()
    assert tracking.import_refusal == "no standard track table column"
    augmented = get_task("augmented-microscopy").hf_columns()
    assert augmented.task_category == "image-to-image"
    assert augmented.required_columns == ("target_column",)
