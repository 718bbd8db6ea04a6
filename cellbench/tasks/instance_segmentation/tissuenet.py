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
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.registry import Format
from cellbench.store.sample import SPLITS, Sample

TARGETS = {"whole-cell": 0, "nuclear": 1}
CHANNELS = ["nuclear", "membrane"]
_FILE_RE = re.compile(r"^(?P<name>.+)_(?P<split>train|val|test)\.npz$")
_META = {"tissue_list": "tissue", "platform_list": "platform"}


class _Member:
    """One ``.npy`` member of an npz, read row by row (no whole-array load)."""

    def __init__(self, fh: IO[bytes], where: str) -> None:
        self.fh = fh
        self.where = where
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

    def next_row(self) -> np.ndarray:
        data = self.fh.read(self.row)
        if len(data) != self.row:
            raise ValueError(f"{self.where}: truncated (a row needs {self.row} bytes)")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape[1:])


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
            arrays[key] = _Member(stack.enter_context(zf.open(f"{key}.npy")), f"{name}:{key}")
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
    if problems:
        return None, problems
    meta, problems = _metadata(zf, x.shape[0], name)
    if problems:
        return None, problems
    return (x, y, meta), []


def _check(target: str, split: str | None) -> list[str]:
    out = []
    if target not in TARGETS:
        out.append(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    if split is not None and split not in SPLITS:
        out.append(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    return out


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
        ValidationError: Every problem of the options and files' headers at once, before any
            sample; then every bad row (negative labels of the chosen target, a truncated
            member) of every file together, after the last row (once a problem is found
            nothing more is yielded).

    There are no per-item hooks (``convert --scheduler``): a row of a compressed npz member
    can only be reached by decompressing every row before it, so one task per image would
    decompress the file once per image; the file is streamed once instead.
    """
    problems = _check(target, split)
    files, more = _files(Path(src))
    problems += more
    splits = {}
    for f in files:
        splits[f], more = _split_of(f, split)
        problems += more
    for f in files:  # check every file's header before yielding anything
        with ExitStack() as stack:
            problems += _open(f, stack)[1]
    if problems:
        raise ValidationError(problems, context=str(src))
    channel = TARGETS[target]
    for f in files:  # once a problem is found nothing more is yielded; every row is checked
        with ExitStack() as stack:
            opened, _ = _open(f, stack)
            x, y, meta = opened
            width = max(5, len(str(x.shape[0] - 1)))
            for i in range(x.shape[0]):
                try:
                    image = x.next_row()
                    labels = y.next_row()
                except ValueError as err:
                    problems.append(str(err))
                    break  # a truncated member: no later row can be read
                lab = labels[..., channel]
                if lab.size and int(lab.min()) < 0:
                    problems.append(
                        f"{f.name}: y[{i}] has negative labels (expected 0 = background, "
                        "1..n objects)"
                    )
                if problems:
                    continue
                hi = int(lab.max(initial=0))
                lab_dtype = np.uint16 if hi <= np.iinfo(np.uint16).max else np.uint32
                metadata: dict[str, Any] = {"source_file": f.name, "index": i}
                for key, arr in meta.items():
                    metadata[key] = arr[i].item()
                yield Sample(
                    id=f"{splits[f]}-{i:0{width}d}",
                    image=np.ascontiguousarray(np.moveaxis(image, -1, 0)),
                    channel_names=CHANNELS[: image.shape[-1]]
                    if image.shape[-1] <= 2
                    else [f"c{k}" for k in range(image.shape[-1])],
                    split=splits[f],
                    metadata=metadata,
                    instances=lab.astype(lab_dtype),
                )
    if problems:
        raise ValidationError(problems, context=str(src))


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
            x, y, _meta = opened
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
    options={
        "target": "read: which labels become the instances, whole-cell (y[..., 0], default) "
        "or nuclear (y[..., 1])",
        "split": "read: the split of a single .npz whose name does not end in _train/_val/_test",
    },
)
