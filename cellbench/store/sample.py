"""The in-memory :class:`Sample`: what generators and ingesters hand to the store writer.

One dataclass serves all five tasks. The input image is always present; which targets are set
depends on the task:

======================== ======================================================================
task                     targets
======================== ======================================================================
classification           ``label`` (int class index into the dataset's class table)
semantic-segmentation    ``semantic`` (class index per pixel, ``[z,]y,x``)
instance-segmentation    ``instances`` (instance id per pixel, 0 = background, ``[z,]y,x``)
tracking                 ``instances`` with a leading ``t`` axis and ``tracks`` (CTC table);
                         optionally sparse SEG truth ``seg`` + ``seg_annotated``
augmented-microscopy     ``target`` (fluorescence, ``c,[z,]y,x``, same spatial shape as image)
======================== ======================================================================

Axes follow OME-Zarr order (``t, c, z, y, x``, each optional except ``c, y, x`` for images).
Label images carry the image's axes without ``c``.

Sequences may be lazy: ``image``, ``instances`` and ``seg`` of a ``t`` sample can be a
:class:`~cellbench.store.frames.FrameSource` (shape, dtype, one frame at a time), so a reader
hands a long movie to the store writer without holding it. :meth:`Sample.problems` then checks
what it can without reading (shapes, dtypes, tables) and the writer checks the values frame by
frame; ``np.asarray(field)`` reads a lazy field whole for consumers that need it so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.store.frames import FrameSource, is_lazy

SAMPLE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SPLITS = ("train", "val", "test")
IMAGE_AXES = ("cyx", "czyx", "tcyx", "tczyx")
#: Columns of a track table, as in the Cell Tracking Challenge ``man_track.txt`` (L B E P).
TRACK_COLUMNS = ("track_id", "start", "end", "parent")

MetadataValue = str | int | float | bool


@dataclass
class Sample:
    """One annotated sample (an image, a sequence, a field of view) of a dataset.

    Attributes:
        id: Unique, stable identifier (letters, digits, ``.``, ``_``, ``-``; at most 128).
        image: Input image with axes :attr:`axes` (e.g. ``(c, y, x)``).
        axes: Axis order of :attr:`image`, one of ``cyx``, ``czyx``, ``tcyx``, ``tczyx``.
        channel_names: One name per channel of :attr:`image`.
        split: ``train``, ``val`` or ``test``.
        pixel_size: Physical size per axis (``x``/``y``/``z`` in micrometres, ``t`` in seconds).
        metadata: Free metadata (source, plate, well, site, cell line, microscope, ...).
        label: Class index (classification).
        semantic: Class index per pixel (semantic segmentation).
        instances: Instance id per pixel, 0 is background (instance segmentation, tracking).
        tracks: ``(n, 4)`` int64 table ``track_id, start, end, parent`` (tracking).
        target: Target image with axes ``c[,z],y,x`` (augmented microscopy).
        target_channel_names: One name per channel of :attr:`target`.
        seg: Sparse segmentation truth of a tracking sample (CTC ``man_seg``): instance ids
            with the shape of :attr:`instances`, set only in the annotated frames or z slices
            listed in :attr:`seg_annotated` (0 everywhere else). Within an annotated frame or
            slice only the objects drawn are annotated; SEG is scored on those alone.
        seg_annotated: ``(n, 2)`` int64 rows ``frame, z`` naming what :attr:`seg` annotates:
            ``z = -1`` for a whole frame, ``z >= 0`` for one slice of a 3D frame.
    """

    id: str
    image: np.ndarray | FrameSource
    axes: str = "cyx"
    channel_names: list[str] = field(default_factory=list)
    split: str = "train"
    pixel_size: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, MetadataValue] = field(default_factory=dict)
    label: int | None = None
    semantic: np.ndarray | None = None
    instances: np.ndarray | FrameSource | None = None
    tracks: np.ndarray | None = None
    target: np.ndarray | None = None
    target_channel_names: list[str] = field(default_factory=list)
    seg: np.ndarray | FrameSource | None = None
    seg_annotated: np.ndarray | None = None

    @property
    def label_axes(self) -> str:
        """Axes of label images (the image axes without ``c``)."""
        return self.axes.replace("c", "")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the ``[z,]y,x`` axes."""
        return tuple(n for a, n in zip(self.axes, self.image.shape, strict=True) if a in "zyx")

    def problems(self) -> list[str]:
        """Return every inconsistency in this sample (empty when valid)."""
        out: list[str] = []
        where = f"sample {self.id!r}"
        if not SAMPLE_ID_PATTERN.match(self.id):
            out.append(
                f"{where}: id must match {SAMPLE_ID_PATTERN.pattern} "
                "(letters, digits, '.', '_', '-')"
            )
        if self.axes not in IMAGE_AXES:
            out.append(f"{where}: axes {self.axes!r} not one of {', '.join(IMAGE_AXES)}")
            return out
        if self.image.ndim != len(self.axes):
            out.append(
                f"{where}: image has {self.image.ndim} dims, expected {len(self.axes)} "
                f"for axes {self.axes!r}"
            )
            return out
        if self.split not in SPLITS:
            out.append(f"{where}: split {self.split!r} not one of {', '.join(SPLITS)}")
        n_channels = self.image.shape[self.axes.index("c")]
        if self.channel_names and len(self.channel_names) != n_channels:
            out.append(
                f"{where}: {len(self.channel_names)} channel names for {n_channels} channels"
            )
        if self.image.dtype.kind not in "uif":
            out.append(f"{where}: image dtype {self.image.dtype} is not numeric")
        elif (
            self.image.dtype.kind == "f"
            and not is_lazy(self.image)
            and not np.isfinite(self.image).all()
        ):
            out.append(f"{where}: image contains NaN or infinite values")
        label_shape = tuple(n for a, n in zip(self.axes, self.image.shape, strict=True) if a != "c")
        for name in ("semantic", "instances"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != label_shape:
                out.append(
                    f"{where}: {name} shape {arr.shape} != image shape without channels "
                    f"{label_shape} (axes {self.label_axes!r})"
                )
            if arr.dtype.kind not in "ui":
                out.append(f"{where}: {name} dtype {arr.dtype} must be an integer type")
            elif arr.size and not is_lazy(arr) and arr.min() < 0:
                out.append(f"{where}: {name} has negative values")
        if self.target is not None:
            expected = self.spatial_shape
            if self.target.ndim != len(expected) + 1 or self.target.shape[1:] != expected:
                out.append(
                    f"{where}: target shape {self.target.shape} must be (c, {expected}) "
                    "matching the image's spatial shape"
                )
            if (
                self.target.dtype.kind == "f"
                and not is_lazy(self.target)
                and not np.isfinite(self.target).all()
            ):
                out.append(f"{where}: target contains NaN or infinite values")
            if (
                self.target_channel_names
                and len(self.target_channel_names) != (self.target.shape[0])
            ):
                out.append(f"{where}: target channel names do not match target channels")
        if self.tracks is not None:
            t = np.asarray(self.tracks)
            if t.ndim != 2 or t.shape[1] != 4 or t.dtype.kind not in "ui":
                out.append(f"{where}: tracks must be an (n, 4) integer table {TRACK_COLUMNS}")
            elif "t" not in self.axes:
                out.append(f"{where}: tracks given but image has no 't' axis")
        out.extend(self._seg_problems(where, label_shape))
        if self.label is not None and (
            not isinstance(self.label, int | np.integer) or self.label < 0
        ):
            out.append(f"{where}: label {self.label!r} must be a non-negative int")
        for key, value in self.metadata.items():
            if not isinstance(value, str | int | float | bool | np.generic):
                out.append(f"{where}: metadata {key!r} has unsupported type {type(value)}")
        return out

    def _seg_problems(self, where: str, label_shape: tuple[int, ...]) -> list[str]:
        """Problems of the sparse SEG truth (:attr:`seg` with :attr:`seg_annotated`)."""
        if self.seg is None and self.seg_annotated is None:
            return []
        if self.seg is None or self.seg_annotated is None:
            return [f"{where}: seg and seg_annotated must be given together"]
        out: list[str] = []
        if "t" not in self.axes:
            out.append(f"{where}: seg (sparse SEG truth) needs a 't' axis")
        seg = self.seg
        if seg.shape != label_shape:
            out.append(
                f"{where}: seg shape {seg.shape} != image shape without channels {label_shape}"
            )
        if seg.dtype.kind not in "ui":
            out.append(f"{where}: seg dtype {seg.dtype} must be an integer type")
        elif seg.size and not is_lazy(seg) and seg.min() < 0:
            out.append(f"{where}: seg has negative values")
        ann = np.asarray(self.seg_annotated)
        if ann.ndim != 2 or ann.shape[1] != 2 or ann.dtype.kind not in "ui":
            out.append(f"{where}: seg_annotated must be an (n, 2) integer table (frame, z)")
            return out
        if out:
            return out
        n_t = seg.shape[0]
        n_z = seg.shape[1] if seg.ndim == 4 else 0
        covered = np.zeros(seg.shape[:2] if seg.ndim == 4 else seg.shape[:1], dtype=bool)
        seen: set[tuple[int, int]] = set()
        for t, z in ann.tolist():
            if (t, z) in seen:
                out.append(f"{where}: seg_annotated lists frame {t} z={z} twice")
            seen.add((t, z))
            if not 0 <= t < n_t:
                out.append(f"{where}: seg_annotated frame {t} is outside 0..{n_t - 1}")
                continue
            if z == -1:
                covered[t] = True
            elif seg.ndim != 4:
                out.append(f"{where}: seg_annotated frame {t} names slice z={z} of a 2D frame")
            elif not 0 <= z < n_z:
                out.append(f"{where}: seg_annotated frame {t} slice z={z} is outside 0..{n_z - 1}")
            else:
                covered[t, z] = True
        if is_lazy(seg):  # checked frame by frame while the store writer reads it
            return out
        outside = seg.reshape(*covered.shape, -1).any(axis=-1) & ~covered
        if outside.any():
            where_bad = np.argwhere(outside)[:5].tolist()
            out.append(
                f"{where}: seg has labels outside the annotated frames/slices (frame[, z]: "
                f"{where_bad}); list them in seg_annotated or clear them"
            )
        return out

    def validate(self) -> None:
        """Raise :class:`ValidationError` listing every problem of this sample."""
        problems = self.problems()
        if problems:
            raise ValidationError(problems)

    def arrays(self) -> dict[str, Any]:
        """Return the array fields that are set, keyed by field name."""
        names = ("image", "semantic", "instances", "tracks", "target", "seg", "seg_annotated")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
