"""What the image + mask layouts share: one image file and its masks -> one instance sample.

The DSB2018/BBBC038, BBBC label image, Cellpose and StarDist layouts differ only in how files
are named and found; each format module (:mod:`.dsb`, :mod:`.label_folders`, :mod:`.cellpose`)
turns a folder into :class:`Pair` records and lets this module read, check and stream them.
Masks come in two kinds:

``label``   one label image per image (0 background, one id per object); a colour-coded PNG
            (one colour per object, black background) is accepted where the format allows it.
``binary``  one binary mask file per object (DSB2018: 0 and 255), painted into one label image
            with ids 1..n in file-name order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import (
    apply_record,
    as_labels,
    channel_names_for,
    decode_png_cyx,
    label_dtype,
    pieces_problem,
    png_mask_box,
    read_image,
    read_sidecar,
    short_error,
    to_cyx,
)
from cellbench.formats.registry import ItemList, kept_per_process
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample

#: How overlapping binary masks are resolved: ``error`` (refuse, the default) or ``first``
#: (a pixel claimed by several masks goes to the first mask in file-name order).
OVERLAP_CHOICES = ("error", "first")


@dataclass
class Pair:
    """One sample of a layout: its id, image file and mask file(s) (none: image only)."""

    id: str
    image: Path
    masks: list[Path] = field(default_factory=list)


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for messages (the path itself when outside)."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read(path: Path, root: Path, labels: bool = False) -> tuple[np.ndarray | None, list[str]]:
    """``path``'s array (``labels``: a label file, so a palette PNG gives its indices)."""
    try:
        return read_image(path, labels=labels), []
    except Exception as err:  # truncated, not an image, pickled NPY: report, keep going
        return None, [f"{rel(path, root)}: cannot be read ({short_error(err)})"]


def colour_labels(arr: np.ndarray) -> np.ndarray:
    """A colour-coded label image ``(y, x, 3|4)`` -> ids 1..n, one per distinct non-black colour.

    Colours are numbered in ascending order of their packed value (deterministic).
    """
    flat = arr[..., :3].reshape(-1, 3).astype(np.uint64)
    packed = (flat[:, 0] << np.uint64(32)) | (flat[:, 1] << np.uint64(16)) | flat[:, 2]
    values, inverse = np.unique(packed, return_inverse=True)
    ids = np.arange(values.size, dtype=np.int64)
    if not (values.size and values[0] == 0):  # no black pixel: every colour is an object
        ids += 1
    out = ids[inverse].reshape(arr.shape[:2])
    return out.astype(label_dtype(int(out.max(initial=0))))


def _label_mask(
    path: Path, root: Path, shape: tuple[int, ...], colour: bool, arr: np.ndarray | None = None
) -> tuple[np.ndarray | None, list[str]]:
    """The label image at ``path`` (or its already-read ``arr``) checked against ``shape``."""
    where = rel(path, root)
    if arr is None:
        arr, problems = _read(path, root, labels=True)
        if arr is None:
            return None, problems
    if colour and arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype.kind in "ui":
        arr = colour_labels(arr)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        return None, [
            f"{where}: colour image {arr.shape}, expected a single-channel label image "
            "(one integer id per object)"
        ]
    labels, problems = as_labels(arr, where)
    if labels is None:
        return None, problems
    if labels.shape != shape:
        return None, [f"{where}: mask shape {labels.shape}, expected the image's {shape}"]
    return labels, []


def is_volume_mask(arr: np.ndarray) -> bool:
    """Whether a label file's array is a 3D ``(z, y, x)`` volume (not a colour ``(y, x, 3|4)``)."""
    return arr.ndim == 3 and arr.shape[-1] not in (3, 4)


def _volume(raw: np.ndarray, where: str) -> tuple[np.ndarray | None, list[str]]:
    """A volume image file (``(z, y, x)`` or ``(c, z, y, x)``) as ``(c, z, y, x)``."""
    if raw.size == 0:
        return None, [f"{where}: no pixels (shape {raw.shape}; a truncated or empty file?)"]
    if raw.dtype.kind not in "uif" or raw.dtype.kind == "b":
        return None, [f"{where}: dtype {raw.dtype}, expected a numeric image"]
    if raw.ndim == 3:
        return raw[None], []
    if raw.ndim == 4:
        return raw, []
    return None, [
        f"{where}: {raw.ndim} dims {raw.shape}, expected (z, y, x) or (c, z, y, x) (its mask "
        "is a 3D volume)"
    ]


def _binary_masks(
    paths: Sequence[Path], root: Path, shape: tuple[int, ...], overlap: str, pieces: bool
) -> tuple[np.ndarray | None, list[str]]:
    """Paint one binary mask per object into a label image; list every problem."""
    problems: list[str] = []
    labels = np.zeros(shape, dtype=label_dtype(len(paths)))
    claimed_by: dict[int, Path] = {}
    for k, path in enumerate(paths, start=1):
        where = rel(path, root)
        # work inside the object's bounding box: a DSB image has hundreds of masks
        cut = png_mask_box(path)  # a grey PNG: only its box is ever decoded into an array
        if cut is not None:
            mask_shape, box, inside = cut
        else:
            arr, more = _read(path, root, labels=True)
            if arr is None:
                problems += more
                continue
            if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # grey saved as RGB(A): channels equal
                if not (arr[..., :3] == arr[..., :1]).all():
                    problems.append(f"{where}: colour mask, expected one binary channel")
                    continue
                arr = arr[..., 0]
            mask_shape, box, inside = arr.shape, None, arr
            if arr.shape == shape:
                rows = np.flatnonzero(arr.any(axis=1))
                cols = np.flatnonzero(arr.any(axis=0))
                if rows.size:
                    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
                    inside = arr[box]
        if mask_shape != shape:
            problems.append(f"{where}: mask shape {mask_shape}, expected the image's {shape}")
            continue
        if box is None:
            problems.append(f"{where}: empty mask (no foreground pixel; expected one object)")
            continue
        fg = inside != 0
        fg_values = inside[fg]
        if fg_values.min() != fg_values.max():
            # every value of the file: the box's, and 0 when the box leaves pixels outside
            values = np.unique(inside)
            if inside.size < shape[0] * shape[1] and values[0] != 0:
                values = np.concatenate([[0], values])
            shown = ", ".join(str(v) for v in values[:6].tolist())
            problems.append(
                f"{where}: not a binary mask (values {shown}{', ...' if values.size > 6 else ''}; "
                "expected 0 and one foreground value, one object per file)"
            )
            continue
        if pieces:
            msg = pieces_problem(fg.astype(np.uint8), where)
            if msg:
                problems.append(f"{where}: the object is in more than one piece")
        window = labels[box]
        taken = fg & (window != 0)
        if taken.any():
            others, counts = np.unique(window[taken], return_counts=True)
            if overlap == "error":
                for other, n in zip(others.tolist(), counts.tolist(), strict=True):
                    problems.append(
                        f"{where}: overlaps {rel(claimed_by[other], root)} in {n} pixel(s) "
                        "(expected disjoint object masks; option overlap=first keeps the "
                        "first mask's pixels)"
                    )
            fg &= window == 0
        window[fg] = k
        claimed_by[k] = path
    if problems:
        return None, problems
    return labels, []


def read_pair(
    pair: Pair,
    root: Path,
    *,
    split: str,
    record: dict[str, Any] | None,
    kind: str,
    overlap: str = "error",
    colour: bool = False,
    pieces: bool = False,
    metadata: dict[str, Any] | None = None,
) -> tuple[Sample | None, list[str]]:
    """Read one pair into a sample and list every problem (never raises for bad content).

    Args:
        pair: The files.
        root: The layout's folder (file names in messages are relative to it).
        split: The sample's split unless the sidecar ``record`` says otherwise.
        record: The sidecar record of the sample, if any.
        kind: ``label`` (one label image) or ``binary`` (one binary mask per object).
        overlap: For ``binary``: ``error`` or ``first`` (see :data:`OVERLAP_CHOICES`).
        colour: Accept colour-coded label PNGs (``label`` kind).
        pieces: Also report objects in more than one connected piece (validators).
        metadata: Metadata for the sample (a sidecar record replaces it).
    """
    problems: list[str] = []
    if not SAMPLE_ID_PATTERN.fullmatch(pair.id):
        problems.append(
            f"{rel(pair.image, root)}: name {pair.id!r} is not a valid sample id "
            f"({SAMPLE_ID_PATTERN.pattern}); rename the files"
        )
    # a colour PNG beside binary masks (DSB2018) goes straight to (c, y, x): no (y, x, 4) copy
    cyx = decode_png_cyx(pair.image) if kind == "binary" else None
    raw: np.ndarray | None = None
    if cyx is None:
        raw, more = _read(pair.image, root)
        problems += more
    mask_raw: np.ndarray | None = None
    if kind == "label" and pair.masks:  # the mask decides 2D (cyx) or 3D (czyx)
        mask_raw, more = _read(pair.masks[0], root, labels=True)
        problems += more
    colour_image: str | None = None
    if cyx is not None:
        image, more, colour_image = cyx, [], "rgb"
    elif raw is None:
        return None, problems
    elif mask_raw is not None and is_volume_mask(mask_raw):
        image, more = _volume(raw, rel(pair.image, root))
    else:
        image, more, colour_image = to_cyx(raw, rel(pair.image, root))
    del raw, cyx  # the file's array (RGBA for DSB PNGs) is not needed while the masks are read
    problems += more
    if image is None:
        return None, problems
    shape = tuple(image.shape[1:])
    labels: np.ndarray | None = None
    if kind == "label" and mask_raw is not None:
        labels, more = _label_mask(pair.masks[0], root, shape, colour, mask_raw)
        del mask_raw
        problems += more
        if labels is not None and pieces:
            msg = pieces_problem(labels, rel(pair.masks[0], root))
            if msg:
                problems.append(msg)
    elif kind == "binary" and pair.masks:
        labels, more = _binary_masks(pair.masks, root, shape, overlap, pieces)
        problems += more
    if problems:
        return None, problems
    sample = Sample(
        id=pair.id,
        image=image,
        axes="czyx" if image.ndim == 4 else "cyx",
        channel_names=channel_names_for(image, colour_image),
        split=split,
        metadata=dict(metadata or {}),
        instances=labels,
    )
    apply_record(sample, record)
    return sample, [f"sample {sample.id!r}: {p}" for p in sample.problems()]


def check_options(split: str, overlap: str = "error") -> list[str]:
    """Problems of the common reader options."""
    out = []
    if split not in SPLITS:
        out.append(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if overlap not in OVERLAP_CHOICES:
        out.append(f"overlap={overlap!r}: expected one of {', '.join(OVERLAP_CHOICES)}")
    return out


@dataclass
class Layout:
    """A folder scanned into pairs: what reading, listing, per-item reading and checking share.

    Attributes:
        root: The layout's folder (file names in messages are relative to it).
        pairs: The samples found, in reading order.
        problems: The layout's own problems (unpaired files, bad sidecar, bad split files).
        records: Sidecar records by sample id.
        splits: Each sample's split (split folders, split files or the ``split`` option).
        read_options: What :func:`read_pair` needs besides (``kind``, ``overlap``, ``colour``).
    """

    root: Path
    pairs: list[Pair]
    problems: list[str]
    records: dict[str, Any]
    splits: dict[str, str]
    read_options: dict[str, Any]

    def read(self, pair: Pair, *, pieces: bool = False) -> tuple[Sample | None, list[str]]:
        """One pair as a sample, and its problems (never raises for bad content)."""
        return read_pair(
            pair,
            self.root,
            split=self.splits[pair.id],
            record=self.records.get(pair.id),
            pieces=pieces,
            **self.read_options,
        )

    def layout_problems(self) -> list[str]:
        """The layout's problems, or that it holds no image at all."""
        if not self.pairs and not self.problems:
            return [f"{self.root}: no images found"]
        return list(self.problems)

    def stream(self) -> Iterator[Sample]:
        """Yield every sample; once a problem is found nothing more is yielded.

        Every pair is still read and checked, so a bad folder is reported in one go.

        Raises:
            ValidationError: Every problem: the layout's first, then each sample's in order.
        """
        problems = self.layout_problems()
        for pair in self.pairs:
            sample, more = self.read(pair)
            problems += more
            if not problems and sample is not None:
                yield sample
            sample = None  # not held while the next pair is read
        if problems:
            raise ValidationError(problems, context=str(self.root))

    def all_problems(self) -> list[str]:
        """Every problem, objects in more than one piece included (what validators report)."""
        problems = self.layout_problems()
        for pair in self.pairs:
            problems += self.read(pair, pieces=True)[1]
        return problems


def layout_of(
    root: Path,
    pairs: list[Pair],
    problems: list[str],
    read_options: dict[str, Any],
    split: str,
    splits: dict[str, str] | None = None,
) -> Layout:
    """The :class:`Layout` of ``pairs`` found in ``root``, with the sidecar's records.

    Args:
        root: The folder.
        pairs: The samples the format's scan found.
        problems: The scan's problems (the sidecar's are added).
        read_options: What :func:`read_pair` needs (``kind``, ``overlap``, ``colour``).
        split: Each sample's split unless ``splits`` (split folders or files) says.
        splits: Splits by sample id, where the layout itself gives them.
    """
    sidecar, more = read_sidecar(root)
    given = splits or {}
    return Layout(
        root,
        pairs,
        problems + more,
        sidecar.get("samples", {}),
        {p.id: given.get(p.id, split) for p in pairs},
        read_options,
    )


#: ``scan(root, **options) -> Layout``; raises :class:`ValidationError` for bad options.
Scanner = Callable[..., Layout]
#: ``watch(root, **options) -> paths`` whose modification times change when the layout's
#: listing can change (the folders holding the files, the sidecar, split files).
Watcher = Callable[..., list[Path]]

_LAYOUTS: dict[Any, Any] = {}


@dataclass(frozen=True)
class LayoutReader:
    """``read``, ``items``, ``read_item`` and ``validate`` of a pair layout (see :class:`Format`).

    A per-item task needs the files of one sample: the scan is kept per process while the
    watched folders are unchanged, so a large folder is listed once per worker process rather
    than once per item (ingest stays linear in the number of samples).

    Args:
        name: The format's name (the scan cache's key).
        scan: Turns a folder into a :class:`Layout`.
        watch: The paths whose modification times invalidate a kept scan.
        options: The options ``scan`` accepts (validators ignore any other).
    """

    name: str
    scan: Scanner
    watch: Watcher
    options: tuple[str, ...]

    def read(self, src: str | Path, **options: Any) -> Iterator[Sample]:
        """Stream the samples of ``src`` (see :meth:`Layout.stream`)."""
        return self.scan(Path(src), **options).stream()

    def _cached(self, src: str | Path, options: dict[str, Any]) -> Layout:
        root = Path(src)
        key = (self.name, str(root.resolve()), tuple(sorted(options.items())))
        watched = self.watch(root, **options)
        return kept_per_process(_LAYOUTS, key, watched, lambda: self.scan(root, **options), size=8)

    def items(self, src: str | Path, **options: Any) -> ItemList:
        """The sample ids of ``src`` and the layout's problems (no pixel data read)."""
        layout = self._cached(src, options)
        return ItemList([p.id for p in layout.pairs], layout.layout_problems(), str(layout.root))

    def read_item(
        self, src: str | Path, item: str, **options: Any
    ) -> tuple[Sample | None, list[str]]:
        """The sample ``item`` of ``src`` and its problems."""
        layout = self._cached(src, options)
        for pair in layout.pairs:
            if pair.id == item:
                return layout.read(pair)
        return None, [f"{item}: no such sample in {layout.root}"]

    def validate(self, src: str | Path, **options: Any) -> list[str]:
        """Every problem of ``src`` (never raises)."""
        known = {k: v for k, v in options.items() if k in self.options and k != "split"}
        try:
            layout = self.scan(Path(src), **known)
        except ValidationError as err:
            return list(err.problems)
        return layout.all_problems()


def listdir(folder: Path) -> list[str]:
    """Sorted entries of ``folder`` (empty when it does not exist)."""
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def start_write(dest: Path) -> None:
    """Create the destination folder (it must not exist: callers write to a temporary one)."""
    dest.mkdir(parents=True)


def writable_problems(sample: Sample, *, need_instances: bool = False) -> list[str]:
    """Problems that stop a sample from being written as a 2D image + mask layout."""
    where = f"sample {sample.id!r}"
    out = list(sample.problems())
    if sample.axes != "cyx":
        out.append(f"{where}: axes {sample.axes!r}; this layout holds 2D images (cyx) only")
    if need_instances and sample.instances is None:
        out.append(f"{where}: no instance labels to write")
    return out
