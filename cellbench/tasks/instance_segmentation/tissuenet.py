"""TissueNet / DeepCell ``.npz`` files (format ``tissuenet``), read only.

TissueNet 1.1 (Greenwald et al. 2022) is distributed as three files whose names give the
official split: ``tissuenet_v1.1_train.npz``, ``tissuenet_v1.1_val.npz``,
``tissuenet_v1.1_test.npz``. Each holds

``X``   ``(n, y, x, 2)`` float32 images, channels last: 0 nuclear, 1 membrane/cytoplasm
``y``   ``(n, y, x, 2)`` integer labels, channels last: 0 whole-cell, 1 nuclear
``tissue_list``, ``platform_list``  optional ``(n,)`` string arrays (tissue, imaging platform)

One sample per image: image ``(2, y, x)``, instances from the ``target`` option (``whole-cell``
or ``nuclear``), split from the file name, metadata ``tissue`` and ``platform`` when those arrays
load without pickle (string arrays saved as NumPy unicode do; object arrays are skipped and
never unpickled).

Memory: ``.npz`` members cannot be memory-mapped, and ``np.load(...)["X"]`` would decompress a
whole split (the train split's X alone is about 5.4 GB). The reader therefore parses each
member's ``.npy`` header and reads the C-ordered rows one sample at a time from the zip stream,
so it holds one image and one label pair at a time whatever the file size (compressed members
are decompressed as a stream; Fortran-ordered arrays cannot be streamed and are refused).

Per item (``Format.items`` / ``read_item``, used by ``convert --scheduler``): one item per row,
``<file>:<index>``. A row of a stored member (``np.savez``) is read straight from the file at its
offset (the npz's equivalent of ``np.load(mmap_mode="r")``, which npz members do not support),
so one task reads one image. A row of a compressed member (``np.savez_compressed``) can only be
reached by decompressing the rows before it: each process keeps its open stream of the member
it last read, so rows read in order continue it (one pass over the file), while a row out of
order starts again; ``read`` streams such files once.
"""

from __future__ import annotations

import re
import struct
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import memory_problem
from cellbench.formats.registry import Format, ItemList
from cellbench.store.sample import SPLITS, Sample

TARGETS = {"whole-cell": 0, "nuclear": 1}
CHANNELS = ["nuclear", "membrane"]
_FILE_RE = re.compile(r"^(?P<name>.+)_(?P<split>train|val|test)\.npz$")
_META = {"tissue_list": "tissue", "platform_list": "platform"}


class _Member:
    """One ``.npy`` member of an npz, read row by row (no whole-array load)."""

    def __init__(self, fh: IO[bytes], where: str, info: zipfile.ZipInfo) -> None:
        self.fh = fh
        self.where = where
        self.info = info
        fmt = np.lib.format
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:  # 3.0 (utf-8 field names) has no public header reader
            shape, fortran, dtype = fmt._read_array_header(fh, version)
        if np.dtype(dtype).hasobject:
            raise ValueError("holds Python objects (never unpickled)")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.fortran = bool(fortran)
        self.row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.header = fh.tell()  # bytes of .npy header before the first row

    @property
    def complete_rows(self) -> int:
        """How many whole rows the member holds (fewer than ``shape[0]`` when truncated)."""
        n = self.shape[0] if self.shape else 0
        if self.row == 0:
            return n
        return min(n, max(0, self.info.file_size - self.header) // self.row)

    def truncated(self) -> str:
        return f"{self.where}: truncated (a row needs {self.row} bytes)"

    def next_row(self) -> np.ndarray:
        data = self.fh.read(self.row)
        if len(data) != self.row:
            raise ValueError(self.truncated())
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])

    def row_at(self, path: Path, zf: zipfile.ZipFile, i: int) -> np.ndarray:
        """Row ``i`` alone: read at its offset in the file when the member is stored."""
        start = self.header + i * self.row
        if self.info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                fh.seek(_data_start(fh, self.info) + start)
                data = fh.read(self.row)
        else:  # compressed: only reachable by decompressing what comes before it
            data = _compressed_read(path, self.info, start, self.row, i == self.shape[0] - 1)
        if len(data) != self.row:
            raise ValueError(self.truncated())
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])


#: Open streams of compressed members, (path, mtime, member) -> (zip, stream): the next row of
#: a member read in order continues its stream instead of decompressing from the start. An
#: entry is popped while in use (threads never share a stream) and closed after the member's
#: last row or when another file's row is read.
_STREAMS: dict[tuple[str, int, str], tuple[zipfile.ZipFile, IO[bytes]]] = {}


def _close(entry: tuple[zipfile.ZipFile, IO[bytes]] | None) -> None:
    if entry is not None:
        entry[1].close()
        entry[0].close()


def _compressed_read(path: Path, info: zipfile.ZipInfo, start: int, size: int, last: bool) -> bytes:
    key = (str(path), path.stat().st_mtime_ns, info.filename)
    for other in list(_STREAMS):
        if other[:2] != key[:2]:
            _close(_STREAMS.pop(other, None))
    entry = _STREAMS.pop(key, None)
    if entry is not None and entry[1].tell() > start:  # behind: start again
        _close(entry)
        entry = None
    if entry is None:
        zf = zipfile.ZipFile(path)
        entry = (zf, zf.open(info.filename))
    entry[1].seek(start)  # forward from where the last row ended: only the gap is decompressed
    data = entry[1].read(size)
    if last or len(data) != size:
        _close(entry)
    else:
        _close(_STREAMS.pop(key, None))  # another thread's, if any
        _STREAMS[key] = entry
    return data


def _data_start(fh: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a stored member's bytes begin in the archive (after its local file header)."""
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise ValueError(f"{info.filename}: no local file header at {info.header_offset}")
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _split_of(path: Path, split: str | None) -> tuple[str | None, list[str]]:
    m = _FILE_RE.match(path.name)
    if m is not None:
        return m.group("split"), []
    if split in SPLITS:
        return split, []
    return None, [
        f"{path.name}: the split is not in the name (expected <name>_train.npz, _val.npz or "
        "_test.npz) and no split option was given"
    ]


def _files(src: Path) -> tuple[list[Path], list[str]]:
    if src.is_file():
        return [src], []
    if not src.is_dir():
        return [], [f"{src}: no such file or folder (expected tissuenet_v1.1_train.npz ...)"]
    files = sorted(p for p in src.iterdir() if _FILE_RE.match(p.name))
    order = {s: i for i, s in enumerate(SPLITS)}
    files.sort(key=lambda p: order[_FILE_RE.match(p.name).group("split")])  # type: ignore[union-attr]
    if not files:
        return [], [
            f"{src}: no <name>_train.npz, <name>_val.npz or <name>_test.npz file (expected "
            "tissuenet_v1.1_train.npz, tissuenet_v1.1_val.npz, tissuenet_v1.1_test.npz)"
        ]
    return files, []


def _metadata(zf: zipfile.ZipFile, n: int, name: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """The metadata string arrays that load without pickle; problems for wrong lengths."""
    out: dict[str, np.ndarray] = {}
    problems: list[str] = []
    members = set(zf.namelist())
    for key, field in _META.items():
        if f"{key}.npy" not in members:
            continue
        with zf.open(f"{key}.npy") as fh:
            try:
                arr = np.lib.format.read_array(fh, allow_pickle=False)
            except ValueError:
                continue  # an object array: never unpickled, the field is left out
        arr = arr.reshape(-1)
        if arr.shape[0] != n:
            problems.append(f"{name}: {key} has {arr.shape[0]} entries, expected {n} (one per X)")
            continue
        if arr.dtype.kind not in "USiuf":
            continue
        out[field] = arr
    return out, problems


def _open(path: Path, stack: ExitStack) -> tuple[Any, list[str]]:
    """``(zipfile, X member, y member)`` or problems, with every shape/dtype check."""
    name = path.name
    try:
        zf = stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as err:
        return None, [f"{name}: not a readable .npz (zip) file ({err})"]
    members = set(zf.namelist())
    missing = [k for k in ("X", "y") if f"{k}.npy" not in members]
    if missing:
        return None, [
            f"{name}: no array {', '.join(missing)} (expected X (n, y, x, c) images and y "
            f"(n, y, x, 2) labels; found {', '.join(sorted(m[:-4] for m in members)) or 'none'})"
        ]
    arrays = {}
    problems = []
    for key in ("X", "y"):
        try:
            info = zf.getinfo(f"{key}.npy")
            arrays[key] = _Member(stack.enter_context(zf.open(info)), f"{name}:{key}", info)
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            problems.append(f"{name}: {key} is not a readable .npy array ({err})")
    if problems:
        return None, problems
    x, y = arrays["X"], arrays["y"]
    if len(x.shape) != 4:
        problems.append(f"{name}: X has shape {x.shape}, expected (n, y, x, channels)")
    if len(y.shape) != 4 or y.shape[-1] != 2:
        problems.append(
            f"{name}: y has shape {y.shape}, expected (n, y, x, 2) (whole-cell, nuclear)"
        )
    if x.dtype.kind not in "uif":
        problems.append(f"{name}: X dtype {x.dtype}, expected a numeric image")
    if y.dtype.kind not in "ui":
        problems.append(f"{name}: y dtype {y.dtype}, expected integer labels")
    if x.fortran or y.fortran:
        problems.append(f"{name}: Fortran-ordered arrays cannot be streamed; save C-ordered")
    if not problems and (x.shape[0] != y.shape[0] or x.shape[1:3] != y.shape[1:3]):
        problems.append(f"{name}: X is {x.shape} and y is {y.shape}; expected the same n, y and x")
    if not problems:  # one row of each is held at a time: a row that cannot fit is refused
        row = " x ".join(str(n) for n in x.shape[1:])
        problem = memory_problem(x.row + y.row, f"one image ({row}) and its labels")
        if problem:
            problems.append(f"{name}: {problem}")
    if problems:
        return None, problems
    meta, problems = _metadata(zf, x.shape[0], name)
    if problems:
        return None, problems
    return (zf, x, y, meta), []


def _check(target: str, split: str | None) -> list[str]:
    out = []
    if target not in TARGETS:
        out.append(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    if split is not None and split not in SPLITS:
        out.append(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    return out


def _row_sample(
    f: Path,
    split: str | None,
    i: int,
    n: int,
    image: np.ndarray,
    labels: np.ndarray,
    channel: int,
    meta: dict[str, np.ndarray],
) -> tuple[Sample | None, list[str]]:
    """Row ``i`` of file ``f`` as a sample, or the row's problem."""
    lab = labels[..., channel]
    if lab.size and int(lab.min()) < 0:
        return None, [
            f"{f.name}: y[{i}] has negative labels (expected 0 = background, 1..n objects)"
        ]
    hi = int(lab.max(initial=0))
    lab_dtype = np.uint16 if hi <= np.iinfo(np.uint16).max else np.uint32
    metadata: dict[str, Any] = {"source_file": f.name, "index": i}
    for key, arr in meta.items():
        metadata[key] = arr[i].item()
    width = max(5, len(str(n - 1)))
    return Sample(
        id=f"{split}-{i:0{width}d}",
        image=np.ascontiguousarray(np.moveaxis(image, -1, 0)),
        channel_names=CHANNELS[: image.shape[-1]]
        if image.shape[-1] <= 2
        else [f"c{k}" for k in range(image.shape[-1])],
        split=split,
        metadata=metadata,
        instances=lab.astype(lab_dtype),
    ), []


def _listing(
    src: str | Path, target: str, split: str | None
) -> tuple[list[Path], dict[Path, str | None], list[str]]:
    """The readable files, their splits, and every option and header problem.

    Raises:
        ValidationError: A bad option (with every header problem too): no row can be read.
    """
    options = _check(target, split)
    files, problems = _files(Path(src))
    splits: dict[Path, str | None] = {}
    good = []
    for f in files:
        splits[f], more = _split_of(f, split)
        problems += more
    for f in files:  # every file's header before any row
        with ExitStack() as stack:
            more = _open(f, stack)[1]
        problems += more
        if not more and splits[f] is not None:
            good.append(f)
    if options:
        raise ValidationError(options + problems, context=str(src))
    return good, splits, problems


def read_tissuenet(
    src: str | Path, *, target: str = "whole-cell", split: str | None = None
) -> Iterator[Sample]:
    """Stream TissueNet / DeepCell npz files as instance-segmentation samples.

    Args:
        src: A folder with ``<name>_{train,val,test}.npz`` files, or one ``.npz`` file.
        target: ``whole-cell`` (``y[..., 0]``) or ``nuclear`` (``y[..., 1]``).
        split: The split of a single file whose name does not say it.

    Yields:
        One sample per image, ids ``<split>-<index>`` (index zero-padded to 5 digits).

    Raises:
        ValidationError: Every problem at once, after the last row: the files' headers (a
            missing array, shapes, dtypes), then every bad row (negative labels of the chosen
            target, a truncated member) of every readable file. Nothing is yielded once a
            problem is found. A bad option raises at once with the header problems.
    """
    files, splits, problems = _listing(src, target, split)
    channel = TARGETS[target]
    for f in files:  # once a problem is found nothing more is yielded; every row is checked
        with ExitStack() as stack:
            opened, _ = _open(f, stack)
            _zf, x, y, meta = opened
            for i in range(x.shape[0]):
                try:
                    image = x.next_row()
                    labels = y.next_row()
                except ValueError as err:
                    problems.append(str(err))
                    break  # a truncated member: no later row can be read
                sample, more = _row_sample(
                    f, splits[f], i, x.shape[0], image, labels, channel, meta
                )
                problems += more
                if not problems and sample is not None:
                    yield sample
    if problems:
        raise ValidationError(problems, context=str(src))


def tissuenet_items(
    src: str | Path, *, target: str = "whole-cell", split: str | None = None
) -> ItemList:
    """One item per row, ``<file>:<index>``, in ``read``'s order (headers only are read)."""
    files, _splits, problems = _listing(src, target, split)
    items = []
    for f in files:
        with ExitStack() as stack:
            opened, _ = _open(f, stack)
            items += [f"{f.name}:{i}" for i in range(opened[1].shape[0])]
    return ItemList(items, problems, str(src))


def read_tissuenet_item(
    src: str | Path, item: str, *, target: str = "whole-cell", split: str | None = None
) -> tuple[Sample | None, list[str]]:
    """Row ``<file>:<index>`` alone, with the problems ``read`` reports for it.

    A truncated member is reported once, by the first row it cuts (as ``read`` does); later
    rows of that file give neither a sample nor a problem.
    """
    name, _, index = item.rpartition(":")
    src = Path(src)
    f = src if src.is_file() else src / name
    i = int(index)
    file_split, problems = _split_of(f, split)
    problems = _check(target, split) + problems
    with ExitStack() as stack:
        opened, more = _open(f, stack)
        problems += more
        if problems:
            return None, problems
        zf, x, y, meta = opened
        first_cut = min(x.complete_rows, y.complete_rows)
        if i > first_cut:
            return None, []
        if i == first_cut:  # the X row is read before the y row, as read() does
            return None, [x.truncated() if x.complete_rows == first_cut else y.truncated()]
        try:
            image = x.row_at(f, zf, i)
            labels = y.row_at(f, zf, i)
        except (ValueError, OSError, zipfile.BadZipFile) as err:
            return None, [f"{f.name}: row {i} is not readable ({err})"]
        return _row_sample(f, file_split, i, x.shape[0], image, labels, TARGETS[target], meta)


def tissuenet_problems(
    src: str | Path, *, target: str = "whole-cell", split: str | None = None, **_: Any
) -> list[str]:
    """Every problem of TissueNet npz files (headers, shapes, dtypes, each row's labels)."""
    problems = _check(target, split)
    files, more = _files(Path(src))
    problems += more
    for f in files:
        problems += _split_of(f, split)[1]
        with ExitStack() as stack:
            opened, more = _open(f, stack)
            problems += more
            if opened is None:
                continue
            _zf, x, y, _meta = opened
            for i in range(x.shape[0]):
                try:
                    x.next_row()
                    labels = y.next_row()
                except ValueError as err:
                    problems.append(str(err))
                    break
                if labels.size and int(labels.min()) < 0:
                    problems.append(
                        f"{f.name}: y[{i}] has negative labels (expected 0 = background, "
                        "1..n objects)"
                    )
    return problems


FORMAT = Format(
    name="tissuenet",
    description="TissueNet / DeepCell npz (X (n,y,x,c) images, y (n,y,x,2) whole-cell + nuclear "
    "labels; <name>_train/_val/_test.npz give the split)",
    tasks=("instance-segmentation",),
    read=read_tissuenet,
    validate=tissuenet_problems,
    items=tissuenet_items,
    read_item=read_tissuenet_item,
    options={
        "target": "read: which labels become the instances, whole-cell (y[..., 0], default) "
        "or nuclear (y[..., 1])",
        "split": "read: the split of a single .npz whose name does not end in _train/_val/_test",
    },
)
