import json
import multiprocessing as mp
from pathlib import Path

import pytest

from cellbench.errors import ValidationError
from cellbench.leaderboard.entry import BoardKey, LeaderboardEntry
from cellbench.leaderboard.store import EntryExistsError, LeaderboardStore, LeaderboardStoreError
from tests.leaderboard.helpers import add_as_author, add_one, make_entry

KEY = BoardKey("toy", "1.0", "instance-segmentation", "test")


def test_round_trip_layout_and_diff_friendly_json(tmp_path):
    store = LeaderboardStore(tmp_path / "lb")
    entry = make_entry("U-Net (ours)", 0.75, seed=3)
    path = Path(store.add(entry))
    assert path.parent == tmp_path / "lb" / "toy@1.0" / "instance-segmentation" / "test" / "entries"
    assert path.name.startswith("u-net-ours-") and path.name.endswith("__seed-3.json")
    text = path.read_text()
    assert text == entry.to_json()
    data = json.loads(text)
    assert list(data) == sorted(data)  # sorted keys
    assert text.endswith("}\n") and '\n  "board": {' in text  # stable two-space indentation
    back = store.entries(KEY)
    assert len(back) == 1
    assert back[0].to_dict() == entry.to_dict()
    assert store.boards() == [KEY]
    assert store.find_board("toy", "instance-segmentation") == KEY
    assert store.find_board("toy@1.0", "instance-segmentation", "test") == KEY
    with pytest.raises(LeaderboardStoreError, match="no leaderboard"):
        store.find_board("toy", "tracking")


def test_same_replicate_is_never_overwritten(tmp_path):
    store = LeaderboardStore(tmp_path)
    first = make_entry("m", 0.5, seed=0)
    path = Path(store.add(first))
    before = path.read_bytes()
    with pytest.raises(EntryExistsError, match="already has a replicate with seed 0"):
        store.add(make_entry("m", 0.9, seed=0))
    assert path.read_bytes() == before
    store.add(make_entry("m", 0.9, seed=1))  # another seed is another file
    assert len(store.entries(KEY)) == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_names_with_equal_slugs_do_not_collide(tmp_path):
    store = LeaderboardStore(tmp_path)
    a = store.add(make_entry("U-Net", 0.5))
    b = store.add(make_entry("unet", 0.6))
    assert a != b and len(store.entries(KEY)) == 2


def test_entry_name_owned_by_other_authors_refused(tmp_path):
    store = LeaderboardStore(tmp_path)
    store.add(make_entry("m", 0.5, seed=0))
    intruder = make_entry("m", 0.9, seed=1, manifest={"authors": ["Someone Else"]})
    with pytest.raises(ValidationError, match="already used"):
        store.add(intruder)


def test_inconsistent_or_unsafe_entries_refused(tmp_path):
    store = LeaderboardStore(tmp_path)
    bad = make_entry("m", 0.5, manifest={"dataset": "other@2.0"})
    with pytest.raises(ValidationError, match="manifest dataset"):
        store.add(bad)
    evil = make_entry("m", 0.5, dataset="..")
    with pytest.raises(ValidationError, match="leaderboard dataset"):
        store.add(evil)
    assert store.boards() == []


def test_corrupt_entry_named_in_error_and_temp_files_ignored(tmp_path):
    store = LeaderboardStore(tmp_path)
    path = Path(store.add(make_entry("m", 0.5)))
    (path.parent / ".m.json.abc.tmp").write_text("{half")  # an in-flight temp file
    assert len(store.entries(KEY)) == 1
    (path.parent / "broken.json").write_text("{not json")
    with pytest.raises(LeaderboardStoreError, match=r"broken\.json"):
        store.entries(KEY)


def test_fsspec_memory_store():
    store = LeaderboardStore("memory://lb-test-store")
    try:
        store.add(make_entry("m", 0.5, seed=0))
        store.add(make_entry("n", 0.6, seed=0))
        with pytest.raises(EntryExistsError):
            store.add(make_entry("m", 0.7, seed=0))
        assert store.boards() == [KEY]
        assert sorted(e.name for e in store.entries(KEY)) == ["m", "n"]
        assert [e.report.headline.value for e in store.entries(KEY) if e.name == "m"] == [0.5]
    finally:
        store.fs.rm(store.root, recursive=True)


def test_eight_processes_at_once_lose_nothing(tmp_path):
    # six distinct entries and two processes racing to store the same replicate
    jobs = [(str(tmp_path), f"entry-{i}", i) for i in range(6)]
    jobs += [(str(tmp_path), "same", 0)] * 2
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(jobs))
        with ctx.Pool(len(jobs)) as pool:
            results = pool.starmap(add_one, [(*job, barrier) for job in jobs])
    assert results[:6] == ["ok"] * 6
    assert sorted(results[6:]) == ["exists", "ok"]
    files = sorted((tmp_path / KEY.path / "entries").iterdir())
    assert len(files) == 7
    for f in files:
        LeaderboardEntry.from_json(f.read_text())  # every file complete and valid
    entries = LeaderboardStore(tmp_path).entries(KEY)
    assert sorted(e.name for e in entries) == [
        "entry-0",
        "entry-1",
        "entry-2",
        "entry-3",
        "entry-4",
        "entry-5",
        "same",
    ]


@pytest.mark.parametrize("round_", range(2))
def test_eight_authors_racing_for_one_name_only_the_first_gets_it(tmp_path, round_):
    authors = [f"Author {i}" for i in range(8)]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(authors))
        with ctx.Pool(len(authors)) as pool:
            results = pool.starmap(
                add_as_author, [(str(tmp_path), a, i, barrier) for i, a in enumerate(authors)]
            )
    assert sorted(results) == ["ok"] + ["refused"] * 7
    winner = authors[results.index("ok")]
    store = LeaderboardStore(tmp_path)
    entries = store.entries(KEY)
    assert [e.manifest["authors"] for e in entries] == [[winner]]
    assert store.owner(entries[0]) == {
        "name": "contested",
        "authors": [winner],
        "code_url": "https://example.org/code",
    }
    # the owner adds another seed; anyone else is still refused
    store.add(make_entry("contested", 0.6, seed=20, manifest={"authors": [winner]}))
    loser = next(a for a in authors if a != winner)
    with pytest.raises(ValidationError, match="already used"):
        store.add(make_entry("contested", 0.6, seed=21, manifest={"authors": [loser]}))
    assert len(store.entries(KEY)) == 2


def test_name_on_a_board_without_ownership_records_belongs_to_its_first_entry(tmp_path):
    store = LeaderboardStore(tmp_path)
    first = make_entry("legacy", 0.5, seed=0, manifest={"authors": ["Early"]})
    late = make_entry("legacy", 0.5, seed=1, manifest={"authors": ["Late"]})
    late.submitted = "2025-01-01T00:00:00+00:00"  # after the first
    folder = tmp_path / KEY.path / "entries"
    folder.mkdir(parents=True)
    for e in (first, late):  # written by an older cellbench: no owners/ record
        (folder / e.filename).write_text(e.to_json())
    with pytest.raises(ValidationError, match=r"authors \['Early'\]"):
        store.add(make_entry("legacy", 0.7, seed=2, manifest={"authors": ["Late"]}))
    store.add(make_entry("legacy", 0.7, seed=3, manifest={"authors": ["Early"]}))
    assert store.owner(first)["authors"] == ["Early"]


@pytest.fixture
def s3_endpoint(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_store_uses_conditional_write_once(s3_endpoint):
    import s3fs

    opts = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    s3fs.S3FileSystem(**opts).mkdir("bucket")
    store = LeaderboardStore("s3://bucket/lb", **opts)
    url = store.add(make_entry("m", 0.5, seed=0))
    assert url.startswith("s3://bucket/lb/toy@1.0/instance-segmentation/test/entries/m-")
    with pytest.raises(EntryExistsError):  # refused by the store (If-None-Match), not a race
        store.add(make_entry("m", 0.9, seed=0))
    entries = LeaderboardStore("s3://bucket/lb", **opts).entries(KEY)
    assert [e.report.headline.value for e in entries] == [0.5]


def test_eight_processes_at_once_on_s3_lose_nothing(s3_endpoint, monkeypatch):
    # the same race as on a local disk, on the S3 server: conditional PUTs, write-once
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)  # inherited by the spawned writers
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir("race")
    root = "s3://race/lb"
    jobs = [(root, f"entry-{i}", i) for i in range(6)] + [(root, "same", 0)] * 2
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(len(jobs))
        with ctx.Pool(len(jobs)) as pool:
            results = pool.starmap(add_one, [(*job, barrier) for job in jobs])
    assert results[:6] == ["ok"] * 6
    assert sorted(results[6:]) == ["exists", "ok"]
    store = LeaderboardStore(root)
    entries = store.entries(KEY)
    assert sorted(e.name for e in entries) == [*(f"entry-{i}" for i in range(6)), "same"]
    assert len(store.fs.ls(f"race/lb/{KEY.path}/entries")) == 7  # no stray temporary objects
