"""Convert between on-disk formats and the canonical store, never leaving half a result.

:func:`convert` reads a source with one registered format and writes it with another, or into a
canonical cellbench store (``zarr``) or Hugging Face Parquet shards (``hf``, through a store
built on the way). :func:`export_dataset` writes a pulled or imported dataset in a format.
Both write into a scratch folder beside the destination and rename it into place at the end,
so an error or Ctrl-C leaves nothing at the destination.

Format options (``--option NAME=VALUE`` on the command line) go to the reader and/or the writer
whose function takes a keyword of that name; an option neither takes is refused.

With a ``scheduler`` (``--scheduler``), a source whose format has the per-item hooks
(``Format.items`` / ``read_item``) is read as one Dask task per image or sequence. Into a store
(``zarr``, ``hf``) each task also writes its sample as a one-sample part in the scratch folder
(:func:`cellbench.store.zarr_store.write_part`: chunks compressed and hashed on the worker) and
this process adopts the parts in the source's order (:meth:`StoreWriter.adopt`) and writes the
table and manifest; into another format the samples come back in order
(:func:`cellbench.parallel.read_items`) to that format's writer. Either way at most a window of
items is in flight, the result is the sequential one (same store digest, same files) whatever
the scheduler, and problems are listed all at once exactly as the sequential reader lists them.
A format without the hooks is read sequentially.

Time-lapse formats (``ctc``, ``geff``) hold sequences; a 2D or 3D still image (axes ``cyx`` /
``czyx``) written to them becomes a one-frame sequence whose track table has one track per
object (``id, 0, 0, 0``), the way Cell Tracking Challenge segmentation-only data look.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import CellbenchError, StoreError, ValidationError
from cellbench.formats.registry import Format, get_format
from cellbench.store.location import is_remote
from cellbench.store.sample import Sample

#: Sample metadata a reader sets to the number of objects that overlapped another in the source
#: (and were resolved into one label image); :func:`convert` sums it for its summary line.
OVERLAP_KEY = "overlapping_objects"
#: Targets that are not registered formats.
STORE_TARGETS = ("zarr", "hf")
#: Formats whose samples carry a time axis.
_SEQUENCE_FORMATS = ("ctc", "geff")


def _accepts(func: Callable[..., Any] | None, name: str) -> bool:
    if func is None:
        return False
    params = inspect.signature(func).parameters
    return name in params and params[name].kind == inspect.Parameter.KEYWORD_ONLY


def split_options(
    options: Mapping[str, str], reader: Format | None, writer: Format | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Route ``NAME=VALUE`` options to the reader and the writer that take them.

    Raises:
        ValidationError: Options neither takes (each listed with the known names).
    """
    read_opts, write_opts, problems = {}, {}, []
    for name, value in options.items():
        r = reader is not None and _accepts(reader.read, name)
        w = writer is not None and _accepts(writer.write, name)
        if r:
            read_opts[name] = value
        if w:
            write_opts[name] = value
        if not (r or w):
            known = sorted(
                {*(reader.options if reader else {}), *(writer.options if writer else {})}
            )
            problems.append(
                f"option {name!r} is not one of the formats' options ({', '.join(known) or 'none'})"
            )
    if problems:
        raise ValidationError(problems, context="--option")
    return read_opts, write_opts


def parse_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` to a dict.

    Raises:
        ValidationError: Pairs without ``=`` (all listed).
    """
    out, bad = {}, []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            bad.append(f"{pair!r}: expected NAME=VALUE")
        else:
            out[name.strip()] = value
    if bad:
        raise ValidationError(bad, context="--option")
    return out


def as_sequence(sample: Sample) -> Sample:
    """A still image as a one-frame sequence (time-lapse formats); sequences unchanged."""
    if "t" in sample.axes or sample.instances is None:
        return sample
    ids = np.unique(sample.instances)
    ids = ids[ids > 0].astype(np.int64)
    tracks = np.stack([ids, np.zeros_like(ids), np.zeros_like(ids), np.zeros_like(ids)], 1)
    return Sample(
        id=sample.id,
        image=sample.image[None],
        axes="t" + sample.axes,
        channel_names=list(sample.channel_names),
        split=sample.split,
        pixel_size=dict(sample.pixel_size),
        metadata=dict(sample.metadata),
        instances=sample.instances[None],
        tracks=tracks.reshape(-1, 4),
    )


def _counted(
    samples: Iterable[Sample],
    progress: bool,
    desc: str,
    total: int | None,
    tally: dict[str, int] | None = None,
) -> Iterator:
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="sample", disable=None if progress else True) as bar:
        for sample in samples:
            if tally is not None:
                tally["samples"] = tally.get("samples", 0) + 1
                n = int(sample.metadata.get(OVERLAP_KEY, 0) or 0)
                if n:
                    tally["overlapping_samples"] = tally.get("overlapping_samples", 0) + 1
                    tally["overlapping_objects"] = tally.get("overlapping_objects", 0) + n
            yield sample
            bar.update(1)


def overlap_note(tally: dict[str, int]) -> str | None:
    """One line summarising the overlaps a reader resolved (None when there were none)."""
    if not tally.get("overlapping_samples"):
        return None
    return (
        f"{tally['overlapping_samples']} of {tally['samples']} images had overlapping objects "
        f"({tally['overlapping_objects']} objects), resolved into one label image each as the "
        f"reader's overlaps option says (per image: metadata {OVERLAP_KEY})"
    )


def _card(dest: Path, tasks: Iterable[str], title: str) -> dict[str, Any]:
    import re

    ident = re.sub(r"[^a-z0-9-]+", "-", dest.name.lower().removesuffix(".zarr")).strip("-")
    return {
        "id": ident or "converted",
        "version": "1.0",
        "title": title,
        "tasks": sorted(set(tasks)),
        "license": "unknown",
        "description": title,
    }


def _infer_tasks(sample: Sample) -> list[str]:
    """Tasks a sample's targets can serve (what the written store's card lists)."""
    have = {
        f
        for f in ("instances", "semantic", "label", "target", "tracks")
        if getattr(sample, f) is not None
    }
    return _tasks_serving(have, "t" in sample.axes)


def _tasks_serving(fields: Iterable[str], timed: bool) -> list[str]:
    from cellbench.tasks import all_tasks

    have = {*fields, "image"}
    found = []
    for task in all_tasks():
        need = {f.split("|")[0] for f in task.ground_truth_fields}
        if need <= have and timed == ("tracks" in need):
            found.append(task.name)
    return found


def write_target(
    samples: Iterable[Sample],
    to: str,
    dest: str | Path,
    *,
    options: Mapping[str, str] | None = None,
    tasks: Iterable[str] = (),
    title: str = "",
    progress: bool = False,
    total: int | None = None,
    tally: dict[str, int] | None = None,
    class_names: Mapping[str, list[str]] | None = None,
    shard: bool = False,
) -> Path:
    """Write ``samples`` to ``dest`` as ``to`` (a format name, ``zarr`` or ``hf``), atomically.

    Args:
        samples: The samples, streamed.
        to: Target format.
        dest: Destination (must not exist).
        options: Writer options.
        tasks: Tasks of the store card (``zarr``/``hf``; default: inferred from the samples).
        title: Store title (``zarr``/``hf``).
        progress: Show a progress bar.
        total: Number of samples, if known (for the bar).
        tally: Filled with counts of samples and resolved overlaps (see :func:`overlap_note`).
        class_names: Class tables of the store (``zarr``/``hf``), e.g. ``{"label": [...]}``.
        shard: Write the store (``zarr``) in store format 4, its arrays in Zarr v3 shards.

    Returns:
        ``dest``.

    Raises:
        CellbenchError: ``dest`` exists; ValidationError for bad samples.
    """
    from cellbench.store.scratch import make_scratch

    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise CellbenchError(f"{dest}: already exists; choose a new destination")
    fmt = None if to in STORE_TARGETS else get_format(to)
    if fmt is not None and fmt.write is None:
        raise CellbenchError(f"format {to!r} can be read but not written")
    if shard and to != "zarr":
        raise CellbenchError(f"sharding applies to a store (--to zarr), not to {to!r}")
    stream = _counted(samples, progress, f"convert -> {to}", total, tally)
    if to in _SEQUENCE_FORMATS:
        stream = (as_sequence(s) for s in stream)
    scratch = make_scratch(dest.parent, prefix=f".{dest.name}.")
    try:
        out = scratch / "out"
        if fmt is not None:
            fmt.write(stream, out, **dict(options or {}))
        else:
            _write_store(
                stream, to, out, scratch, tasks, title or dest.name, progress, class_names, shard
            )
        out.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _write_store(
    stream: Iterator[Sample],
    to: str,
    out: Path,
    scratch: Path,
    tasks: Iterable[str],
    title: str,
    progress: bool,
    class_names: Mapping[str, list[str]] | None = None,
    shard: bool = False,
) -> None:
    from cellbench.store.format import CURRENT_FORMAT, FORMATS
    from cellbench.store.zarr_store import build_store

    first = next(stream, None)
    if first is None:
        raise ValidationError(["no samples to write"])
    task_list = list(tasks) or _infer_tasks(first)

    def chained() -> Iterator[Sample]:
        yield first
        yield from stream

    store_path = out if to == "zarr" else scratch / "store.zarr"
    store = build_store(
        chained(),
        store_path,
        _card(store_path, task_list, title),
        class_names=class_names,
        work_dir=scratch,
        fmt=FORMATS["4"] if shard else CURRENT_FORMAT,
    )
    if to == "hf":
        from cellbench.store.hf.export import write_parquet

        write_parquet(store, out, progress=progress)


def convert(
    src: str | Path,
    from_format: str,
    to: str,
    dest: str | Path,
    *,
    options: Mapping[str, str] | None = None,
    progress: bool = False,
    tally: dict[str, int] | None = None,
    scheduler: str | None = None,
    shard: bool = False,
) -> Path | str:
    """Read ``src`` as ``from_format`` and write it to ``dest`` as ``to``, atomically.

    ``tally``, when given, is filled with counts for :func:`overlap_note`.

    Args:
        src: The source.
        from_format: Its format.
        to: Target format, ``zarr`` or ``hf``.
        dest: Destination (must not exist). A store (``zarr``) may go to an fsspec URL
            (``s3://bucket/name.zarr``): it is built in the cache's scratch space, verified,
            and uploaded with its root ``zarr.json`` last, so an interrupted conversion or
            upload leaves nothing there that opens as a store.
        options: Reader and writer options.
        progress: Show a progress bar.
        tally: See above.
        scheduler: Read one item per Dask task on this scheduler (see
            :func:`cellbench.parallel.resolve_scheduler`); ``None`` reads in this process. A
            format without per-item hooks is read sequentially either way.
        shard: Into a store (``zarr``): write store format 4 (arrays in Zarr v3 shards).

    Raises:
        ValidationError: Unknown options, or every problem of the source.
    """
    reader = get_format(from_format)
    if shard and to != "zarr":
        raise CellbenchError(f"sharding applies to a store (--to zarr), not to {to!r}")
    if is_remote(dest):
        return _convert_to_url(
            src, from_format, to, dest, options=options, progress=progress, tally=tally,
            scheduler=scheduler, shard=shard,
        )  # fmt: skip
    if reader.read is None:
        raise CellbenchError(f"format {from_format!r} can be written but not read")
    writer = None if to in STORE_TARGETS else get_format(to)
    read_opts, write_opts = split_options(dict(options or {}), reader, writer)
    total: int | None = None
    title = f"converted from {from_format}: {Path(src).name}"
    tasks = reader.tasks if to in STORE_TARGETS and len(reader.tasks) == 1 else ()
    tables = None
    if reader.class_names is not None and to in STORE_TARGETS:  # e.g. image-folder classes
        tables = reader.class_names(Path(src), **read_opts)
    if scheduler is not None and reader.per_item and to in STORE_TARGETS:
        return _store_per_item(
            reader, src, read_opts, to, dest, title=title, tasks=tasks, progress=progress,
            tally=tally, scheduler=scheduler, class_names=tables, shard=shard,
        )  # fmt: skip
    if scheduler is not None and reader.per_item:
        total, samples = per_item_samples(reader, src, read_opts, scheduler=scheduler)
    else:
        samples = reader.read(Path(src), **read_opts)
    return write_target(
        samples,
        to,
        dest,
        options=write_opts,
        tasks=tasks,
        title=title,
        progress=progress,
        total=total,
        tally=tally,
        class_names=tables,
        shard=shard,
    )


def _convert_to_url(
    src: str | Path,
    from_format: str,
    to: str,
    url: str,
    **kwargs: Any,
) -> str:
    """:func:`convert` into a store at ``url``: built locally, verified, then uploaded."""
    from cellbench.store.cache import tmp_dir
    from cellbench.store.integrity import verify_store
    from cellbench.store.remote import ROOT_META, filesystem, upload_store
    from cellbench.store.scratch import make_scratch

    url = url.rstrip("/")
    if to != "zarr":
        raise CellbenchError(
            f"{url}: only a store (--to zarr) is written to a URL; convert to a local folder "
            f"for {to!r}"
        )
    try:
        fs, root = filesystem(url)
        occupied = fs.exists(f"{root}/{ROOT_META}")  # (before the work; the upload checks again)
    except Exception as err:  # network and backend errors have no common base class
        raise StoreError(f"{url}: cannot be reached ({type(err).__name__}: {err})") from None
    if occupied:
        raise StoreError(f"{url}: a store is already there; choose a new destination")
    work = make_scratch(tmp_dir(), prefix="convert-")
    try:
        local = Path(convert(src, from_format, to, work / "store.zarr", **kwargs))
        problems = verify_store(local, progress=bool(kwargs.get("progress")))
        if problems:
            raise StoreError(
                f"{url}: the converted store does not verify ({len(problems)} problem(s)), "
                "nothing uploaded: " + "; ".join(problems[:3])
            )
        return upload_store(local, url, progress=bool(kwargs.get("progress")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _store_per_item(
    reader: Format,
    src: str | Path,
    options: Mapping[str, Any],
    to: str,
    dest: str | Path,
    *,
    title: str,
    tasks: Iterable[str],
    progress: bool,
    tally: dict[str, int] | None,
    scheduler: str,
    window: int | None = None,
    class_names: Mapping[str, list[str]] | None = None,
    shard: bool = False,
) -> Path:
    """:func:`convert` to a store with one Dask task per item reading *and* writing it.

    Each task writes its sample as a one-sample part in the scratch folder (chunks compressed
    and hashed on the worker); this process adopts the parts in the source's order into one
    :class:`~cellbench.store.zarr_store.StoreWriter`, which then writes the table and the
    manifest, so the store and its digest are the sequential ones. Problems are collected over
    every item and raised together exactly as the sequential reader raises them; nothing is
    left at ``dest``.
    """
    from tqdm.auto import tqdm

    from cellbench.parallel import ingest_items
    from cellbench.store.format import CURRENT_FORMAT, FORMATS
    from cellbench.store.scratch import make_scratch
    from cellbench.store.zarr_store import StoreWriter

    store_fmt = FORMATS["4"] if shard else CURRENT_FORMAT
    fmt_version = store_fmt.version
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise CellbenchError(f"{dest}: already exists; choose a new destination")
    assert reader.items is not None
    listing = reader.items(Path(src), **options)
    scratch = make_scratch(dest.parent, prefix=f".{dest.name}.")
    try:
        out = scratch / "out"
        store_path = out if to == "zarr" else scratch / "store.zarr"
        parts = scratch / "parts"
        parts.mkdir()
        problems = list(listing.problems)
        writer: StoreWriter | None = None
        results = ingest_items(
            reader,
            Path(src).absolute(),
            dict(options),
            listing.items,
            parts,
            scheduler=scheduler,
            window=window,
            class_names=class_names,
            store_format=fmt_version,
        )
        # closed (tasks finished or cancelled) before the scratch folder is removed
        with (
            contextlib.closing(results),
            tqdm(
                total=len(listing.items),
                desc=f"convert -> {to} ({scheduler})",
                unit="sample",
                disable=None if progress else True,
            ) as bar,
        ):
            for k, (part, more) in enumerate(results):
                bar.update(1)
                problems += more
                if problems or part is None:
                    continue
                if writer is None:
                    timed = any("t" in a for a in part["axes"])
                    card = _card(
                        store_path, list(tasks) or _tasks_serving(part["fields"], timed), title
                    )
                    writer = StoreWriter(
                        store_path, card, class_names, fmt=store_fmt, display_name=str(store_path)
                    )
                writer.adopt(parts / f"{k:08d}", part)
                shutil.rmtree(parts / f"{k:08d}", ignore_errors=True)
                if tally is not None:
                    tally["samples"] = tally.get("samples", 0) + 1
                    n = int(part["row"]["metadata"].get(OVERLAP_KEY, 0) or 0)
                    if n:
                        tally["overlapping_samples"] = tally.get("overlapping_samples", 0) + 1
                        tally["overlapping_objects"] = tally.get("overlapping_objects", 0) + n
        if problems:
            raise ValidationError(problems, context=listing.context)
        if writer is None:
            raise ValidationError(["no samples to write"])
        writer.close()
        if to == "hf":
            from cellbench.store.hf.export import write_parquet
            from cellbench.store.zarr_store import DatasetStore

            write_parquet(DatasetStore.open(store_path), out, progress=progress)
        out.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def per_item_samples(
    fmt: Format,
    src: str | Path,
    options: Mapping[str, Any],
    *,
    scheduler: str,
    window: int | None = None,
) -> tuple[int, Iterator[Sample]]:
    """The samples of ``src`` read one Dask task per item, with ``read``'s semantics.

    The listing runs here, at once (so what stops reading is raised before anything is
    written); the returned stream yields samples in the source's order. Once a problem is found
    nothing more is yielded, every item is still read and checked, and all problems (the
    listing's, then each item's in order) are raised together at the end.

    Returns:
        The number of items, and the stream.

    Raises:
        ValidationError: What stops the listing (at once) or every problem (from the stream).
    """
    from cellbench.parallel import read_items

    assert fmt.items is not None
    listing = fmt.items(Path(src), **options)

    def stream() -> Iterator[Sample]:
        problems = list(listing.problems)
        results = read_items(
            fmt,
            Path(src).absolute(),
            dict(options),
            listing.items,
            scheduler=scheduler,
            window=window,
        )
        for sample, more in results:
            problems += more
            if not problems and sample is not None:
                yield sample
        if problems:
            raise ValidationError(problems, context=listing.context)

    return len(listing.items), stream()


def export_dataset(
    ref: str,
    to: str,
    dest: str | Path,
    *,
    split: str | None = None,
    options: Mapping[str, str] | None = None,
    progress: bool = False,
    store: Any = None,
) -> Path:
    """Write a pulled or imported dataset (or one split) in format ``to``, atomically.

    Args:
        ref: ``id[@version]`` of a pulled or imported dataset (ignored when ``store`` given).
        to: A registered format name.
        dest: Destination (must not exist).
        split: Only this split (default all samples).
        options: Writer options.
        progress: Show a progress bar.
        store: An opened :class:`~cellbench.store.zarr_store.DatasetStore` instead of ``ref``.
    """
    from cellbench.registry import load

    store = store if store is not None else load(ref)
    writer = get_format(to)
    _, write_opts = split_options(dict(options or {}), None, writer)
    if split is not None and split not in store.splits:
        raise ValidationError(
            [f"split {split!r} not in {store.ref} (has {', '.join(store.splits) or 'none'})"]
        )
    write_args: dict[str, Any] = dict(write_opts)
    labels = store.class_names("label")
    if labels and _accepts(writer.write, "class_names") and "class_names" not in write_args:
        write_args["class_names"] = labels  # the store's class table, for writers that take one
    ids = store.sample_ids(split)
    samples = (store.sample(sid) for sid in ids)
    return write_target(samples, to, dest, options=write_args, progress=progress, total=len(ids))


def validate_path(
    path: str | Path, fmt: str, options: Mapping[str, str] | None = None
) -> list[str]:
    """Every problem of ``path`` read as ``fmt`` (empty when valid).

    Raises:
        CellbenchError: The format has no validator, or an option it does not take.
    """
    f = get_format(fmt)
    if f.validate is None:
        raise CellbenchError(f"format {fmt!r} has no validator")
    opts = dict(options or {})
    unknown = [k for k in opts if k not in f.options]
    if unknown:
        raise ValidationError(
            [f"option {k!r} is not an option of {fmt} ({', '.join(f.options)})" for k in unknown],
            context="--option",
        )
    return f.validate(Path(path), **opts)
