"""Beyond one machine: Dask scoring, streaming reads from S3, sharding, fsspec vs obstore.

Everything runs on this machine against a local S3-protocol server (moto's
``ThreadedMotoServer`` on 127.0.0.1, the server the tests use), and prints one table per
question, side by side:

1. scoring throughput (images/s) of an instance-segmentation split, 2,000 tiny images (64x64,
   8 objects) and 500 realistic ones (512x512, 300 objects): in one process (the default
   path), and on a ``dask.distributed.LocalCluster`` of 1 and 2 worker processes (one thread
   each), with the speed-up of 2 workers over 1 (goal: 1.8x), by wall clock and by the CPU
   seconds each worker spent (what the engine allows when other jobs share the cores);
2. training-loader throughput (random 64 x 64 patches/s through
   :class:`cellbench.training.data.reader.StoreReader`, the reader the data loader uses): from
   the S3 server (chunk cache off; a first epoch from an empty chunk cache; warm), from the
   same store on local disk, and from arrays already in memory (the upper bound);
3. peak memory (RSS) of scoring a split streamed from S3 (store and predictions both at
   ``s3://``), for two split sizes 4x apart, each in a fresh process;
4. raw zarr reads of every chunk of a store from the S3 server through zarr's ``FsspecStore``
   (s3fs) and ``ObjectStore`` (obstore, measured only if ``obstore`` is importable);
5. store format 4 (Zarr v3 shards) against format 2 (one object per tile): objects, upload
   time, whole-image and random-patch read throughput from the S3 server (cold chunk cache);
6. ingest throughput (images/s) of ``cellbench convert`` of a TIFF folder into a store: in one
   process, and with one Dask task per image on a ``LocalCluster`` of 1 and 2 worker processes
   (the store digest must be identical).

    python benchmarks/scale.py                    # the full run (a few minutes)
    python benchmarks/scale.py --quick            # smaller sizes, to check it runs
    python benchmarks/scale.py --only scoring     # some sections (comma-separated names)

Run from the repository root. Figures depend on the machine and on moto (a Python server, far
slower per request than S3 itself); ``docs/scaling.md`` records a run and what it predicts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARD = {"id": "bench", "version": "1", "tasks": ["instance-segmentation"]}


# ---------------------------------------------------------------------- data
def _blobs(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``n`` non-overlapping discs (radius up to ``size // 8``, or 5-12 px for crowded images)."""
    labels = np.zeros((size, size), np.uint16)
    rmax = max(4, size // 8) if n <= 16 else 12
    rmin = 3 if n <= 16 else 5
    for k in range(1, n + 1):
        cy, cx = (int(v) for v in rng.integers(4, size - 4, 2))
        r = int(rng.integers(rmin, max(rmin + 1, rmax)))
        y0, y1 = max(0, cy - r), min(size, cy + r + 1)
        x0, x1 = max(0, cx - r), min(size, cx + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        win = labels[y0:y1, x0:x1]
        win[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (win == 0)] = k
    return labels


def make_split(root: Path, n: int, size: int, seed: int = 0, cells: int = 8) -> tuple[Any, Path]:
    """A store of ``n`` test images (``size`` x ``size``, ``cells`` objects each) and
    imperfect predictions of them (object 1 missed)."""
    from cellbench.predictions import Prediction, PredictionSet, write_predictions
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import build_store

    rng = np.random.default_rng(seed)
    samples, preds = [], []
    for i in range(n):
        inst = _blobs(rng, size, cells)
        samples.append(
            Sample(
                id=f"img-{i:05d}",
                image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
                instances=inst,
                channel_names=["nuclei"],
                split="test",
                metadata={"plate": f"p{i % 4}"},
            )
        )
        pred = inst.copy()
        pred[pred == 1] = 0
        preds.append(Prediction(f"img-{i:05d}", mask=pred))
    tag = f"{n}-{size}-{seed}-{cells}"
    store = build_store(samples, root / f"split-{tag}.zarr", CARD)
    pset = PredictionSet.from_predictions("instance-segmentation", preds, "bench", "1")
    write_predictions(root / f"preds-{tag}.zarr", pset)
    return store, root / f"preds-{tag}.zarr"


# ---------------------------------------------------------------------- S3 server
class S3:
    """moto's server on 127.0.0.1 with the AWS_* environment pointing at it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        os.environ.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.url}).mkdir("bench")

    def upload(self, local: Path, key: str) -> str:
        from cellbench.store.remote import filesystem, upload_store

        url = f"s3://bench/{key}"
        if (local / "manifest.json").is_file():
            upload_store(local, url, force=True)
        else:
            fs, _ = filesystem(url)
            fs.put(str(local), f"bench/{key}", recursive=True)
        return url

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------- 1. Dask scoring
def _cpu_seconds() -> float:
    return time.process_time()


def bench_scoring(work: Path, n: int, size: int, cells: int = 8) -> list[tuple[str, float, str]]:
    """Wall-clock throughput, and the CPU time each worker process spent in the timed run.

    The CPU figures show what the engine allows when the machine is shared: a worker's CPU
    seconds do not grow when other jobs take turns on the same cores, so ``n / (CPU seconds of
    the busiest worker)`` is the rate with one free core per worker.
    """
    import logging

    from distributed import LocalCluster

    from cellbench.scoring import score

    logging.getLogger("distributed").setLevel(logging.ERROR)
    store, preds = make_split(work, n, size, cells=cells)
    rows = []
    c, t = time.process_time(), time.perf_counter()
    ref = score("instance-segmentation", store, "test", preds, n_bootstrap=0)
    one_proc, one_cpu = time.perf_counter() - t, time.process_time() - c
    note = f"images/s; {one_cpu:.2f} CPU s = {n / one_cpu:.1f} images per CPU s"
    rows.append(("one process (default, no Dask)", n / one_proc, note))
    rates, cpu_rates = {}, {}
    for workers in (1, 2):
        with (
            LocalCluster(
                n_workers=workers,
                processes=True,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            cluster.get_client() as client,
        ):
            # warm-up: workers import cellbench and open the store once
            score("instance-segmentation", store, "test", preds, n_bootstrap=0,
                  scheduler=cluster.scheduler_address)  # fmt: skip
            before = client.run(_cpu_seconds)
            c, t = time.process_time(), time.perf_counter()
            got = score("instance-segmentation", store, "test", preds, n_bootstrap=0,
                        scheduler=cluster.scheduler_address)  # fmt: skip
            wall, driver = time.perf_counter() - t, time.process_time() - c
            after = client.run(_cpu_seconds)
            rates[workers] = n / wall
        busy = [after[w] - before[w] for w in before]
        cpu_rates[workers] = n / max(busy)
        same = json.dumps(got.metrics, sort_keys=True) == json.dumps(ref.metrics, sort_keys=True)
        rows.append(
            (f"LocalCluster, {workers} worker process(es)", rates[workers],
             f"images/s; {'values identical' if same else 'VALUES DIFFER'}; worker CPU s "
             f"{' + '.join(f'{b:.2f}' for b in busy)}, driver {driver:.2f} CPU s, "
             f"wall {wall:.2f} s")
        )  # fmt: skip
        rows.append(
            (f"  the same by worker CPU time ({workers} worker(s))", cpu_rates[workers],
             "images per second of the busiest worker's CPU time")
        )  # fmt: skip
    rows.append(
        ("speed-up 2 workers / 1 worker, wall clock (x)", rates[2] / rates[1], "(goal 1.8x)")
    )
    rows.append(
        ("speed-up 2 workers / 1 worker, by worker CPU time (x)", cpu_rates[2] / cpu_rates[1],
         "(what one free core per worker gives)")
    )  # fmt: skip
    return rows


# ---------------------------------------------------------------------- 6. Dask ingest
def bench_ingest(work: Path, n: int, size: int) -> list[tuple[str, float, str]]:
    import logging

    from distributed import LocalCluster

    from cellbench.formats.convert import convert
    from cellbench.formats.registry import write_samples
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import DatasetStore

    logging.getLogger("distributed").setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    src = work / f"ingest-{n}-{size}"
    write_samples(
        "tiff",
        (
            Sample(
                id=f"img-{i:05d}",
                image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
                instances=_blobs(rng, size, 8),
                split="test",
            )
            for i in range(n)
        ),
        src,
    )
    t = time.perf_counter()
    ref = DatasetStore.open(convert(src, "tiff", "zarr", work / "ingest-seq.zarr")).checksum
    rows = [("one process (default, no Dask)", n / (time.perf_counter() - t), "")]
    rates = {}
    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            addr = cluster.scheduler_address
            convert(src, "tiff", "zarr", work / f"ingest-warm-{workers}.zarr", scheduler=addr)
            t = time.perf_counter()
            out = convert(src, "tiff", "zarr", work / f"ingest-{workers}.zarr", scheduler=addr)
            rates[workers] = n / (time.perf_counter() - t)
        same = DatasetStore.open(out).checksum == ref
        rows.append(
            (f"LocalCluster, {workers} worker process(es)", rates[workers],
             "store digest identical" if same else "DIGEST DIFFERS")
        )  # fmt: skip
    rows.append(("speed-up 2 workers / 1 worker (x)", rates[2] / rates[1], ""))
    return rows


# ---------------------------------------------------------------------- 2. training reads
def _patches(reader: Any, ids: list[str], size: int, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for _ in range(n):
        sid = ids[rng.integers(len(ids))]
        y, x = rng.integers(0, size - 64, 2)
        region = (slice(int(y), int(y) + 64), slice(int(x), int(x) + 64))
        reader.read(sid, "image", -1, region)
        reader.read(sid, "mask", -1, region)
    return n / (time.perf_counter() - t)


class _InMemory:
    def __init__(self, store: Any, ids: list[str]) -> None:
        self.data = {(s, "image"): np.asarray(store.image(s)[...]) for s in ids} | {
            (s, "mask"): np.asarray(store.labels(s)[...]) for s in ids
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        arr = self.data[(sid, key)]
        return np.ascontiguousarray(arr[(slice(None), *region)] if key == "image" else arr[region])


class _ZarrInMemory:
    """The store's chunk files in a zarr MemoryStore: decoding without I/O or verification."""

    def __init__(self, path: Path, ids: list[str]) -> None:
        import zarr
        from zarr.storage import MemoryStore

        mapping = {}
        for f in path.rglob("*"):
            if f.is_file():
                from zarr.core.buffer import default_buffer_prototype

                mapping[f.relative_to(path).as_posix()] = (
                    default_buffer_prototype().buffer.from_bytes(f.read_bytes())
                )
        root = zarr.open_group(MemoryStore(mapping), mode="r")
        self.arrays = {(s, "image"): root[f"images/{s}/0"] for s in ids} | {
            (s, "mask"): root[f"images/{s}/labels/instances/0"] for s in ids
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        arr = self.arrays[(sid, key)]
        return np.asarray(arr[(slice(None), *region)] if key == "image" else arr[region])


class _FilesInMemory:
    """The store's files held in memory, read by cellbench's own chunk reader (the same
    checks and decoding as a local store, without the file reads): the upper bound of
    ``StoreReader`` on that store."""

    def __init__(self, store: Any) -> None:
        from cellbench.store.chunk_reader import StoreFiles
        from cellbench.store.integrity import ManifestCheck

        blobs = {
            f.relative_to(store.path).as_posix(): f.read_bytes()
            for f in store.path.rglob("*")
            if f.is_file()
        }
        check = ManifestCheck(store._manifest, store.ref)

        class Files(StoreFiles):
            def _bytes(self, key: str) -> tuple[bytes | None, Any]:
                data = blobs.get(key)
                return data, self._check(key, data)

        self.files = Files(store.path, check.check, ranges=check)
        self.paths = {
            "image": lambda s: f"{store.format.image_path(s)}/0",
            "mask": lambda s: f"{store.format.label_path(s, 'instances')}/0",
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        lead = (slice(None),) if key == "image" else ()
        return self.files.read_region(self.paths[key](sid), (*lead, *region))


def bench_loader(work: Path, s3: S3, n_images: int, size: int, n_patches: int) -> list[tuple]:
    from cellbench.store import remote
    from cellbench.training.data.reader import StoreReader

    store, _ = make_split(work, n_images, size, seed=1)
    ids = store.sample_ids()
    url = s3.upload(store.path, "loader/store.zarr")
    fields = {"mask": "instances"}
    rows = []
    mem = _patches(_InMemory(store, ids), ids, size, n_patches)
    zmem = _patches(_ZarrInMemory(store.path, ids), ids, size, n_patches)
    fmem = _patches(_FilesInMemory(store), ids, size, n_patches)
    local = StoreReader(str(store.path), fields)
    _patches(local, ids, size, 50)
    disk = _patches(local, ids, size, n_patches)
    os.environ["CELLBENCH_CHUNK_CACHE"] = "0"
    remote._CACHES.clear()
    cold = _patches(StoreReader(url, fields), ids, size, max(50, n_patches // 4))
    os.environ["CELLBENCH_CHUNK_CACHE"] = "2GiB"
    shutil.rmtree(work / "home" / "chunks", ignore_errors=True)
    remote._CACHES.clear()
    warm_reader = StoreReader(url, fields)
    first = _patches(warm_reader, ids, size, n_patches)  # from an empty cache: fills it
    warm = _patches(warm_reader, ids, size, n_patches, seed=1)
    rows.append(("in memory, decoded numpy arrays", mem, "(no decoding at all)"))
    rows.append(("in memory, the store's chunks in a zarr MemoryStore", zmem, "(zarr decoding)"))
    rows.append(
        ("in memory, the store's files read by cellbench's reader", fmem, "1.00 (upper bound)")
    )
    rows.append(
        ("local disk (format 2 store, verified reads)", disk, f"{disk / fmem:.2f} of in-memory")
    )
    rows.append(("S3 server, chunk cache off", cold, f"{cold / disk:.2f} of local disk"))
    rows.append(
        (
            "S3 server, first epoch from an empty chunk cache",
            first,
            f"{first / disk:.2f} of local disk",
        )
    )
    rows.append(("S3 server, chunk cache warm", warm, f"{warm / disk:.2f} of local disk"))
    return rows


# ---------------------------------------------------------------------- 3. peak memory
_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[3])
from cellbench.scoring import score
import cellbench.tasks, cellbench.store.remote, s3fs, zarr

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

peak, stop = [rss()], threading.Event()
def watch():
    while not stop.wait(0.005):
        peak[0] = max(peak[0], rss())
base = rss()
threading.Thread(target=watch, daemon=True).start()
t = time.perf_counter()
r = score("instance-segmentation", sys.argv[1], "test", sys.argv[2], n_bootstrap=0)
stop.set()
print(json.dumps({"rss_mib": max(peak[0], rss()), "base_mib": base,
                  "seconds": time.perf_counter() - t, "n": len(r.per_sample)}))
"""


def bench_memory(work: Path, s3: S3, sizes: tuple[int, int], size: int) -> list[tuple]:
    rows = []
    repo = str(Path(__file__).resolve().parents[1])
    for n in sizes:
        store, preds = make_split(work, n, size, seed=2)
        surl = s3.upload(store.path, f"mem/split-{n}.zarr")
        purl = s3.upload(preds, f"mem/preds-{n}.zarr")
        env = {**os.environ, "CELLBENCH_CHUNK_CACHE": "64MiB", "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryDirectory() as home:
            env["CELLBENCH_HOME"] = home
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, surl, purl, repo],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
        res = json.loads(out.stdout.strip().splitlines()[-1])
        raw = n * size * size * 2 * 3 / 2**20  # image + truth + prediction, uint16
        rows.append(
            (f"{n} images of {size}x{size} from S3", res["rss_mib"],
             f"peak RSS while scoring; {res['rss_mib'] - res['base_mib']:.0f} MiB above the "
             f"process before scoring; split data {raw:.0f} MiB; {res['seconds']:.1f} s")
        )  # fmt: skip
    return rows


# ---------------------------------------------------------------------- 4. fsspec vs obstore
async def _read_all(store: Any, keys: list[str]) -> int:
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    sem = asyncio.Semaphore(32)

    async def one(k: str) -> int:
        async with sem:
            buf = await store.get(k, proto)
            return len(buf.to_bytes()) if buf is not None else 0

    return sum(await asyncio.gather(*(one(k) for k in keys)))


def bench_backends(work: Path, s3: S3) -> list[tuple]:
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    store, _ = make_split(work, 200, 256, seed=3)
    url = s3.upload(store.path, "backends/store.zarr")
    keys = sorted(
        p.relative_to(store.path).as_posix() for p in store.path.rglob("*") if p.is_file()
    )
    rows = []
    fs_store = FsspecStore.from_url(url, storage_options={"endpoint_url": s3.url}, read_only=True)
    sync(_read_all(fs_store, keys[:20]))
    t = time.perf_counter()
    nbytes = sync(_read_all(fs_store, keys))
    dt = time.perf_counter() - t
    rows.append(
        ("zarr FsspecStore (s3fs)", len(keys) / dt, f"objects/s, {nbytes / dt / 1e6:.1f} MB/s")
    )
    try:
        from obstore.store import S3Store
        from zarr.storage import ObjectStore
    except ImportError:
        rows.append(("zarr ObjectStore (obstore)", float("nan"), "obstore not installed"))
        return rows
    ob = ObjectStore(
        S3Store("bench", prefix="backends/store.zarr", endpoint=s3.url,
                access_key_id="testing", secret_access_key="testing", region="us-east-1",
                client_options={"allow_http": True}),
        read_only=True,
    )  # fmt: skip
    sync(_read_all(ob, keys[:20]))
    t = time.perf_counter()
    nbytes = sync(_read_all(ob, keys))
    dt = time.perf_counter() - t
    rows.append(
        ("zarr ObjectStore (obstore)", len(keys) / dt, f"objects/s, {nbytes / dt / 1e6:.1f} MB/s")
    )
    return rows


# ---------------------------------------------------------------------- 5. sharding
def bench_sharding(work: Path, s3: S3, n: int, size: int, n_patches: int) -> list[tuple]:
    """Store format 2 (one object per 256 x 256 tile) against format 4 (Zarr v3 shards of up
    to 8 x 8 tiles), both cellbench stores read through cellbench's verified remote reads:
    objects, upload time (``pull --to s3``'s upload), whole images (scoring, verification)
    and random patches (the training reader) from a cold chunk cache."""
    from cellbench.store import remote
    from cellbench.store.format import FORMATS
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import DatasetStore, build_store
    from cellbench.training.data.reader import StoreReader

    rng = np.random.default_rng(4)
    samples = [
        Sample(
            id=f"img-{i}",
            image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
            instances=_blobs(rng, size, 200),
            channel_names=["nuclei"],
            split="test",
        )
        for i in range(n)
    ]
    ids = [x.id for x in samples]

    def cold() -> None:  # an empty chunk cache (and no cached store handles)
        shutil.rmtree(work / "home" / "chunks", ignore_errors=True)
        remote._CACHES.clear()

    rows = []
    os.environ["CELLBENCH_CHUNK_CACHE"] = "2GiB"
    for version in ("2", "4"):
        local = build_store(samples, work / f"shard-v{version}.zarr", CARD, fmt=FORMATS[version])
        objects = sum(1 for p in local.path.rglob("*") if p.is_file())
        t = time.perf_counter()
        url = s3.upload(local.path, f"shard/v{version}.zarr")
        upload = time.perf_counter() - t
        cold()
        store = DatasetStore.open(url)
        t = time.perf_counter()
        for sid in ids:
            store.read_image(sid)
            store.read_labels(sid)
        whole = n / (time.perf_counter() - t)
        cold()
        reader = StoreReader(url, {"mask": "instances"})
        patches = _patches(reader, ids, size, n_patches, seed=5)
        label = f"format {version} " + ("(256 x 256 tiles)" if version == "2" else "(shards)")
        note = (
            f"objects; upload {upload:.1f} s; {whole:.2f} whole images (image + labels)/s; "
            f"{patches:.0f} random 64x64 patches (image + mask)/s, cold cache"
        )
        rows.append((label, float(objects), note))
    return rows


# ---------------------------------------------------------------------- main
def _table(title: str, rows: list[tuple], unit: str) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        shown = unit if not label.endswith("(x)") else ""
        print(f"  {label:<{width}}  {value:>10.2f} {shown:<9} {note}", flush=True)


SECTIONS = ("scoring", "loader", "memory", "backends", "sharding", "ingest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    args = parser.parse_args()
    q = args.quick
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; known: {SECTIONS}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; S3 = moto ThreadedMotoServer on 127.0.0.1; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    work = Path(tempfile.mkdtemp(prefix="cellbench-scale-"))
    os.environ.setdefault("CELLBENCH_HOME", str(work / "home"))
    os.environ["OMP_NUM_THREADS"] = "1"
    needs_s3 = {"loader", "memory", "backends", "sharding"} & set(only)
    s3 = S3() if needs_s3 else None
    try:
        t0 = time.perf_counter()
        if "scoring" in only:
            _table("1a. scoring throughput, instance split of "
                   f"{200 if q else 2000} images of 64x64 (8 objects each)",
                   bench_scoring(work, 200 if q else 2000, 64), "")  # fmt: skip
            _table("1b. scoring throughput, instance split of "
                   f"{40 if q else 500} images of 512x512 (300 objects each)",
                   bench_scoring(work, 40 if q else 500, 512, cells=300), "")  # fmt: skip
        if "loader" in only:
            _table("2. training reads, random 64x64 patches (image + mask) from 256x256 images",
                   bench_loader(work, s3, 20 if q else 100, 256, 200 if q else 2000),
                   "patches/s")  # fmt: skip
        if "memory" in only:
            sizes = (25, 100) if q else (50, 200)
            _table("3. peak memory of scoring streamed from S3 (fresh process each)",
                   bench_memory(work, s3, sizes, 256), "MiB")  # fmt: skip
        if "backends" in only:
            _table("4. raw reads of every object of a 200-image store from the S3 server",
                   bench_backends(work, s3), "obj/s")  # fmt: skip
        if "sharding" in only:
            _table("5. sharding: store formats 2 and 4 of 2048 x 2048 uint16 images on S3",
                   bench_sharding(work, s3, 2 if q else 8, 2048, 50 if q else 200),
                   "")  # fmt: skip
        if "ingest" in only:
            _table("6. ingest (convert a TIFF folder to a store), "
                   f"{100 if q else 500} images of 256x256",
                   bench_ingest(work, 100 if q else 500, 256), "images/s")  # fmt: skip
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; peak RSS of this process "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
              f"load average at end {os.getloadavg()[0]:.2f}")  # fmt: skip
    finally:
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
