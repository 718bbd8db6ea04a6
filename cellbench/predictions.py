"""Predictions: the one object models hand to scoring.

A :class:`PredictionSet` holds one :class:`Prediction` per sample of a dataset split, for one
task. It can live in memory (what training produces during validation), in the canonical
on-disk format (a Zarr v3 group written atomically by :class:`PredictionWriter`, what
``cellbench predict`` writes and what a submission carries), or be read from the formats people
already have: :func:`load_predictions` opens the canonical set and hands any other path to the
task, which reads its own formats (:attr:`cellbench.tasks.base.Task.prediction_formats`: a
classification CSV, folders of TIFF masks or label images, Cell Tracking Challenge result
folders, ...; ``cellbench score --help`` lists them).

Canonical layout (predictions format 1)::

    <name>.zarr/
      zarr.json        attributes["cellbench_predictions"]: format_version, task, dataset,
                       dataset_version, split, sample_ids, producer, complete, every_chunk
      table/label      int64 class per sample (classification), table order = sample_ids
      table/scores     float32 (n, k) class scores (classification, optional)
      samples/<id>/mask            class mask / instance label image / label movie (t,...)
      samples/<id>/object_ids      int64 ids of scored objects (instance, optional)
      samples/<id>/object_scores   float64 confidence per object id (instance, optional)
      samples/<id>/masks           (n, [z,]y,x) bool, overlapping instances (instance, optional)
      samples/<id>/mask_scores     float64 (n,) scores of ``masks`` (instance, optional)
      samples/<id>/tracks          int64 (n, 4) track_id, start, end, parent (tracking)
      samples/<id>/image           float32 (c,[z,]y,x) predicted target (augmented microscopy)
      samples/<id>/values/<name>   any further field a task defines (``Prediction.values``)

Every array is written with all its chunk files, background-only ones included, and the header
says so (``every_chunk: true``): Zarr reads an absent chunk file as the fill value, so without
that a chunk lost in a copy (an interrupted ``aws s3 sync``) would score as background without
a word. A set that says ``every_chunk`` and lacks a chunk file is refused, naming the files
(from the listing for a set at a URL: no request). Sets without the flag read as before.

Validation against the ground truth (shapes, dtypes, ids, NaN, label ranges, CTC rules) is
declared by each task in :mod:`cellbench.tasks`, which lists every problem at once.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench._version import __version__
from cellbench.errors import StoreError, ValidationError
from cellbench.store.sample import SAMPLE_ID_PATTERN

PREDICTIONS_FORMAT_VERSION = "1"
_ATTR = "cellbench_predictions"
#: Header flag: every chunk file of every array was written (none left out as empty).
_EVERY_CHUNK = "every_chunk"
#: Budgets checked before anything is decoded or allocated.
MAX_HEADER_BYTES = 64 << 20  # a canonical set's zarr.json
MAX_SAMPLES = 1_000_000  # sample ids in one prediction set
MAX_CLASSES = 100_000  # columns of table/scores
MAX_FILES = 1_000_000  # entries walked looking for symbolic links
MAX_CSV_BYTES = 1 << 30  # a predictions CSV
_ARRAY_FIELDS = (
    "mask",
    "object_ids",
    "object_scores",
    "masks",
    "mask_scores",
    "tracks",
    "image",
)


@dataclass
class Prediction:
    """One sample's prediction; which fields are set depends on the task.

    Attributes:
        sample_id: Id of the sample in the dataset.
        label: Predicted class index (classification).
        scores: Class scores or probabilities, shape ``(n_classes,)`` (classification; needed
            for top-k accuracy and ROC-AUC).
        mask: Class per pixel (semantic), instance ids (instance; 0 = background) or instance
            ids per frame ``(t, [z,] y, x)`` (tracking).
        object_ids: Ids of objects in ``mask`` that carry a confidence (instance).
        object_scores: Confidence of each id in ``object_ids`` (instance; used to rank
            detections for COCO AP). Score every object of ``mask`` or none (then all
            detections tie and COCO AP ranks them by id, which a report note points out).
        masks: Possibly overlapping instance masks ``(n, [z,] y, x)`` bool (instance; an
            alternative to ``mask`` that a label image cannot express).
        mask_scores: Confidence per mask in ``masks``.
        tracks: ``(n, 4)`` int64 ``track_id, start, end, parent`` (tracking; CTC
            ``res_track.txt`` semantics).
        image: Predicted target image ``(c, [z,] y, x)`` (augmented microscopy).
        values: Further fields defined by a task that the ones above do not cover (e.g. a
            count per sample), by name; scalars or arrays.
    """

    sample_id: str
    label: int | None = None
    scores: np.ndarray | None = None
    mask: np.ndarray | None = None
    object_ids: np.ndarray | None = None
    object_scores: np.ndarray | None = None
    masks: np.ndarray | None = None
    mask_scores: np.ndarray | None = None
    tracks: np.ndarray | None = None
    image: np.ndarray | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Array fields that are set (excluding classification ``scores``)."""
        return {n: getattr(self, n) for n in _ARRAY_FIELDS if getattr(self, n) is not None}

    def score_of(self) -> dict[int, float]:
        """Mapping object id -> confidence for instance predictions (empty when none given)."""
        if self.object_ids is None or self.object_scores is None:
            return {}
        return {
            int(i): float(s)
            for i, s in zip(
                np.asarray(self.object_ids).ravel(),
                np.asarray(self.object_scores).ravel(),
                strict=True,
            )
        }


@dataclass
class PredictionSet:
    """Predictions of one model for one task on one split of one dataset version.

    Attributes:
        task: Task name.
        dataset: Dataset id (empty when unknown, e.g. a bare folder of TIFFs).
        dataset_version: Dataset version (empty when unknown).
        split: Split predicted.
        producer: Free-form provenance of what made the predictions (model, run, command).
        source: Path (or URL) the predictions were read from, if any.
    """

    task: str
    dataset: str = ""
    dataset_version: str = ""
    split: str = ""
    producer: dict[str, Any] = field(default_factory=dict)
    source: Path | str | None = None
    _items: dict[str, Prediction] = field(default_factory=dict, repr=False)
    _loader: Any = field(default=None, repr=False)
    _ids: list[str] = field(default_factory=list, repr=False)
    _declare: Any = field(default=None, repr=False)
    _listed: Any = field(default=None, repr=False)  # a set at a URL: its ListedStore

    @classmethod
    def from_predictions(
        cls,
        task: str,
        predictions: Iterable[Prediction],
        dataset: str = "",
        dataset_version: str = "",
        split: str = "",
        producer: Mapping[str, Any] | None = None,
    ) -> PredictionSet:
        """Build an in-memory prediction set.

        Raises:
            ValidationError: If a sample id occurs twice.
        """
        items: dict[str, Prediction] = {}
        dups = []
        for p in predictions:
            if p.sample_id in items:
                dups.append(f"sample {p.sample_id!r}: predicted more than once")
            items[p.sample_id] = p
        if dups:
            raise ValidationError(dups, context="predictions")
        return cls(
            task=task,
            dataset=dataset,
            dataset_version=dataset_version,
            split=split,
            producer=dict(producer or {}),
            _items=items,
            _ids=list(items),
        )

    @property
    def sample_ids(self) -> list[str]:
        """Ids of the predicted samples, in file/insertion order."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    @functools.cached_property
    def _id_set(self) -> frozenset[str]:
        # (a set made once: made per call, reading a split of n samples cost O(n^2))
        return frozenset(self._ids)

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._id_set

    def get(self, sample_id: str) -> Prediction:
        """Return (and, for on-disk sets, read) the prediction of one sample.

        Raises:
            KeyError: If the sample was not predicted.
        """
        if sample_id in self._items:
            return self._items[sample_id]
        if self._loader is None or sample_id not in self._id_set:
            raise KeyError(sample_id)
        return self._loader(sample_id)

    def __iter__(self) -> Iterator[Prediction]:
        for sid in self._ids:
            yield self.get(sid)

    @property
    def reads_ahead(self) -> bool:
        """Whether :meth:`prefetch` fetches anything (a set at a URL) or does nothing."""
        return self._listed is not None

    def prefetch(self, sample_ids: Iterable[str]) -> int:
        """Start reading these samples' prediction files in the background; returns at once.

        A set at a URL (object storage) fetches the files of the samples a reader names next
        concurrently, while it works on the current one, so that :meth:`get` finds them
        instead of making one request at a time (scoring does this for the next few samples).
        Sets in memory or on local disk do nothing.

        Returns:
            The number of files whose fetch started.
        """
        if self._listed is None:
            return 0
        return int(self._listed.prefetch([f"samples/{s}" for s in sample_ids]))

    def file_digests(self, sample_id: str) -> dict[str, str]:
        """sha256 of each file of one sample's prediction in a set at a URL, by path in the set.

        The files read for the sample were hashed as they arrived; the others (its group's
        ``zarr.json``) are fetched now. A Dask worker sends these with the sample's outcome,
        and the process writing the report hands them to :meth:`add_file_digests`, so that
        :meth:`sha256` does not fetch the set a second time. Empty for sets in memory or on
        local disk.

        Raises:
            StoreError: A listed file of the sample is gone.
        """
        if self._listed is None:
            return {}
        return dict(self._listed.node_digests(f"samples/{sample_id}"))

    def add_file_digests(self, digests: Mapping[str, str]) -> None:
        """Take the hashes of files read elsewhere (:meth:`file_digests` of a worker's copy)."""
        if self._listed is not None:
            self._listed.add_digests(digests)

    def declared(self, sample_id: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of every array of one sample's prediction, without decoding it.

        Sets read from disk answer from file headers (Zarr metadata, TIFF tags), so a
        prediction that declares a huge array is refused before anything is allocated. Sets in
        memory (and readers without headers) answer with an empty mapping.

        Raises:
            ValidationError: If the headers cannot be read.
        """
        if self._declare is None:  # in memory (already allocated) or a reader without headers
            return {}
        return dict(self._declare(sample_id))

    def sha256(self) -> str:
        """Digest of the predictions' content (files on disk or at a URL, or arrays in memory)."""
        if self._listed is not None:  # a set at a URL: its store digests the listed files
            return str(self._listed.content_digest())
        if self.source is not None:
            return digest_path(self.source)
        h = hashlib.sha256(self.task.encode())
        for sid in sorted(self._ids):
            p = self.get(sid)
            h.update(sid.encode())
            if p.label is not None:
                h.update(int(p.label).to_bytes(8, "little", signed=True))
            for name in ("scores", *_ARRAY_FIELDS):
                arr = getattr(p, name)
                if arr is not None:
                    a = np.ascontiguousarray(arr)
                    h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
                    h.update(a.tobytes())
            for name in sorted(p.values):
                a = np.ascontiguousarray(p.values[name])
                h.update(f"values/{name}:{a.dtype.str}:{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()


def paint_masks(
    masks: np.ndarray, scores: np.ndarray | None = None, ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint possibly overlapping binary masks into one label image, higher scores on top.

    Masks are painted in ascending score order (ties keep their order), each inside its own
    bounding box, so where masks overlap the highest-scoring one owns the pixel. Objects left
    with no pixel are dropped. Works for 2D ``(n, Y, X)`` and 3D ``(n, Z, Y, X)`` stacks.

    Args:
        masks: ``(n, [Z,] Y, X)`` bool.
        scores: ``(n,)`` confidence per mask (default: all equal, painted in order).
        ids: ``(n,)`` id to paint each mask with (default: 1 for the highest score, 2 for the
            next, ...).

    Returns:
        ``(label image int32, object_ids int64, object_scores float64)``; ids in ascending order.

    Raises:
        ValidationError: If the numbers of masks and scores differ.
    """
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    scores = np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != n:
        raise ValidationError([f"{n} masks but {scores.shape[0]} scores"], "paint_masks")
    if ids is None:
        ids = np.empty(n, dtype=np.int64)
        ids[np.argsort(-scores, kind="stable")] = np.arange(1, n + 1)
    ids = np.asarray(ids, dtype=np.int64)
    out = np.zeros(masks.shape[1:], dtype=np.int32)
    if n == 0:
        return out, np.zeros(0, np.int64), np.zeros(0, np.float64)
    spatial = range(1, masks.ndim)
    lows, highs = [], []
    for axis in spatial:  # bounding box of every mask along each axis
        proj = masks.any(axis=tuple(a for a in spatial if a != axis))
        lows.append(proj.argmax(1))
        highs.append(proj.shape[1] - proj[:, ::-1].argmax(1))
    nonempty = masks.reshape(n, -1).any(axis=1)
    for k in np.argsort(scores, kind="stable"):
        if not nonempty[k]:
            continue
        window = tuple(slice(lo[k], hi[k]) for lo, hi in zip(lows, highs, strict=True))
        out[window][masks[k][window]] = ids[k]
    present = np.zeros(int(ids.max(initial=0)) + 1, dtype=bool)
    present[np.unique(out)] = True
    present[0] = False
    keep = present[ids]
    order = np.argsort(ids[keep])
    return out, ids[keep][order], scores[keep][order]


def digest_path(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a directory tree (sorted relative paths and file digests)."""
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    h = hashlib.sha256()
    files = [(rel, entry.path) for rel, entry in _walk(path) if entry.is_file()]
    # the order of sorted Paths (by components, not characters: "a/b" before "a-c")
    for rel, full in sorted(files, key=lambda f: f[0].split("/")):
        h.update(rel.encode())
        h.update(_file_sha256(full).encode())
    return h.hexdigest()


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every entry under ``root`` with its relative POSIX path, like ``root.rglob("*")``.

    In no particular order; symbolic links to folders are listed, not entered (as ``rglob``
    does). ``os.scandir`` answers file types from the directory listing, where pathlib's
    ``rglob`` makes a ``Path`` and a ``stat`` per entry: the digest and the link check of a
    2,000-sample canonical set (6,000 files) took 0.38 + 0.25 s that way and take 0.17 +
    0.07 s this way (x86_64, warm page cache), serial time of every ``cellbench score``.
    """
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                rel = prefix + entry.name
                yield rel, entry
                if entry.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", entry.path))


def _file_sha256(path: str | os.PathLike[str]) -> str:
    # hashlib directly: importing cellbench.store.fetch (the download machinery) would cost
    # every `cellbench score` process ~25 ms for one function
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --------------------------------------------------------------------------- writing
class PredictionWriter:
    """Write a canonical prediction set atomically (scratch directory, then rename).

    Use as a context manager; on an exception nothing is left at ``path``::

        with PredictionWriter(out, "instance-segmentation", "dsb2018-stardist", "1.0", "test") as w:
            w.add(Prediction("img-0001", mask=labels, object_ids=ids, object_scores=scores))

    Args:
        path: Destination directory (conventionally ending in ``.zarr``); must not exist.
        task: Task name.
        dataset: Dataset id.
        dataset_version: Dataset version.
        split: Split predicted.
        producer: Provenance of the predictions (model, run directory, command line).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        task: str,
        dataset: str,
        dataset_version: str,
        split: str,
        producer: Mapping[str, Any] | None = None,
    ) -> None:
        import zarr

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists; choose a new output path")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from cellbench.store.scratch import make_scratch

        self._scratch = make_scratch(self.path.parent, prefix=f".{self.path.name}.")
        self._root = zarr.open_group(str(self._scratch / "p.zarr"), mode="w-", zarr_format=3)
        self.header = {
            "format_version": PREDICTIONS_FORMAT_VERSION,
            "task": task,
            "dataset": dataset,
            "dataset_version": dataset_version,
            "split": split,
            "producer": {"cellbench": __version__, **dict(producer or {})},
        }
        self._ids: list[str] = []
        self._seen: set[str] = set()
        self._labels: list[int] = []
        self._scores: list[np.ndarray] = []

    def add(self, prediction: Prediction) -> None:
        """Write one sample's prediction."""
        sid = prediction.sample_id
        if sid in self._seen:
            raise ValidationError([f"sample {sid!r}: predicted more than once"], str(self.path))
        self._ids.append(sid)
        self._seen.add(sid)
        if prediction.label is not None:
            self._labels.append(int(prediction.label))
        if prediction.scores is not None:
            self._scores.append(np.asarray(prediction.scores, dtype=np.float32))
        arrays = dict(prediction.arrays())
        arrays.update({f"values/{k}": np.asarray(v) for k, v in prediction.values.items()})
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            chunks = _chunks(arr.shape)
            z = self._root.create_array(
                f"samples/{sid}/{name}",
                shape=arr.shape,
                dtype=arr.dtype,
                chunks=chunks,
                fill_value=0,
                config={"write_empty_chunks": True},
            )
            if arr.size:
                z[...] = arr

    def close(self) -> Path:
        """Finish the set and move it into place.

        Raises:
            ValidationError: If labels or scores were given for only some samples.
        """
        problems = []
        if self._labels and len(self._labels) != len(self._ids):
            problems.append(f"labels given for {len(self._labels)} of {len(self._ids)} samples")
        if self._scores and len(self._scores) != len(self._ids):
            problems.append(f"scores given for {len(self._scores)} of {len(self._ids)} samples")
        if problems:
            self.abort()
            raise ValidationError(problems, context=str(self.path))
        if self._labels:
            self._root.create_array("table/label", data=np.asarray(self._labels, np.int64))
        if self._scores:
            self._root.create_array("table/scores", data=np.stack(self._scores))
        self._root.attrs[_ATTR] = {
            **self.header,
            "sample_ids": self._ids,
            "complete": True,
            _EVERY_CHUNK: True,  # write_empty_chunks: an absent chunk file is a lost one
        }
        (self._scratch / "p.zarr").rename(self.path)
        shutil.rmtree(self._scratch, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Discard everything written so far."""
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    if not shape:
        return ()
    tile = [max(1, n) for n in shape]
    for i in range(max(0, len(shape) - 2)):
        tile[i] = 1 if shape[i] > 1 else max(1, shape[i])
    for i in range(max(0, len(shape) - 2), len(shape)):
        tile[i] = max(1, min(512, shape[i]))
    return tuple(tile)


def write_predictions(path: str | os.PathLike[str], predictions: PredictionSet) -> Path:
    """Write a prediction set in the canonical format (atomically)."""
    with PredictionWriter(
        path,
        predictions.task,
        predictions.dataset,
        predictions.dataset_version,
        predictions.split,
        predictions.producer,
    ) as writer:
        for p in predictions:
            writer.add(p)
    return Path(path)


# --------------------------------------------------------------------------- reading
def _is_canonical(path: Path) -> bool:
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        with meta.open("rb") as fh:
            head = fh.read(MAX_HEADER_BYTES + 1)
    except OSError:
        return False
    return _ATTR.encode() in head


def _header_problems(header: Any) -> list[str]:
    """Problems of a canonical set's header (``cellbench_predictions`` attributes)."""
    if not isinstance(header, dict):
        return ["header (zarr.json attributes cellbench_predictions) must be an object"]
    out = []
    if header.get("complete") is not True:
        out.append("prediction set is incomplete (interrupted write)")
    if str(header.get("format_version")) != PREDICTIONS_FORMAT_VERSION:
        out.append(
            f"predictions format version {header.get('format_version')!r} is unknown "
            f"(this cellbench reads {PREDICTIONS_FORMAT_VERSION})"
        )
    for key in ("task", "dataset", "dataset_version", "split"):
        if key in header and not isinstance(header[key], str):
            out.append(f"header field {key!r} must be text")
    if not isinstance(header.get(_EVERY_CHUNK, False), bool):
        out.append(f"header field {_EVERY_CHUNK!r} must be true or false")
    if not isinstance(header.get("task"), str) or not header.get("task"):
        out.append("header has no task")
    ids = header.get("sample_ids")
    if not isinstance(ids, list):
        out.append("header has no sample_ids list")
        return out
    if len(ids) > MAX_SAMPLES:
        out.append(f"header lists {len(ids)} sample_ids (at most {MAX_SAMPLES})")
        return out
    bad = [i for i in ids if not isinstance(i, str) or not SAMPLE_ID_PATTERN.fullmatch(i)]
    if bad:
        shown = ", ".join(repr(b)[:40] for b in bad[:3])
        out.append(
            f"{len(bad)} sample_ids are not sample ids (text matching "
            f"{SAMPLE_ID_PATTERN.pattern}): {shown}"
        )
    seen: set[Any] = set()
    dups = sorted({str(i) for i in ids if isinstance(i, str) and (i in seen or seen.add(i))})
    if dups:
        out.append(f"sample_ids listed more than once: {', '.join(dups[:10])}")
    return out


def _array_node(root: Any, key: str) -> Any:
    """Array ``key`` of ``root``, its metadata read, nothing decoded (None if absent).

    Raises:
        ValueError: If ``key`` is a group.
    """
    import zarr

    try:
        node = root[key]
    except KeyError:
        return None
    if not isinstance(node, zarr.Array):
        raise ValueError(f"{key} is not an array")
    return node


def _shape_dtype(node: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and NumPy dtype of a Zarr array, from its metadata."""
    try:
        dtype = np.dtype(node.dtype)
    except TypeError:
        dtype = np.dtype(object)
    return tuple(int(n) for n in node.shape), dtype


def _array_meta(root: Any, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and NumPy dtype of array ``key`` from its metadata only (None if absent)."""
    node = _array_node(root, key)
    return None if node is None else _shape_dtype(node)


def _chunk_keys(array: Any) -> list[str]:
    """The chunk keys of every chunk of a Zarr array (a :class:`_PlainArray` or zarr's)."""
    import itertools

    if isinstance(array, _PlainArray):
        return array.keys()
    grid = [range(int(n)) for n in array.cdata_shape]
    return [array.metadata.encode_chunk_key(c) for c in itertools.product(*grid)]


def _lost_chunks(name: str, array: Any, path: str, has_file: Callable[[str], bool]) -> list[str]:
    """The problem of array ``name`` (at ``path``) if ``has_file`` lacks chunk files of it.

    For a set whose header says every chunk file was written: an absent one was lost.
    """
    keys = _chunk_keys(array)
    missing = [k for k in keys if not has_file(f"{path}/{k}")]
    if not missing:
        return []
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return [
        f"{name}: {len(missing)} of {len(keys)} chunk files are missing "
        f"({', '.join(missing[:3])}{more}); the set's header says every chunk was written, so "
        "this copy is incomplete (an interrupted upload or copy?)"
    ]


#: Data types :class:`_PlainArray` reads (Zarr v3 names, the same in NumPy).
_PLAIN_TYPES = frozenset(
    {"bool", "float32", "float64"} | {f"{u}int{b}" for u in ("", "u") for b in (8, 16, 32, 64)}
)
#: Compressors :class:`_PlainArray` decodes, by Zarr v3 codec name: numcodecs', as zarr's own
#: codecs call them (so a damaged chunk raises the same error either way).
_PLAIN_COMPRESSORS = frozenset(["zstd", "blosc", "gzip"])


@dataclass(frozen=True)
class _PlainArray:
    """An array of a local prediction set in the plain layout, read without zarr.

    The plain layout is what cellbench's writer (zarr's defaults) and most Zarr v3 writers
    produce: a regular chunk grid, ``default`` chunk keys with ``/``, codecs ``bytes``
    (little-endian) then at most one of zstd, Blosc or gzip, a numeric fill value. Through
    zarr, each sample's array was opened twice (declared shapes, then reading) and read, each
    a round trip through zarr's event-loop thread, mostly spent waiting for the hand-over:
    scoring 2,000 samples of one 64 x 64 mask took 7.1 s in one process, 3.4 s this way
    (x86_64, ``benchmarks/scale.py``'s split). Here the ``zarr.json`` and the chunk files are
    read in the calling thread and decoded with the numcodecs functions zarr's codecs call, so
    the values, and the error a damaged chunk raises, are zarr's (tests compare both ways).
    Any other layout (sharding, transpose, big-endian, strings, other codecs) is read by zarr,
    and so is every set at a URL.
    """

    folder: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    compressor: dict[str, Any] | None

    @classmethod
    def open(cls, root: str, path: str) -> _PlainArray | None:
        """The array at ``path`` if its ``zarr.json`` describes the plain layout, else None.

        None also when the document is absent or unreadable: zarr then reads it and reports
        what is wrong in its own words.
        """
        import json

        folder = os.path.join(root, path)
        try:
            with open(os.path.join(folder, "zarr.json"), "rb") as f:
                meta = json.loads(f.read(MAX_HEADER_BYTES))
            if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
                return None
            if meta.get("storage_transformers") or meta["data_type"] not in _PLAIN_TYPES:
                return None
            shape = tuple(meta["shape"])
            grid, keys = meta["chunk_grid"], meta["chunk_key_encoding"]
            chunks = tuple(grid["configuration"]["chunk_shape"])
            codecs = meta["codecs"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        dtype = np.dtype(meta["data_type"])
        if (
            grid.get("name") != "regular"
            or keys.get("name") != "default"
            or keys.get("configuration", {}).get("separator", "/") != "/"
            or not shape
            or len(chunks) != len(shape)
            or not all(type(n) is int and n >= 0 for n in shape)
            or not all(type(c) is int and c >= 1 for c in chunks)
            or not isinstance(codecs, list)
            or not 1 <= len(codecs) <= 2
            or not all(isinstance(c, dict) for c in codecs)
            or codecs[0].get("name") != "bytes"
            or codecs[0].get("configuration", {}).get("endian", "little") != "little"
            or (len(codecs) == 2 and codecs[1].get("name") not in _PLAIN_COMPRESSORS)
        ):
            return None
        fill = meta.get("fill_value")
        try:
            if type(fill) not in (int, float, bool) or np.array(fill).astype(dtype) != fill:
                return None  # "NaN", hex strings, values the type cannot hold: zarr's rules
        except (OverflowError, ValueError):
            return None
        compressor = codecs[1] if len(codecs) == 2 else None
        return cls(folder, shape, chunks, dtype.newbyteorder("<"), fill, compressor)

    def keys(self) -> list[str]:
        """Chunk keys of every chunk (``c/i/j/...``)."""
        grid = [-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True)]
        return ["c/" + "/".join(map(str, idx)) for idx in np.ndindex(*grid)]

    def _decoder(self) -> Callable[[bytes], Any]:
        conf = dict((self.compressor or {}).get("configuration", {}))
        name = (self.compressor or {}).get("name")
        if name is None:
            return lambda data: data
        if name == "blosc":
            from numcodecs import blosc

            return blosc.decompress
        if name == "gzip":
            from numcodecs import GZip

            return GZip(int(conf.get("level", 5))).decode
        from numcodecs import Zstd

        return Zstd(level=int(conf.get("level", 0)), checksum=bool(conf.get("checksum"))).decode

    def read(self) -> np.ndarray:
        """The whole array (absent chunks hold the fill value, as in zarr)."""
        out = np.full(self.shape, self.fill, dtype=self.dtype)
        decode = self._decoder()
        for key in self.keys():
            try:
                with open(os.path.join(self.folder, key), "rb", buffering=0) as f:
                    data = f.readall()
            except FileNotFoundError:
                continue
            idx = [int(i) for i in key[2:].split("/")]
            sel = tuple(
                slice(i * c, min((i + 1) * c, n))
                for i, c, n in zip(idx, self.chunks, self.shape, strict=True)
            )
            block = np.frombuffer(decode(data), dtype=self.dtype).reshape(self.chunks)
            out[sel] = block[tuple(slice(0, s.stop - s.start) for s in sel)]
        return out.astype(self.dtype.newbyteorder("="), copy=False)


def _memory_problems(arrays: Sequence[tuple[str, Any]]) -> list[str]:
    """The sample's arrays (plain or zarr's) together, when they cannot fit in memory now."""
    from cellbench.formats import images

    present = [(name, a) for name, a in arrays if a is not None]
    total = sum(math.prod(a.shape) * np.dtype(a.dtype).itemsize for _, a in present)
    if total < images.ALWAYS_FITS:  # (the common case: nothing formatted, nothing asked)
        return []
    listed = ", ".join(
        f"{name} {' x '.join(map(str, a.shape))} {np.dtype(a.dtype)}" for name, a in present
    )
    problem = images.memory_problem(total, f"its arrays ({listed})")
    return [problem] if problem else []


def _open_canonical(path: Path) -> PredictionSet:
    meta_file = path / "zarr.json"
    if meta_file.stat().st_size > MAX_HEADER_BYTES:
        raise ValidationError([f"zarr.json is larger than {MAX_HEADER_BYTES} bytes"], str(path))
    return _open_canonical_group(meta_file.read_bytes(), str(path), str(path), path)


def _open_canonical_url(url: str) -> PredictionSet:
    """A canonical prediction set at a URL, read chunk by chunk (zarr's async stores)."""
    from cellbench.store.remote import filesystem, listed_store

    url = url.rstrip("/")
    try:
        fs, root = filesystem(url)
        size = fs.size(f"{root}/zarr.json")
        if size is not None and size > MAX_HEADER_BYTES:
            raise ValidationError([f"zarr.json is larger than {MAX_HEADER_BYTES} bytes"], url)
        raw = fs.cat_file(f"{root}/zarr.json")
    except FileNotFoundError:
        raise ValidationError(
            ["no zarr.json: not a canonical prediction set (or an interrupted upload)"], url
        ) from None
    except ValidationError:
        raise
    except Exception as err:  # network and backend errors have no common base class
        raise ValidationError([f"cannot be read ({type(err).__name__}: {err})"], url) from None
    try:
        # every optional array of every sample is looked up: from one listing, not a request
        # each (most are absent)
        store = listed_store(url, fs, root, max_files=MAX_FILES)
    except StoreError as err:
        raise ValidationError([str(err).removeprefix(f"{url}: ")], url) from None
    except Exception as err:  # network and backend errors have no common base class
        raise ValidationError([f"cannot be listed ({type(err).__name__}: {err})"], url) from None
    return _open_canonical_group(raw, store, url, url)


def _open_canonical_group(
    raw_meta: bytes, store: Any, where: str, source: Path | str
) -> PredictionSet:
    import json

    import zarr

    try:
        meta = json.loads(raw_meta)
        header = meta["attributes"][_ATTR]
    except (ValueError, KeyError, TypeError) as err:
        raise ValidationError(
            [f"zarr.json is not readable prediction-set metadata ({_short(err)})"], where
        ) from None
    problems = _header_problems(header)
    if problems:
        raise ValidationError(problems, where)
    try:
        root = zarr.open_group(store, mode="r", zarr_format=3)
    except Exception as err:  # zarr raises several types for malformed metadata
        raise ValidationError([f"not a readable Zarr group ({_short(err)})"], where) from None
    ids = [str(s) for s in header["sample_ids"]]
    row = {sid: i for i, sid in enumerate(ids)}
    labels = scores = None
    try:
        for key in ("table/label", "table/scores"):
            found = _array_meta(root, key)
            if found is None:
                continue
            shape, dtype = found
            want_rows = len(ids)
            if key == "table/label":
                if dtype.kind not in "iu":
                    problems.append(f"{key}: dtype {dtype} must be an integer type (class indices)")
                elif shape != (want_rows,):
                    problems.append(
                        f"{key}: shape {shape}, expected ({want_rows},): one per sample"
                    )
                else:
                    labels = np.asarray(root[key][...])
            else:
                if dtype.kind not in "iuf":
                    problems.append(f"{key}: dtype {dtype} must be numeric (class scores)")
                elif len(shape) != 2 or shape[0] != want_rows or shape[1] > MAX_CLASSES:
                    problems.append(
                        f"{key}: shape {shape}, expected ({want_rows}, n_classes) with at most "
                        f"{MAX_CLASSES} classes"
                    )
                else:
                    scores = np.asarray(root[key][...])
    except Exception as err:  # undecodable chunks, unknown codecs
        problems.append(f"table arrays unreadable ({_short(err)})")
    if problems:
        raise ValidationError(problems, where)

    listed = getattr(store, "has_node", None)  # a remote set's listing answers without requests
    listed_file = getattr(store, "has_file", None)
    every_chunk = header.get(_EVERY_CHUNK) is True

    local = str(store) if isinstance(source, Path) else None  # a folder: read without zarr

    def has_file(key: str) -> bool:
        if listed_file is not None:
            return bool(listed_file(key))
        return os.path.isfile(os.path.join(str(store), key))

    def has(key: str) -> bool:
        """Whether node ``key`` exists, i.e. its ``zarr.json`` is there.

        Not ``key in root``: that asks zarr's event loop, ~0.3 ms a question, about 17 per
        sample.
        """
        if listed is not None:
            return bool(listed(key))
        return has_file(f"{key}/zarr.json")

    def arrays(sid: str) -> list[tuple[str, str]]:
        """``(name, path)`` of every array node a sample's prediction has."""
        key = f"samples/{sid}"
        if not has(key):
            return []
        paths = [(name, f"{key}/{name}") for name in _ARRAY_FIELDS if has(f"{key}/{name}")]
        if has(f"{key}/values"):
            names = sorted(root[f"{key}/values"].array_keys())
            paths += [(f"values/{k}", f"{key}/values/{k}") for k in names]
        return paths

    def array_at(path: str) -> Any:
        """The array at ``path``: read without zarr when local and plain, else zarr's."""
        plain = _PlainArray.open(local, path) if local is not None else None
        return plain if plain is not None else _array_node(root, path)

    # the arrays declare() opened, by sample, for the load() that follows: it reads the very
    # metadata whose shapes the caller checked, without opening the arrays again
    declared: OrderedDict[str, list[tuple[str, str, Any]]] = OrderedDict()
    declared_lock = threading.Lock()

    def declare(sid: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        try:
            found = [(name, path, array_at(path)) for name, path in arrays(sid)]
            for name, _, array in found:
                if isinstance(array, _PlainArray):
                    out[name] = (array.shape, array.dtype.newbyteorder("="))
                elif array is not None:
                    out[name] = _shape_dtype(array)
        except Exception as err:  # malformed or unknown metadata
            raise ValidationError([f"unreadable array metadata ({_short(err)})"]) from None
        with declared_lock:
            declared[sid] = found
            while len(declared) > 8:  # declared and never loaded
                declared.popitem(last=False)
        return out

    def load(sid: str) -> Prediction:
        p = Prediction(sample_id=sid)
        if labels is not None:
            p.label = int(labels[row[sid]])
        if scores is not None:
            p.scores = scores[row[sid]]
        field_name = ""
        try:
            with declared_lock:
                found = declared.pop(sid, None)
            if found is None:
                found = [(name, path, array_at(path)) for name, path in arrays(sid)]
            lost = [
                line
                for name, path, array in found
                if every_chunk and array is not None  # (after the declared shapes were checked)
                for line in _lost_chunks(name, array, path, has_file)
            ]
        except Exception as err:  # malformed or unknown metadata
            raise ValidationError([f"unreadable array metadata ({_short(err)})"]) from None
        if lost:
            raise ValidationError(lost)
        # read whole below, absent chunks filled: refused first when they cannot fit
        too_big = _memory_problems([(name, array) for name, _, array in found])
        if too_big:
            raise ValidationError(too_big)
        try:
            for name, _, array in found:
                if array is None:
                    continue
                field_name = name.split("/")[0]
                plain = isinstance(array, _PlainArray)
                value = array.read() if plain else np.asarray(array[...])
                if name.startswith("values/"):
                    p.values[name.removeprefix("values/")] = value
                else:
                    setattr(p, name, value)
        except Exception as err:  # truncated or garbage chunks, unknown codecs
            raise ValidationError(
                [f"{field_name or 'arrays'}: unreadable ({_short(err)})"]
            ) from None
        return p

    return PredictionSet(
        task=str(header["task"]),
        dataset=str(header.get("dataset", "")),
        dataset_version=str(header.get("dataset_version", "")),
        split=str(header.get("split", "")),
        producer=dict(header.get("producer", {}))
        if isinstance(header.get("producer"), dict)
        else {},
        source=source,
        _loader=load,
        _ids=ids,
        _declare=declare,
        _listed=store if listed is not None else None,
    )


def read_csv_rows(
    path: Path, max_bytes: int = MAX_CSV_BYTES
) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a predictions CSV, within budgets (bytes, rows, UTF-8, field size).

    Raises:
        ValidationError: One line for a file that is too large, not UTF-8 or not CSV.
    """
    import csv

    where = str(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValidationError([f"{size} bytes (a predictions CSV is at most {max_bytes})"], where)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValidationError(
            [f"not UTF-8 text (byte {err.start}); save the CSV as UTF-8"], where
        ) from None
    try:
        reader = csv.DictReader(text.splitlines())
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = []
        for row in reader:
            rows.append(row)
            if len(rows) > MAX_SAMPLES * 1000:
                raise ValidationError([f"more than {MAX_SAMPLES * 1000} rows"], where)
    except csv.Error as err:
        raise ValidationError([f"line {reader.line_num}: not valid CSV ({err})"], where) from None
    return header, rows


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


def _symlink_problems(path: Path) -> list[str]:
    """Symbolic links inside a predictions path that lead outside it (refused)."""
    root = path.resolve()
    out: list[str] = []
    entries = [path] if path.is_symlink() else []
    if path.is_dir():
        for count, (_, entry) in enumerate(_walk(path)):
            if count > MAX_FILES:
                out.append(f"holds more than {MAX_FILES} files")
                break
            if entry.is_symlink():
                entries.append(Path(entry.path))
    for entry in sorted(entries):
        target = entry.resolve()
        if entry == path or not target.is_relative_to(root):
            out.append(f"{entry}: symbolic link to {target}, outside the predictions")
    return out


def read_image_folder(
    path: Path,
    task: str,
    field: str,
    finish: Callable[[Prediction], Prediction] | None = None,
    sample_id_of: Callable[[str], str] | None = None,
) -> PredictionSet:
    """A lazily read folder of ``<sample_id>.tif`` images, one prediction field per file.

    The reader tasks share for their image folders (class masks, label images, target
    images). TIFF, PNG and NPY files are accepted alike (NPY with ``allow_pickle=False``);
    shapes and dtypes are declared from the file headers before any pixel is decoded.

    Args:
        path: The folder.
        task: Task name recorded in the set.
        field: The :class:`Prediction` field each image fills (``mask``, ``image``).
        finish: Called on each prediction after reading (e.g. to attach object scores).
        sample_id_of: Maps a file stem to its sample id (default: the stem itself), e.g. to
            strip a tool's suffix such as Cellpose's ``_cp_masks``.

    Raises:
        ValidationError: If the folder holds no image file.
    """
    from cellbench.formats.images import read_image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise ValidationError([f"no <sample_id>.tif files found for task {task}"], str(path))
    problems = []
    by_id: dict[str, Path] = {}
    for f in files:
        sid = sample_id_of(f.stem) if sample_id_of is not None else f.stem
        if not SAMPLE_ID_PATTERN.fullmatch(sid):
            problems.append(f"{f.name}: file name is not a sample id ({SAMPLE_ID_PATTERN.pattern})")
        elif sid in by_id:
            problems.append(f"{f.name}: sample {sid!r} has two files ({by_id[sid].name})")
        else:
            by_id[sid] = f
    if problems:
        raise ValidationError(problems, str(path))

    def kind(f: Path) -> str:
        return {".png": "PNG", ".npy": "NPY"}.get(f.suffix.lower(), "TIFF")

    def declare(sid: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        f = by_id[sid]
        try:
            return {field: _image_header(f, labels=field != "image")}
        except Exception as err:  # zero-byte, truncated or garbage files
            raise ValidationError([f"{f.name}: not a readable {kind(f)} ({_short(err)})"]) from None

    def load(sid: str) -> Prediction:
        f = by_id[sid]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data = read_image(f, labels=field != "image")  # a palette PNG: its ids
        except Exception as err:  # truncated data, unsupported compression, pickled NPY
            raise ValidationError([f"{f.name}: not a readable {kind(f)} ({_short(err)})"]) from None
        p = Prediction(sample_id=sid)
        setattr(p, field, data)
        return finish(p) if finish is not None else p

    return PredictionSet(task=task, source=path, _loader=load, _ids=list(by_id), _declare=declare)


#: Image files a prediction folder may hold (TIFF, PNG, NPY; the sample id is the stem).
_IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def _image_header(path: Path, labels: bool = False) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an image file from its header (nothing decoded).

    ``labels``: what ``read_image(path, labels=True)`` gives (a palette PNG's indices).
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return tuple(int(n) for n in arr.shape), np.dtype(arr.dtype)
    if suffix == ".png":
        from cellbench.formats.images import png_header

        return png_header(path, indices=labels)
    import tifffile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(int(n) for n in series.shape), np.dtype(series.dtype)


def load_predictions(
    path: str | os.PathLike[str],
    task: str | None = None,
    class_names: Sequence[str] | None = None,
) -> PredictionSet:
    """Read predictions from the canonical format or a common one (see module docstring).

    Args:
        path: Canonical Zarr directory, a CSV file, or a folder of TIFFs / CTC result folders.
        task: Task name; required for non-canonical formats (the canonical one records it).
        class_names: Class names, to accept class names as labels in a classification CSV.

    Returns:
        A lazily loaded :class:`PredictionSet`.

    Raises:
        ValidationError: If the path cannot be read as predictions for the task.
    """
    from cellbench.store.location import is_remote, local_path

    if is_remote(path):
        pset = _open_canonical_url(str(path))
        if task is not None and pset.task != task:
            raise ValidationError(
                [f"predictions are for task {pset.task!r}, not {task!r}"], str(path)
            )
        return pset
    path = local_path(path)
    if not path.exists() and not path.is_symlink():
        raise ValidationError([f"{path} does not exist"], context="predictions")
    links = _symlink_problems(path)
    if links:
        raise ValidationError(links, context=str(path))
    if path.is_dir() and _is_canonical(path):
        pset = _open_canonical(path)
        if task is not None and pset.task != task:
            raise ValidationError(
                [f"predictions are for task {pset.task!r}, not {task!r}"], str(path)
            )
        return pset
    if task is None:
        raise ValidationError(
            ["not a canonical prediction set; say which task the files are for (--task)"],
            str(path),
        )
    from cellbench.tasks import get_task

    return get_task(task).read_predictions(path, class_names)
