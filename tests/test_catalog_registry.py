import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cellbench.catalog import Catalog, DatasetCard, parse_ref
from cellbench.cli import main
from cellbench.errors import CardError, ChecksumError, DatasetNotFoundError, StoreError
from cellbench.registry import export_zarr, import_store, load, pull, store_path, verify
from cellbench.store.cache import cellbench_home
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import toy_samples

CARD = {
    "id": "toy-nuclei",
    "version": "2.0",
    "title": "Toy nuclei",
    "tasks": ["instance-segmentation", "semantic-segmentation"],
    "description": "Four tiny images for tests.",
    "license": "CC0-1.0",
    "citation": "Nobody (2026). Toy nuclei.",
    "annotation": {"provenance": "simulated", "details": "drawn discs"},
    "splits": {"method": "fixed: 2 train, 1 val, 1 test"},
    "sources": {},
    "class_names": {"semantic": ["background", "odd", "even"]},
    "size": {"samples": 4, "bytes": 20000},
}

RECIPE = textwrap.dedent(
    """
    from tests.factories import toy_samples

    def build(ctx):
        samples = toy_samples("instance-segmentation")
        for i, s in enumerate(samples):
            if ctx.options.get("fail_at") == i:
                raise RuntimeError("simulated crash during the build")
            yield s
    """
)


@pytest.fixture
def catalog_dir(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "catalog"
    d = root / "toy-nuclei"
    (d / "versions").mkdir(parents=True)
    (d / "card.yaml").write_text(yaml.safe_dump(CARD))
    (d / "recipe.py").write_text(RECIPE)
    old = {**CARD, "version": "1.0"}
    (d / "versions" / "1.0.yaml").write_text(yaml.safe_dump(old))
    monkeypatch.setenv("CELLBENCH_CATALOG", str(root))
    return root


def test_card_lists_every_problem(tmp_path):
    bad = {k: v for k, v in CARD.items() if k not in ("license", "citation")}
    bad["tasks"] = ["segmentation"]
    bad["annotation"] = {"provenance": "crowd"}
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(CardError) as err:
        DatasetCard.from_yaml(path)
    msg = str(err.value)
    assert msg.startswith(str(path))
    for needle in ("'license'", "'citation'", "segmentation", "annotation.provenance"):
        assert needle in msg
    assert "\n" not in msg


def test_catalog_versions_and_unknown(catalog_dir):
    cat = Catalog()
    assert "toy-nuclei" in cat.ids()
    assert cat.versions("toy-nuclei") == ["1.0", "2.0"]
    assert cat.card("toy-nuclei").version == "2.0"
    assert cat.card("toy-nuclei", "1.0").version == "1.0"
    with pytest.raises(DatasetNotFoundError, match="did you mean toy-nuclei"):
        cat.card("toy-nucle")
    with pytest.raises(DatasetNotFoundError, match=r"no version '3\.0' \(known: 1\.0, 2\.0\)"):
        cat.card("toy-nuclei", "3.0")
    assert parse_ref("a@1.2") == ("a", "1.2") and parse_ref("a") == ("a", None)


def test_pull_load_verify_export_import(catalog_dir, tmp_path):
    store = pull("toy-nuclei")
    assert store.path == store_path("toy-nuclei", "2.0")
    assert store.card["license"] == "CC0-1.0" and store.class_names("semantic")[1] == "odd"
    assert load("toy-nuclei@2.0").checksum == store.checksum
    assert verify("toy-nuclei") == []
    assert pull("toy-nuclei").path == store.path  # cached: no rebuild
    out = export_zarr("toy-nuclei", tmp_path / "exported.zarr")
    copy = DatasetStore.open(out)
    assert copy.checksum == store.checksum and copy.verify() == []
    with pytest.raises(StoreError, match="belongs to the catalog"):
        import_store(out)


def test_card_store_checksum_is_enforced(catalog_dir):
    pulled = pull("toy-nuclei")
    good = pulled.checksum
    card_file = catalog_dir / "toy-nuclei" / "card.yaml"
    data = yaml.safe_load(card_file.read_text())
    data["checksums"] = {"store": "0" * 64}
    card_file.write_text(yaml.safe_dump(data))
    with pytest.raises(ChecksumError, match=r"does not match the card's checksums\.store"):
        pull("toy-nuclei", force=True)
    # the previously cached store is untouched
    assert load("toy-nuclei").checksum == good
    data["checksums"] = {"store": good}
    card_file.write_text(yaml.safe_dump(data))
    assert pull("toy-nuclei", force=True).checksum == good


def test_interrupted_pull_leaves_cache_clean(catalog_dir):
    with pytest.raises(RuntimeError, match="simulated crash"):
        pull("toy-nuclei", options={"fail_at": 2})
    assert not store_path("toy-nuclei", "2.0").exists()
    assert list((cellbench_home() / "tmp").iterdir()) == []
    with pytest.raises(DatasetNotFoundError, match="not in the cache"):
        load("toy-nuclei")


def test_import_user_store(tmp_path):
    card = {"id": "my-cells", "version": "0.1", "tasks": ["classification"]}
    path = tmp_path / "mine.zarr"
    build_store(toy_samples("classification"), path, card, {"label": ["a", "b", "c"]})
    store = import_store(path)
    assert load("my-cells").path == path.resolve()
    assert load("my-cells@0.1").label(store.sample_ids()[1]) == 1
    copied = tmp_path / "copied.zarr"
    build_store(
        toy_samples("classification"),
        copied,
        {**card, "version": "0.2"},
        {"label": ["a", "b", "c"]},
    )
    cached = import_store(copied, copy=True)
    assert cached.path == store_path("my-cells", "0.2")
    assert load("my-cells").version == "0.2"
    # a corrupted store is refused and not registered
    bad = tmp_path / "bad.zarr"
    build_store(
        toy_samples("classification"), bad, {**card, "id": "bad-cells"}, {"label": ["a", "b", "c"]}
    )
    next((bad / "images").iterdir()).joinpath("0", "c", "0", "0", "0").unlink()
    with pytest.raises(StoreError, match="does not verify"):
        import_store(bad)
    with pytest.raises(DatasetNotFoundError):
        load("bad-cells")


def test_cli_datasets(catalog_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["datasets", "list"])
    assert res.exit_code == 0 and "toy-nuclei" in res.output and "CC0-1.0" in res.output
    res = runner.invoke(main, ["datasets", "info", "toy-nuclei@1.0"])
    assert res.exit_code == 0 and "Toy nuclei" in res.output and "1.0, 2.0" in res.output
    res = runner.invoke(main, ["datasets", "pull", "toy-nuclei", "-q"])
    assert res.exit_code == 0 and "4 samples" in res.output, res.output
    res = runner.invoke(main, ["datasets", "verify", "toy-nuclei", "-q"])
    assert res.exit_code == 0 and "OK" in res.output
    res = runner.invoke(
        main, ["datasets", "export", "toy-nuclei", "--to", "zarr", str(tmp_path / "x.zarr")]
    )
    assert res.exit_code == 0 and (tmp_path / "x.zarr" / "manifest.json").is_file()
    # corrupt the cache: verify exits non-zero and names the array
    store = load("toy-nuclei")
    sid = store.sample_ids()[0]
    (store.path / "images" / sid / "0" / "c" / "0" / "0" / "0").unlink()
    res = runner.invoke(main, ["datasets", "verify", "toy-nuclei", "-q"])
    assert res.exit_code == 1
    assert f"images/{sid}/0' is missing 1 chunk file(s)" in res.output
    res = runner.invoke(main, ["datasets", "pull", "nope"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: unknown dataset 'nope'")
