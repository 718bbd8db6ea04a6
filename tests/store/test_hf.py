"""Hugging Face export/import: bit-exact round trips, HF compatibility, foreign data, errors."""

import io
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner
from datasets import Array2D, Array3D, ClassLabel, Dataset, DatasetDict, Features, List, Value
from PIL import Image as PILImage

from cellbench.cli import main
from cellbench.errors import ChecksumError, OfflineError, StoreError, ValidationError
from cellbench.registry import import_hf, import_path, imported, load, push_to_hub, store_path
from cellbench.store import hf
from cellbench.store.cache import stores_dir, tmp_dir
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import TASK_FIXTURES, assert_samples_equal, toy_samples

CARD = {
    "id": "toy-hf",
    "version": "1.0",
    "title": "Toy HF",
    "description": "Tiny samples for the Hugging Face round trip.",
    "license": "CC0-1.0",
    "citation": "Nobody (2026). Toy HF data.",
    "annotation": {"provenance": "simulated", "details": "drawn discs"},
    "splits": {"method": "fixed: 2 train, 1 val, 1 test"},
    "homepage": "https://example.org/toy",
}


@pytest.fixture(autouse=True)
def _quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def _classes(task: str) -> dict[str, list[str]]:
    if task == "classification":
        return {"label": ["a", "b", "c"]}
    if task == "instance-segmentation":
        return {"semantic": ["background", "odd", "even"]}
    return {}


def _build(path: Path, samples: list[Sample], ident: str, classes=None, tasks=None):
    card = {**CARD, "id": ident, "tasks": tasks or ["instance-segmentation"]}
    return build_store(samples, path, card, classes or {})


def _task_store(tmp_path: Path, task: str) -> DatasetStore:
    samples = toy_samples(task)
    ident = f"toy-{task}".replace("instance-3d", "instance-three-d")
    return _build(tmp_path / f"{task}.zarr", samples, ident, _classes(task), [task])


def _assert_same(original: DatasetStore, rebuilt: DatasetStore) -> None:
    assert rebuilt.checksum == original.checksum
    assert rebuilt.sample_ids() == original.sample_ids()
    for sid in original.sample_ids():
        assert_samples_equal(original.sample(sid), rebuilt.sample(sid))
    assert rebuilt.verify() == []


def _cache_is_clean() -> None:
    assert list(stores_dir().iterdir()) == []
    assert list(tmp_dir().iterdir()) == []
    assert imported() == {}


# ------------------------------------------------------------------ round trips

EXPECTED_FEATURES = {
    "classification": {
        "label": ClassLabel(names=["a", "b", "c"]),
        "image": Array3D(shape=(2, 16, 16), dtype="uint16"),
    },
    "instance-segmentation": {
        "image": Array3D(shape=(1, 40, 36), dtype="uint16"),
        "instances": Array2D(shape=(40, 36), dtype="uint16"),
        "semantic": Array2D(shape=(40, 36), dtype="uint8"),
    },
    "instance-3d": {
        "image": datasets.Array4D(shape=(1, 6, 20, 24), dtype="float32"),
        "instances": Array3D(shape=(6, 20, 24), dtype="uint32"),
    },
    "tracking": {
        "image": datasets.Array4D(shape=(5, 1, 24, 24), dtype="uint8"),
        "instances": Array3D(shape=(5, 24, 24), dtype="uint16"),
        "tracks": Array2D(shape=(None, 4), dtype="int64"),
    },
    "augmented-microscopy": {
        "image": Array3D(shape=(1, 32, 32), dtype="uint16"),
        "target": Array3D(shape=(2, 32, 32), dtype="float32"),
        "target_channel_names": List(Value("string")),
    },
}


@pytest.mark.parametrize("task", TASK_FIXTURES)
def test_parquet_round_trip_every_task(tmp_path, task):
    store = _task_store(tmp_path, task)
    out = hf.write_parquet(store, tmp_path / "hf")
    hub_names = {"train": "train", "val": "validation", "test": "test"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "cellbench.json", "croissant.json", *(hub_names[s] for s in store.splits)]
    )
    shard = out / "train" / "train-00000-of-00001.parquet"
    features = Features.from_arrow_schema(pq.read_schema(shard))
    for name, feature in EXPECTED_FEATURES[task].items():
        assert features[name] == feature, name
    assert features["metadata"] == Features(
        {"exposure_ms": Value("float64"), "plate": Value("string"), "site": Value("int64")}
    )
    rebuilt = import_hf(out)
    assert load(f"{store.id}@{store.version}").path == rebuilt.path == store_path(store.id, "1.0")
    _assert_same(store, rebuilt)
    assert rebuilt.card == store.card and rebuilt.class_names("label") == store.class_names("label")


def _variable_2d() -> tuple[list[Sample], dict]:
    """Classification, 16-bit 2-channel images of different sizes, no class table."""
    rng = np.random.default_rng(1)
    shapes = [(2, 16, 16), (2, 20, 12), (2, 9, 31), (2, 16, 16)]
    samples = []
    for i, shape in enumerate(shapes):
        md = {"plate": f"p{i}", "ok": i % 2 == 0, "count": i}
        if i == 1:
            md = {"ok": True}  # missing plate ('') and count (int column becomes NaN float)
        samples.append(
            Sample(
                id=f"var-{i}",
                image=rng.integers(0, 65535, shape, dtype=np.uint16),
                channel_names=["gfp", "dapi"],
                split=["test", "train", "val", "train"][i],
                label=[4, 0, None, 2][i],
                pixel_size={"y": 0.1 * (i + 1), "x": 0.2},
                metadata=md,
            )
        )
    return samples, {}


def _mixed_dtypes() -> tuple[list[Sample], dict]:
    """Image dtypes differ (bytes encoding); instances only on some samples (flat + nulls)."""
    rng = np.random.default_rng(2)
    specs = [((3, 40, 36), np.uint16, True), ((3, 50, 36), np.uint16, False)]
    specs.append(((3, 30, 20), np.uint8, True))
    samples = []
    for i, (shape, dtype, with_instances) in enumerate(specs):
        spatial = shape[1:]
        samples.append(
            Sample(
                id=f"mix-{i}",
                image=rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype),
                channel_names=["a", "b", "c"],
                split=["train", "val", "train"][i],
                instances=rng.integers(0, 2**32 - 1, spatial, dtype=np.uint32)
                if with_instances
                else None,
                semantic=rng.integers(0, 3, spatial, dtype=np.uint8),
                metadata={"weight": float("nan") if i == 2 else 0.5 * i},
            )
        )
    return samples, {"semantic": ["bg", "cell", "edge"]}


def _tracking_variable() -> tuple[list[Sample], dict]:
    """Sequences of different lengths (Array4D with a dynamic first dim), one without tracks."""
    rng = np.random.default_rng(3)
    samples = []
    for i, (t, tracks) in enumerate(
        [(5, [[1, 0, 4, 0], [2, 1, 3, 0]]), (3, np.zeros((0, 4), dtype=np.int64))]
    ):
        frames = np.zeros((t, 12, 12), dtype=np.uint16)
        if len(tracks):
            frames[:, 2:4, 2:4] = 1
            frames[1:4, 6:8, 6:8] = 2
        samples.append(
            Sample(
                id=f"seq-{i}",
                image=rng.integers(0, 4096, (t, 1, 12, 12), dtype=np.uint16),
                axes="tcyx",
                channel_names=["h2b"],
                split="train" if i == 0 else "test",
                instances=frames,
                tracks=np.asarray(tracks, dtype=np.int64),
                pixel_size={"t": 60.0, "y": 0.5, "x": 0.5},
            )
        )
    return samples, {}


EDGE_STORES = {
    "variable-2d": (_variable_2d, {"image": "flat"}),
    "mixed-dtypes": (_mixed_dtypes, {"image": "bytes", "instances": "flat", "semantic": "flat"}),
    "tracking-variable": (
        _tracking_variable,
        {"image": "array", "instances": "array", "tracks": "array"},
    ),
}


@pytest.mark.parametrize("name", sorted(EDGE_STORES))
def test_edge_stores_round_trip_through_every_reader(tmp_path, name):
    make, kinds = EDGE_STORES[name]
    samples, classes = make()
    store = _build(tmp_path / "s.zarr", samples, name, classes)
    plan = hf.ExportPlan.from_store(store)
    assert {k: v.kind for k, v in plan.encodings.items()} == kinds
    if name == "tracking-variable":
        assert plan.features["image"] == datasets.Array4D((None, 1, 12, 12), "uint16")
        assert store.tracks("seq-1").shape == (0, 4)
    if name == "variable-2d":
        assert plan.features["label"] == Value("int64")  # labels but no class table

    out = hf.write_parquet(store, tmp_path / "parquet")
    dd = hf.to_hf(store, cache_dir=tmp_path / "cache")
    dd.save_to_disk(str(tmp_path / "arrow"))
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    sources = {
        "parquet": out,
        "datasetdict": dd,
        "save_to_disk": tmp_path / "arrow",
        "load_dataset": loaded,
    }
    for label, source in sources.items():
        rebuilt = hf.plan_import(source).build(tmp_path / f"back-{label}.zarr")
        _assert_same(store, rebuilt)


def test_encoding_choice_and_float16(tmp_path):
    choose = hf.choose_encoding
    assert choose([None, None]) is None
    assert choose([((3, 4), "uint16"), ((3, 4), "uint16")]) == hf.ArrayEncoding(
        "array", "uint16", (3, 4)
    )
    assert choose([((3, 4), "int64")], dynamic_first=True).shape == (None, 4)
    assert choose([((3, 4), "uint16"), None]).kind == "flat"  # missing on one sample
    assert choose([((3, 4, 5, 6, 7, 8), "uint8")]).kind == "flat"  # no Array6D
    assert choose([((2**16, 2**16), "uint8")]).kind == "flat"  # > 2**31 values per array
    assert choose([((3, 4), "uint16"), ((3, 4), "int16")]).kind == "bytes"
    rng = np.random.default_rng(7)
    samples = [
        Sample(id=f"h{i}", image=rng.random((2, 5, 6)).astype(np.float16), split="test")
        for i in range(2)
    ]
    store = _build(tmp_path / "f16.zarr", samples, "half")
    out = hf.write_parquet(store, tmp_path / "hf", compression="snappy")
    assert hf.ExportPlan.from_store(store).features["image"] == Array3D((2, 5, 6), "float16")
    _assert_same(store, hf.plan_import(out).build(tmp_path / "back.zarr"))


def test_batches_row_groups_and_shards(tmp_path, monkeypatch):
    samples, _ = _variable_2d()
    store = _build(tmp_path / "s.zarr", samples * 1, "batched")
    monkeypatch.setattr(hf.layout, "ROW_GROUP_BYTES", 1000)  # every sample is its own batch
    out = hf.write_parquet(store, tmp_path / "hf", max_shard_size="1KB")
    shards = sorted(p.name for p in (out / "train").iterdir())
    assert shards == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert pq.ParquetFile(out / "train" / shards[0]).num_row_groups == 1
    rebuilt = hf.plan_import(out).build(tmp_path / "back.zarr")
    _assert_same(store, rebuilt)


# ------------------------------------------------------------------ compatibility and metadata


def test_datasets_reads_the_export_with_declared_types(tmp_path):
    store = _task_store(tmp_path, "augmented-microscopy")
    out = hf.write_parquet(store, tmp_path / "hf")
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "validation", "test"}
    assert loaded["train"].num_rows == 2
    assert loaded["train"].features == hf.ExportPlan.from_store(store).features
    # datasets' numpy format casts integers to int64 unless dtype=None
    row = loaded["validation"].with_format("numpy", dtype=None)[0]
    sid = str(row["id"])
    assert sid == "augm-002" and row["table_row"] == 2
    image = np.asarray(store.image(sid)[...])
    assert row["image"].dtype == np.uint16 and np.array_equal(row["image"], image)
    assert np.array_equal(row["target"], np.asarray(store.target(sid)[...]))
    assert list(row["target_channel_names"]) == ["hoechst", "membrane"]
    assert row["pixel_size"]["y"] == 0.65 and row["pixel_size"]["z"] is None
    assert row["metadata"]["plate"] == "plate-0" and row["metadata"]["site"] == 2


def test_metadata_json_in_every_place(tmp_path):
    store = _task_store(tmp_path, "classification")
    out = hf.write_parquet(store, tmp_path / "hf")
    meta = json.loads((out / "cellbench.json").read_text())
    assert meta["source_digest"] == store.checksum
    assert meta["store_format_version"] == "2" and meta["cellbench_hf"] == "2"
    assert meta["dataset"] == store.card and meta["classes"] == {"label": ["a", "b", "c"]}
    assert meta["store"]["split_counts"] == {"train": 2, "val": 1, "test": 1}
    schema = pq.read_schema(out / "test" / "test-00000-of-00001.parquet")
    assert json.loads(schema.metadata[b"cellbench"]) == meta
    dd = hf.to_hf(store, cache_dir=tmp_path / "cache")
    info = dd["train"].info
    assert info.citation == CARD["citation"] and info.license == "CC0-1.0"
    assert info.description.startswith("Toy HF\n\nTiny samples")
    from_info = hf.metadata_from_description(info.description)
    assert from_info is not None
    assert {k: v for k, v in from_info.items() if k != "exported"} == {
        k: v for k, v in meta.items() if k != "exported"
    }


def test_shards_without_json_still_import_and_partial_data_fails_digest(tmp_path):
    store = _task_store(tmp_path, "instance-segmentation")
    out = hf.write_parquet(store, tmp_path / "hf")
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("*.json", "*.md"))
    _assert_same(store, hf.plan_import(moved).build(tmp_path / "back.zarr"))
    shutil.rmtree(moved / "validation")  # a split went missing: the digest cannot match
    with pytest.raises(ChecksumError, match="does not match the exported store's digest"):
        import_hf(moved)
    _cache_is_clean()


def test_lost_metadata_can_be_supplied(tmp_path):
    store = _task_store(tmp_path, "classification")
    out = hf.write_parquet(store, tmp_path / "hf")
    # like load_dataset from the Hub: the Parquet data without description or cellbench.json
    bare = DatasetDict(
        {
            s: Dataset.from_parquet(str(out / s / "*.parquet"), cache_dir=str(tmp_path / "c"))
            for s in ("train", "validation", "test")
        }
    )
    assert hf.metadata_from_description(bare["train"].info.description) is None
    with pytest.raises(StoreError, match="has cellbench's columns but not its metadata"):
        import_hf(bare)
    _assert_same(store, import_hf(bare, metadata=out / "cellbench.json"))
    shuffled = DatasetDict({k: v.select(range(v.num_rows)[::-1]) for k, v in bare.items()})
    with pytest.raises(ValidationError, match=r"split 'train' row 1 .*table_row 0 after 1"):
        hf.plan_import(shuffled, metadata=out / "cellbench.json").build(tmp_path / "x.zarr")
    assert not (tmp_path / "x.zarr").exists()


def test_id_and_version_override(tmp_path):
    store = _task_store(tmp_path, "tracking")
    out = hf.write_parquet(store, tmp_path / "hf")
    renamed = import_hf(out, dataset_id="my-tracks", version="2.0")
    assert load("my-tracks@2.0").path == renamed.path
    assert renamed.card["id"] == "my-tracks" and renamed.checksum != store.checksum
    for sid in store.sample_ids():
        assert_samples_equal(store.sample(sid), renamed.sample(sid))
    with pytest.raises(StoreError, match=r"my-tracks@2\.0 is already imported"):
        import_hf(out, dataset_id="my-tracks", version="2.0")


def test_dataset_card_text():
    meta = {
        "cellbench_hf": "1",
        "store_format_version": "1",
        "source_digest": "ab" * 32,
        "dataset": {**CARD, "id": "toy", "tasks": ["classification"], "license": "CC0-1.0"},
        "classes": {"label": ["mitotic", "interphase"]},
        "store": {"n_samples": 4, "split_counts": {"train": 3, "test": 1}},
        "features": Features(
            {"id": Value("string"), "image_shape": List(Value("int64"))}
        ).to_dict(),
    }
    text = hf.dataset_card(meta, data_files={"train": "train/*.parquet", "test": "test/*.parquet"})
    front, body = text.split("---\n", 2)[1:]
    header = yaml.safe_load(front)
    assert header["license"] == "cc0-1.0" and header["pretty_name"] == "Toy HF"
    assert header["task_categories"] == ["image-classification"]
    assert header["size_categories"] == ["n<1K"]
    assert header["configs"][0]["data_files"][1] == {"split": "test", "path": "test/*.parquet"}
    assert "`toy@1.0`" in body and "ab" * 32 in body and "Nobody (2026)" in body
    assert "- `label`: 0: mitotic, 1: interphase" in body
    assert "| `image_shape` | `List(Value('int64'))` | shape of `image`" in body
    meta["dataset"]["license"] = "Custom terms of the lab"
    header = yaml.safe_load(hf.dataset_card(meta).split("---\n", 2)[1])
    assert header["license"] == "other" and header["license_name"] == "custom-terms-of-the-lab"
    assert header["license_link"] == CARD["homepage"] and "configs" not in header


def test_hub_files_and_offline_push(tmp_path):
    store = _task_store(tmp_path, "classification")
    files = hf.hub_files(store, repo_id="lab/toy")
    assert set(files) == {"README.md", "cellbench.json", "croissant.json"}
    assert 'load_dataset("lab/toy")' in files["README.md"].decode()
    assert json.loads(files["cellbench.json"])["source_digest"] == store.checksum
    import_path(store.path)
    with pytest.raises(OfflineError, match="offline mode is on"):
        push_to_hub("toy-classification", "lab/toy")
    res = CliRunner().invoke(
        main, ["datasets", "export", "toy-classification", "--push-to-hub", "lab/toy", "-q"]
    )
    assert res.exit_code == 1 and "needs the network" in res.output


def test_push_reaches_the_hub_client_and_reports_its_failure(tmp_path, monkeypatch):
    # cellbench online, huggingface_hub offline (HF_HUB_OFFLINE=1 from conftest): the push builds
    # the DatasetDict and the card, then the first Hub request fails without touching the network
    import huggingface_hub.constants

    monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
    # huggingface_hub reads HF_HUB_OFFLINE at import; its request hook checks this at call time
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    store = _task_store(tmp_path, "classification")
    with pytest.raises(hf.HubError, match=r"to lab/toy failed: Cannot reach .* offline mode"):
        hf.push_to_hub(store, "lab/toy", token="hf_not_a_real_token")


# ------------------------------------------------------------------ foreign datasets


def _foreign_classification(tmp_path: Path) -> Path:
    rng = np.random.default_rng(4)
    features = Features(
        {
            "image": Array3D((2, 8, 8), "uint16"),
            "label": ClassLabel(names=["healthy", "sick"]),
            "plate": Value("string"),
            "site": Value("int32"),
            "stage": ClassLabel(names=["early", "late"]),
        }
    )
    root = tmp_path / "foreign"
    for split, n in (("train", 3), ("validation", 2)):
        ds = Dataset.from_dict(
            {
                "image": [rng.integers(0, 65535, (2, 8, 8), dtype=np.uint16) for _ in range(n)],
                "label": [i % 2 for i in range(n)],
                "plate": [f"p{i}" if i else None for i in range(n)],
                "site": list(range(n)),
                "stage": [1] * n,
            },
            features=features,
        )
        (root / split).mkdir(parents=True)
        ds.to_parquet(str(root / split / f"{split}-00000-of-00001.parquet"))
    return root


def test_foreign_classification_via_cli(tmp_path):
    root = _foreign_classification(tmp_path)
    args = ["datasets", "import", str(root), "-q", "--task", "classification"]
    args += ["--id", "my-data", "--version", "1.0", "--image-column", "image"]
    res = CliRunner().invoke(main, [*args, "--label-column", "label"])
    assert res.exit_code == 0, res.output
    store = load("my-data@1.0")
    assert store.class_names("label") == ["healthy", "sick"]
    assert store.splits == {"train": 3, "val": 2}
    assert store.sample_ids() == [f"train-{i:06d}" for i in range(3)] + [
        f"val-{i:06d}" for i in range(2)
    ]
    reference = datasets.load_dataset(
        "parquet",
        data_files={"validation": str(root / "validation" / "*.parquet")},
        cache_dir=str(tmp_path / "cache"),
    )["validation"].with_format("numpy")
    sample = store.sample("val-000001")
    assert sample.axes == "cyx" and sample.label == 1
    assert sample.image.dtype == np.uint16 and np.array_equal(sample.image, reference[1]["image"])
    assert sample.metadata == {"plate": "p1", "site": 1, "stage": "late"}
    assert store.metadata("val-000000") == {"site": 0, "stage": "late"}  # plate was null
    assert store.card["column_mapping"]["label_column"] == "label"


def _png(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def test_foreign_image_features_keep_16_bit_and_channels(tmp_path):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 65535, (20, 30), dtype=np.uint16) for _ in range(2)]
    masks = [rng.integers(0, 5, (20, 30), dtype=np.uint8) for _ in range(2)]
    rgb = [rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for _ in range(2)]
    features = Features(
        {"img": datasets.Image(), "rgb": datasets.Image(), "mask": datasets.Image()}
    )
    ds = Dataset.from_dict(
        {
            "img": [_png(a) for a in images],
            "rgb": [_png(a) for a in rgb],
            "mask": [_png(m) for m in masks],
        },
        features=features,
    )
    mapping = hf.ColumnMapping(
        task="instance-segmentation",
        dataset_id="png-cells",
        version="1",
        image_column="img",
        label_column="mask",
    )
    store = import_hf(DatasetDict({"test": ds}), mapping=mapping)
    assert store.splits == {"test": 2}
    s = store.sample("test-000001")
    assert s.image.dtype == np.uint16 and np.array_equal(s.image[0], images[1])
    assert np.array_equal(s.instances, masks[1])
    rgb_mapping = hf.ColumnMapping(
        task="semantic-segmentation",
        dataset_id="rgb-cells",
        version="1",
        image_column="rgb",
        label_column="mask",
    )
    s = import_hf(DatasetDict({"train": ds}), mapping=rgb_mapping).sample("train-000000")
    assert s.axes == "cyx" and np.array_equal(s.image, np.moveaxis(rgb[0], -1, 0))
    assert np.array_equal(s.semantic, masks[0])


def test_foreign_nested_lists_axes_and_label_kinds(tmp_path):
    rng = np.random.default_rng(6)
    volumes = [rng.random((4, 6, 5, 2), dtype=np.float32) for _ in range(3)]  # z, y, x, c
    ds = Dataset.from_dict(
        {
            "vol": [v.tolist() for v in volumes],
            "kind": ["b", "a", "b"],
            "number": [2, 0, 2],
            "name": ["x1", "x2", "x3"],
        }
    )
    assert isinstance(ds.features["vol"], List)
    base = dict(task="classification", version="1", image_column="vol", axes="zyxc")
    store = import_hf(
        DatasetDict({"train": ds}),
        mapping=hf.ColumnMapping(
            dataset_id="vol-str", label_column="kind", id_column="name", **base
        ),
    )
    assert store.class_names("label") == ["a", "b"]
    s = store.sample("x3")
    assert s.axes == "czyx" and s.label == 1 and s.metadata == {"number": 2}
    assert np.array_equal(s.image, np.moveaxis(volumes[2], -1, 0))
    store = import_hf(
        DatasetDict({"train": ds}),
        mapping=hf.ColumnMapping(dataset_id="vol-int", label_column="number", **base),
    )
    assert store.class_names("label") == ["0", "1", "2"] and store.label("train-000001") == 0


# ------------------------------------------------------------------ bad input


def test_foreign_dataset_needs_a_mapping(tmp_path):
    root = _foreign_classification(tmp_path)
    with pytest.raises(StoreError, match=r"not a cellbench export .*--task, --id"):
        import_hf(root)
    res = CliRunner().invoke(main, ["datasets", "import", str(root)])
    assert res.exit_code == 1
    assert len(res.output.strip().splitlines()) == 1 and "not a cellbench export" in res.output
    args = ["datasets", "import", str(root), "--task", "classification", "--id", "x"]
    args += ["--version", "1", "--image-column", "img", "--label-column", "label"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "split 'train': column 'img' not found" in res.output
    _cache_is_clean()


def test_mapping_problems_are_listed_at_once(tmp_path):
    root = _foreign_classification(tmp_path)
    bad = hf.ColumnMapping(
        task="classification",
        dataset_id="my-data",
        version="1",
        image_column="pixels",
        label_column="plate",
        metadata_columns=("nope",),
    )
    with pytest.raises(ValidationError) as err:
        import_hf(root, mapping=bad)
    msg = str(err.value)
    assert "split 'train': column 'pixels' not found (columns: image, label, plate" in msg
    assert "column 'nope' not found" in msg
    assert len(err.value.problems) == 4  # pixels and nope, in both splits
    wrong_types = hf.ColumnMapping(
        task="instance-segmentation",
        dataset_id="my-data",
        version="1",
        image_column="plate",
        label_column="image",
    )
    with pytest.raises(ValidationError) as err:
        import_hf(root, mapping=wrong_types)
    # the uint16 Array3D is a valid label image; only the string image column is refused
    assert len(err.value.problems) == 2
    assert "split 'validation': column 'plate' is Value('string'); expected a numeric array" in str(
        err.value
    )
    with pytest.raises(ValidationError, match="task 'tracking' cannot be imported"):
        import_hf(root, mapping=hf.ColumnMapping("tracking", "my-data", "1"))
    with pytest.raises(ValidationError, match=r"needs a label column \(--label-column\)"):
        import_hf(root, mapping=hf.ColumnMapping("classification", "My Data", "1"))
    _cache_is_clean()


def test_bad_rows_are_named(tmp_path):
    float_masks = Dataset.from_dict(
        {"image": [np.zeros((4, 4), np.uint8).tolist()], "mask": [np.zeros((4, 4)).tolist()]}
    )
    mapping = hf.ColumnMapping("semantic-segmentation", "bad", "1", label_column="mask")
    with pytest.raises(ValidationError, match=r"column 'mask' is .*float64.*integer label image"):
        import_hf(DatasetDict({"train": float_masks}), mapping=mapping)
    ragged = Dataset.from_dict({"image": [[[1, 2], [3, 4]], [[1, 2], [3]]], "y": [0, 1]})
    mapping = hf.ColumnMapping("classification", "bad", "1", label_column="y")
    with pytest.raises(ValidationError, match=r"split 'train' row 1: column 'image' is ragged"):
        import_hf(DatasetDict({"train": ragged}), mapping=mapping)
    four_d = Dataset.from_dict({"image": [np.zeros((2, 2, 3, 3), np.uint8)], "y": [0]})
    with pytest.raises(ValidationError, match=r"row 0: column 'image' holds 4-D .*--axes"):
        import_hf(DatasetDict({"train": four_d}), mapping=mapping)
    with pytest.raises(StoreError, match="has no splits"):
        import_hf(DatasetDict())
    _cache_is_clean()


def test_modified_cellbench_export_is_refused(tmp_path):
    store = _task_store(tmp_path, "classification")
    dd = hf.to_hf(store, cache_dir=tmp_path / "cache")
    retyped = dd.cast_column("image", Array3D((2, 16, 16), "float32"))
    with pytest.raises(ValidationError) as err:
        import_hf(retyped)
    assert len(err.value.problems) == 3  # one per split
    assert "split 'train': column 'image' is Array3D(shape=(2, 16, 16), dtype='float32'), " in str(
        err.value
    )
    extra = DatasetDict({k: v.add_column("note", ["x"] * v.num_rows) for k, v in dd.items()})
    extra = extra.remove_columns("axes")
    with pytest.raises(ValidationError) as err:
        import_hf(extra)
    msg = str(err.value)
    assert "column 'axes' is missing (expected Value('string'))" in msg
    assert "unexpected column 'note'" in msg
    _cache_is_clean()


def test_cli_export_import_and_usage_errors(tmp_path):
    store = _task_store(tmp_path, "instance-3d")
    runner = CliRunner()
    assert runner.invoke(main, ["datasets", "import", str(store.path)]).exit_code == 0
    ref = f"{store.id}@{store.version}"
    res = runner.invoke(main, ["datasets", "export", ref, "--to", "hf", str(tmp_path / "hf"), "-q"])
    assert res.exit_code == 0 and "Hugging Face Parquet" in res.output
    res = runner.invoke(main, ["datasets", "export", ref, "--to", "hf"])
    assert res.exit_code == 2 and "needs a destination folder" in res.output
    res = runner.invoke(main, ["datasets", "import", str(tmp_path / "hf"), "--id", "copy-3d"])
    assert res.exit_code == 0, res.output
    copy = load("copy-3d@1.0")
    for sid in store.sample_ids():
        assert_samples_equal(store.sample(sid), copy.sample(sid))
    hf.to_hf(store, cache_dir=tmp_path / "cache").save_to_disk(str(tmp_path / "arrow"))
    res = runner.invoke(main, ["datasets", "import", str(tmp_path / "arrow"), "--version", "9"])
    assert res.exit_code == 0 and f"imported {store.id}@9 (4 samples)" in res.output
    res = runner.invoke(main, ["datasets", "import", str(tmp_path / "hf"), "--image-column", "x"])
    assert res.exit_code == 2 and "--image-column need --task" in res.output
    res = runner.invoke(main, ["datasets", "import", str(store.path), "--id", "x"])
    assert res.exit_code == 1 and "apply to Hugging Face datasets only" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(main, ["datasets", "import", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "neither a cellbench Zarr store" in res.output
