"""Scoring, store verification and ingest as Dask graphs: batches of items, same reduction.

cellbench does not schedule work itself; it hands independent per-item work to Dask, a batch
of consecutive items per task (:func:`map_ordered`: about eight tasks per worker thread, at
most :data:`MAX_BATCH` items), and keeps the reduction it already has:

* scoring: :func:`sample_outcomes` runs :func:`cellbench.scoring.sample_outcome` (validate one
  sample's prediction, reduce it to each metric's sufficient statistics) for each image or
  sequence; a task carries sample names, never arrays. The driver then finalises and
  aggregates those statistics exactly as the single-process path does
  (:func:`cellbench.scoring.collect` / ``summarise``), in the split's table order, so groups
  and bootstrap resamples are exact and every value is the same whatever the scheduler and
  the number of workers.
* verification: :func:`verify_arrays` checks one store array per task (chunk files against the
  manifest, then the decoded content's sha256).
* ingest: :func:`ingest_items` reads and checks one image or sequence of a source per task (a
  format's ``read_item`` hook) and writes it as a one-sample part beside the store being
  built (chunks compressed and hashed on the worker); the driver adopts the parts in the
  source's order, a bounded window at a time (:func:`imap_ordered`), so the store is the one
  the sequential path builds. :func:`read_items` hands the samples themselves back in order
  (for targets other than a store: the target format's writer runs in the driver).

Schedulers (``--scheduler``): ``synchronous`` (one thread, for debugging), ``threads`` (Dask's
local thread pool), ``processes`` (Dask's local process pool) or the address of a running
``dask.distributed`` scheduler (``tcp://host:8786``); ``$DASK_SCHEDULER_ADDRESS`` is used when
no scheduler is named. Without either, nothing here runs: scoring stays the single pass in the
calling process.

Tasks carry locations, not open objects: each task opens the store (a folder or a URL, read
through the verified chunk cache of :mod:`cellbench.store.remote`) and the predictions by
location, once per worker process and thread (kept in a small per-worker table), so a
distributed worker on another machine needs only the URL. In-memory prediction sets are sent
along with the tasks. Tasks are pure, so when a ``dask.distributed`` worker dies, the scheduler
reruns its tasks elsewhere and the result is unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")
#: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (to give memory back to the
#: system). Setting it also fixes glibc's mmap threshold at 128 KiB, so every larger NumPy
#: temporary is mapped and faulted in afresh: scoring 512 x 512 images took a worker 1.8x the
#: CPU (``benchmarks/scale.py`` section 1b, docs/scaling.md). Clusters are told once.
_TRIM_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
_TRIM_TOLD: set[str] = set()


def _worker_trim(variables: tuple[str, ...] = _TRIM_VARIABLES) -> tuple[str | None, ...]:
    """(On a worker.) The malloc variables of its environment."""
    return tuple(os.environ.get(v) for v in variables)


def _trim_hint(client: Any, address: str) -> None:
    """Warn once per cluster whose workers run with a fixed, small mmap threshold."""
    if address in _TRIM_TOLD:
        return
    _TRIM_TOLD.add(address)
    try:
        found = client.run(_worker_trim)
    except Exception:  # an old or restricted cluster: no hint, the work goes on
        return
    slow = [trim for trim, mmap in found.values() if trim is not None and mmap is None]
    if slow:
        import warnings

        warnings.warn(
            f"{len(slow)} of {len(found)} Dask workers run with MALLOC_TRIM_THRESHOLD_={slow[0]} "
            "(Dask's default), which makes glibc map every NumPy temporary over 128 KiB afresh: "
            "scoring or converting large images takes up to 1.8x the CPU; start the workers "
            "with it unset "
            "(Dask config distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null), "
            "see docs/scaling.md",
            UserWarning,
            stacklevel=3,
        )


def resolve_scheduler(value: str | None) -> str | None:
    """The scheduler to use: ``value``, else ``$DASK_SCHEDULER_ADDRESS``, else None (no Dask).

    Raises:
        ValueError: For a value that is neither a local scheduler nor an address.
    """
    chosen = value or os.environ.get(SCHEDULER_ENV) or None
    if chosen is None:
        return None
    if chosen in LOCAL_SCHEDULERS or "://" in chosen:
        return chosen
    raise ValueError(
        f"scheduler {chosen!r}: expected one of {', '.join(LOCAL_SCHEDULERS)} or a "
        "dask.distributed address such as tcp://host:8786"
    )


#: Most items one task carries (see :func:`map_ordered`): enough to amortise a task's fixed
#: cost (scheduler round trip, result transfer; about a millisecond on ``dask.distributed``),
#: few enough that a slow batch or a lost worker costs little.
MAX_BATCH = 64


def batch_size(n_items: int, threads: int) -> int:
    """Items per task: about eight tasks per worker thread, at most :data:`MAX_BATCH` items."""
    return max(1, min(MAX_BATCH, n_items // (8 * max(1, threads))))


def _chunks(items: Sequence[tuple[Any, ...]], size: int) -> list[list[tuple[Any, ...]]]:
    """``items`` cut into consecutive lists of ``size`` (the last one shorter)."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _cluster_threads(client: Any) -> int:
    """Worker threads of a ``dask.distributed`` cluster."""
    return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())


def _run_batch(fn: Callable[..., Any], n_shared: int, *args: Any) -> list[Any]:
    """One task: ``fn(*shared, *item)`` for each item of a batch (``args`` = shared + batch)."""
    shared, batch = args[:n_shared], args[n_shared]
    return [fn(*shared, *item) for item in batch]


def map_ordered(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    *,
    scheduler: str,
    progress: bool = False,
    desc: str = "",
    unit: str = "task",
    shared: tuple[Any, ...] = (),
    batch: int | None = None,
) -> list[Any]:
    """``[fn(*shared, *item) for item in items]`` as Dask tasks of a few items each, in order.

    Items are grouped into consecutive batches (``batch`` items each; by default
    :func:`batch_size`: about eight tasks per worker thread, at most :data:`MAX_BATCH` items),
    one task per batch, so the per-task cost of the scheduler does not dominate small items.
    Each item's result is ``fn``'s alone, so the results do not depend on the grouping.

    Args:
        fn: A module-level (picklable) function.
        items: Per-item arguments.
        scheduler: ``synchronous``, ``threads``, ``processes`` or a distributed address.
        progress: Show a progress bar over finished items.
        desc: Progress bar label.
        unit: Progress bar unit.
        shared: Arguments common to every task (sent once, not once per task).
        batch: Items per task (default: see above; 1 gives one task per item).

    Returns:
        The results, in the order of ``items``.
    """
    from tqdm.auto import tqdm

    if not items:
        return []
    n_shared = len(shared)
    if "://" in scheduler:
        import uuid

        from distributed import Client, as_completed

        with Client(scheduler, set_as_default=False) as client:
            _trim_hint(client, scheduler)
            batches = _chunks(items, batch or batch_size(len(items), _cluster_threads(client)))
            common = [_held(client, a) if _big(a) else a for a in shared]
            token = uuid.uuid4().hex
            futures = [  # keys name fn, so a dashboard (and a test) sees what runs
                client.submit(
                    _run_batch, fn, n_shared, *common, chunk, key=f"{fn.__name__}-{token}-{k}"
                )
                for k, chunk in enumerate(batches)
            ]
            index = {f.key: k for k, f in enumerate(futures)}
            done: list[list[Any] | None] = [None] * len(futures)
            with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
                for future in as_completed(futures, loop=client.loop):
                    k = index[future.key]
                    done[k] = future.result()
                    bar.update(len(batches[k]))
            return [r for chunk in done for r in (chunk or [])]

    import dask
    from dask.callbacks import Callback

    batches = _chunks(items, batch or batch_size(len(items), os.cpu_count() or 1))
    common_d = [dask.delayed(a, traverse=False) if _big(a) else a for a in shared]
    tasks = [
        dask.delayed(_run_batch, pure=False)(fn, n_shared, *common_d, chunk) for chunk in batches
    ]
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
        sizes = {t.key: len(chunk) for t, chunk in zip(tasks, batches, strict=True)}

        class _Bar(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                if key in sizes:
                    bar.update(sizes[key])

        with _Bar():
            done = dask.compute(*tasks, scheduler=scheduler)
    return [r for chunk in done for r in chunk]


def imap_ordered(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    *,
    scheduler: str,
    shared: tuple[Any, ...] = (),
    window: int | None = None,
    batch: int | None = 1,
) -> Iterator[Any]:
    """Yield ``fn(*shared, *item)`` for each item, in order, as one Dask task per item.

    With ``batch`` other than 1, a task carries that many consecutive items (``None``: see
    :func:`batch_size`), and ``window`` counts tasks; use it when results are small (the
    ingest's part records), not when they are samples.

    Unlike :func:`map_ordered`, results are handed over as soon as they are next in order and
    at most about ``window`` results are held or in flight at once (two windows for the local
    schedulers, whose next batch runs while the current one is consumed), so a consumer that
    writes each result keeps memory bounded whatever the number of items.

    Args:
        fn: A module-level (picklable) function.
        items: Per-task arguments.
        scheduler: ``synchronous``, ``threads``, ``processes`` or a distributed address.
        shared: Arguments common to every task (sent once, not once per task).
        window: Tasks in flight (default: twice the workers' threads, at least 4).
        batch: Items per task (1: one task per item; ``None``: :func:`batch_size`).
    """
    if not items:
        return
    if "://" in scheduler:
        yield from _imap_distributed(fn, items, scheduler, shared, window, batch)
        return
    if batch == 1:
        yield from _imap_local(fn, items, scheduler, shared, window)
        return
    chunks = _chunks(items, batch or batch_size(len(items), os.cpu_count() or 1))
    batched = functools.partial(_run_batch, fn, len(shared))
    for results in _imap_local(batched, [(c,) for c in chunks], scheduler, shared, window):
        yield from results


def _imap_local(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    scheduler: str,
    shared: tuple[Any, ...],
    window: int | None,
) -> Iterator[Any]:
    """:func:`imap_ordered` on a local scheduler, one task per item."""
    import concurrent.futures as cf

    import dask

    workers = os.cpu_count() or 1
    size = window or max(4, 2 * workers)
    common = [dask.delayed(a, traverse=False) if _big(a) else a for a in shared]
    pool: cf.Executor | None = None
    if scheduler == "threads":
        pool = cf.ThreadPoolExecutor(workers)
    elif scheduler == "processes":
        import multiprocessing

        pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def run(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
        tasks = [dask.delayed(fn, pure=False)(*common, *item) for item in batch]
        extra = {"pool": pool} if pool is not None else {}
        return dask.compute(*tasks, scheduler=scheduler, **extra)

    batches = [items[i : i + size] for i in range(0, len(items), size)]
    try:
        with cf.ThreadPoolExecutor(1) as driver:
            pending = driver.submit(run, batches[0])
            for k in range(len(batches)):
                results = pending.result()
                if k + 1 < len(batches):
                    pending = driver.submit(run, batches[k + 1])
                yield from results
                del results
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _imap_distributed(
    fn: Callable[..., Any],
    items: Sequence[tuple[Any, ...]],
    address: str,
    shared: tuple[Any, ...],
    window: int | None,
    batch: int | None,
) -> Iterator[Any]:
    """:func:`imap_ordered` on a ``dask.distributed`` cluster (one connection)."""
    import uuid
    from collections import deque

    from distributed import Client
    from distributed import wait as distributed_wait

    with Client(address, set_as_default=False) as client:
        _trim_hint(client, address)
        threads = _cluster_threads(client)
        size = window or max(4, 2 * threads)
        prefix = f"{fn.__name__}-{uuid.uuid4().hex}"  # keys name fn whatever the batching
        if batch != 1:
            items = [(c,) for c in _chunks(items, batch or batch_size(len(items), threads))]
            fn = functools.partial(_run_batch, fn, len(shared))
        common = [_held(client, a) if _big(a) else a for a in shared]
        todo = iter(enumerate(items))
        pending: deque[Any] = deque()

        def submit_next() -> None:
            nxt = next(todo, None)
            if nxt is not None:
                k, item = nxt
                pending.append(client.submit(fn, *common, *item, key=f"{prefix}-{k}"))

        for _ in range(size):
            submit_next()
        try:
            while pending:
                future = pending.popleft()
                result = future.result()
                future.release()
                submit_next()
                if batch != 1:
                    yield from result
                else:
                    yield result
        finally:
            if pending:  # the consumer stopped early: let the window's tasks end (a worker
                # cannot stop a running task, and the caller removes what they write next)
                with contextlib.suppress(Exception):
                    distributed_wait(list(pending), timeout=120)


def _big(obj: Any) -> bool:
    return not isinstance(obj, str | int | float | bool | type(None))


def _identity(obj: Any) -> Any:
    return obj


def _held(client: Any, obj: Any) -> Any:
    """A future of ``obj`` on the cluster, sent once and passed to every task that needs it.

    A task's result, not scattered data: if the worker holding it dies mid-run, the scheduler
    computes it again from the task (scattered data would be lost, and every task needing it
    cancelled: seen once in tests/formats/test_convert_parallel.py's killed-worker test).
    """
    return client.submit(_identity, obj, pure=False)


# ---------------------------------------------------------------------- scoring
_OPENED: dict[tuple[Any, ...], Any] = {}
_OPENED_LOCK = threading.Lock()


def _opened(kind: str, location: Any, opener: Callable[[], Any]) -> Any:
    """An object opened once per worker process and thread (stores are not shared by threads)."""
    key = (kind, location, os.getpid(), threading.get_ident())
    with _OPENED_LOCK:
        found = _OPENED.get(key)
    if found is None:
        found = opener()
        with _OPENED_LOCK:
            if len(_OPENED) > 64:
                _OPENED.clear()
            _OPENED[key] = found
    return found


def _score_sample(
    task: str,
    store_loc: str,
    pred_source: Any,
    class_names: list[str] | None,
    metrics: list[Any],
    sid: str,
) -> tuple[
    tuple[list[str], list[Any] | None, list[dict[str, float] | None] | None], dict[str, str]
]:
    """One Dask task: :func:`cellbench.scoring.sample_outcome` of one sample, and more.

    With it, the sha256 of the sample's prediction files when the set is at a URL
    (:meth:`~cellbench.predictions.PredictionSet.file_digests`), so that the driver does not
    fetch them again for the report's digest.
    """
    from cellbench.errors import StoreError
    from cellbench.predictions import PredictionSet, load_predictions
    from cellbench.scoring import sample_outcome
    from cellbench.store.zarr_store import DatasetStore
    from cellbench.tasks import get_task

    spec = get_task(task)
    store = _opened("store", store_loc, lambda: DatasetStore.open(store_loc))
    if isinstance(pred_source, PredictionSet):
        predictions = pred_source
    else:
        predictions = _opened(
            "predictions",
            (str(pred_source), task),
            lambda: load_predictions(pred_source, task=task, class_names=class_names),
        )
    outcome = sample_outcome(spec, store, predictions, metrics, sid, values=True)
    digests: dict[str, str] = {}
    # (a refused sample: no report, no digest; a file gone: the driver's digest says so)
    with contextlib.suppress(StoreError):
        digests = {} if outcome[0] else predictions.file_digests(sid)
    return outcome, digests


def sample_outcomes(
    spec: Any,
    store: Any,
    predictions: Any,
    metrics: Sequence[Any],
    sample_ids: Sequence[str],
    *,
    scheduler: str,
    progress: bool = False,
) -> list[tuple[list[str], list[Any] | None, list[dict[str, float] | None] | None]]:
    """Per-sample outcomes of ``sample_ids`` (tasks of a batch of samples each).

    Args:
        spec: The task declaration.
        store: The opened dataset (its folder or URL is what the tasks open).
        predictions: The prediction set: read again by each worker from its source when it has
            one, else sent with the tasks.
        metrics: The split's metric suite (decided by the driver, sent to every task).
        sample_ids: Samples to score, in table order.
        scheduler: See :func:`map_ordered`.
        progress: Show a progress bar.

    Returns:
        :func:`cellbench.scoring.sample_outcome`'s ``(problems, stats, values)`` per sample, in
        the order of ``sample_ids``.
    """
    source = predictions.source if predictions.source is not None else predictions
    done = map_ordered(
        _score_sample,
        [(sid,) for sid in sample_ids],
        scheduler=scheduler,
        progress=progress,
        desc=f"score {spec.name} ({scheduler})",
        unit=spec.resampling_unit,
        shared=(
            spec.name,
            str(store.path),
            source,
            store.class_names("label") or None,
            list(metrics),
        ),
    )
    for _, digests in done:
        predictions.add_file_digests(digests)
    return [outcome for outcome, _ in done]


# ---------------------------------------------------------------------- verification
def _local_array_problems(root: str, manifest: Any, apath: str) -> list[str]:
    """One Dask task: the problems of one array of a local store."""
    from pathlib import Path

    import zarr

    from cellbench.store.integrity import _array_problems

    return _array_problems(zarr, Path(root), root, apath, manifest.arrays[apath], manifest)


def _remote_array_problems(url: str, apath: str) -> list[str]:
    """One Dask task: the problems of one array of a remote store (opened once per worker)."""
    from cellbench.store.remote import array_problems_of, open_remote

    return array_problems_of(_opened("store", url, lambda: open_remote(url)), apath)


def verify_arrays(
    location: str,
    array_paths: Sequence[str],
    manifest: Any,
    *,
    scheduler: str,
    progress: bool = False,
) -> list[str]:
    """Problems of each listed array of the store at ``location`` (folder or URL), in order.

    One Dask task per array; each reads the array's chunk files (a remote store's straight from
    the remote, bypassing the chunk cache) and checks them and the decoded content against the
    manifest.
    """
    from cellbench.store.location import is_url

    if is_url(location):
        fn: Callable[..., list[str]] = _remote_array_problems
        shared: tuple[Any, ...] = (location,)
    else:
        fn, shared = _local_array_problems, (location, manifest)
    results = map_ordered(
        fn,
        [(p,) for p in array_paths],
        scheduler=scheduler,
        progress=progress,
        desc=f"verify ({scheduler})",
        unit="array",
        shared=shared,
    )
    return [line for lines in results for line in lines]


# ---------------------------------------------------------------------- ingest
def _read_item(fmt: Any, src: str, options: dict[str, Any], item: str) -> tuple[Any, list[str]]:
    """One Dask task: read and check one item of a source with its format's ``read_item``."""
    from pathlib import Path

    return fmt.read_item(Path(src), item, **options)


def read_items(
    fmt: Any,
    src: Any,
    options: dict[str, Any],
    items: Sequence[str],
    *,
    scheduler: str,
    window: int | None = None,
) -> Iterator[tuple[Any, list[str]]]:
    """``(sample or None, problems)`` of each item of ``src``, in order, one Dask task each.

    Args:
        fmt: The :class:`~cellbench.formats.registry.Format` (with ``read_item``); sent to the
            workers, which import its module.
        src: The source (a path every worker can read).
        options: The reader's options.
        items: Items from the format's ``items`` listing.
        scheduler: See :func:`map_ordered`.
        window: Items read ahead of the consumer (see :func:`imap_ordered`).
    """
    yield from imap_ordered(
        _read_item,
        [(item,) for item in items],
        scheduler=scheduler,
        shared=(fmt, str(src), dict(options)),
        window=window,
    )


#: The card of a one-sample part store (never closed, so never seen: the store's own card is
#: written by the writer that adopts the parts).
_PART_CARD = {"id": "part", "version": "1"}


def _ingest_item(
    fmt: Any,
    src: str,
    options: dict[str, Any],
    parts: str,
    class_names: dict[str, list[str]] | None,
    store_format: str,
    index: int,
    item: str,
) -> tuple[dict[str, Any] | None, list[str]]:
    """One Dask task: read and check one item, then write it as a part of the store."""
    from pathlib import Path

    from cellbench.errors import ValidationError
    from cellbench.store.format import FORMATS
    from cellbench.store.zarr_store import write_part

    sample, problems = fmt.read_item(Path(src), item, **options)
    if problems or sample is None:
        return None, list(problems)
    try:
        part = Path(parts) / f"{index:08d}"
        store_fmt = FORMATS[store_format]
        return write_part(part, sample, _PART_CARD, class_names, fmt=store_fmt), []
    except ValidationError as err:
        return None, list(err.problems)


def ingest_items(
    fmt: Any,
    src: Any,
    options: dict[str, Any],
    items: Sequence[str],
    parts: Any,
    *,
    scheduler: str,
    window: int | None = None,
    class_names: Mapping[str, list[str]] | None = None,
    store_format: str = "2",
) -> Iterator[tuple[dict[str, Any] | None, list[str]]]:
    """Read each item of ``src`` and write it as a one-sample part, one Dask task per item.

    Yields ``(part record or None, problems)`` per item, in order; part ``k`` is the folder
    ``parts/<k:08d>`` (see :func:`cellbench.store.zarr_store.write_part`), which the caller
    adopts into the store it builds. ``parts`` must be on a file system every worker writes to
    and on the same file system as the store (adopting renames folders). ``class_names`` are
    the store's class tables (each part checks its sample's label against them);
    ``store_format`` the store format version the parts are written in (``"4"``: sharded).
    """
    yield from imap_ordered(
        _ingest_item,
        [(k, item) for k, item in enumerate(items)],
        scheduler=scheduler,
        shared=(fmt, str(src), dict(options), str(parts), dict(class_names or {}), store_format),
        window=window,
        batch=None,  # the results are part records (small): batches of items per task
    )
