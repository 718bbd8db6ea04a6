"""Cell Tracking Challenge (CTC) folders: read, write, validate and score.

Layout of one sequence ``<seq>`` (e.g. ``01``), as distributed by celltrackingchallenge.net::

    <seq>_GT/TRA/man_track000.tif ...   tracking markers, one uint16 image per frame
    <seq>_GT/TRA/man_track.txt          lines "L B E P": label, begin, end, parent (0 = none)
    <seq>_GT/SEG/man_seg000.tif ...     segmentation truth for some frames only (sparse)
    <seq>_GT/SEG/man_seg_000_012.tif    ... or for single z slices of a 3D frame (frame 0, z=12)
    <seq>_RES/mask000.tif ...           a result: one uint16 label image per frame
    <seq>_RES/res_track.txt             the result's "L B E P" lines

Frames are numbered from 0 with 3 digits, or 4 digits when a sequence has more than 1000 frames
(CTC convention); readers accept any digit count. Images are read and written with ``tifffile``
(2D frames as one page, 3D frames as one page per z slice). Masks must be 16-bit (8-bit is
accepted as well).

Every reader validates and raises :class:`cellbench.errors.ValidationError` listing *all*
problems, each naming the file and frame (missing or extra frames, wrong shape or dtype, labels
in masks not in the track file or vice versa, a track absent in a frame between B and E, a parent
ending after its daughter begins, malformed lines, ...).

:func:`score_ctc_folders` scores one result folder against its ground-truth folder with the
tracking metrics (:mod:`cellbench.metrics.tracking`), as the ``cellbench score-ctc`` command does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import read_tiff  # (each header checked before decoding)
from cellbench.formats.registry import Format, ItemList
from cellbench.metrics.base import Metric, MetricResult
from cellbench.metrics.tracking import (
    CTCMeasures,
    DivisionMetrics,
    TrackingMatch,
    match_tracking,
)
from cellbench.tracks import SegAnnotation, TrackedSequence, track_table_problems

if TYPE_CHECKING:
    from cellbench.store.sample import Sample

GT_TRACK_FILE = "man_track.txt"
RES_TRACK_FILE = "res_track.txt"
_TRA_RE = re.compile(r"^man_track(\d+)\.tiff?$")
_RES_RE = re.compile(r"^mask(\d+)\.tiff?$")
_SEG_RE = re.compile(r"^man_seg_?(\d+)(?:_(\d+))?\.tiff?$")
#: Mask dtypes the CTC evaluation accepts.
MASK_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint8))


def frame_digits(n_frames: int) -> int:
    """Digits used in CTC frame file names: 3, or 4 when there are more than 1000 frames."""
    return 3 if n_frames <= 1000 else 4


def _imwrite(path: Path, arr: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, arr)


# ---------------------------------------------------------------------------- track files
def parse_track_file(path: str | os.PathLike) -> tuple[np.ndarray, list[int], list[str]]:
    """Parse a CTC track file (``L B E P`` per line) without raising.

    Blank lines are ignored; fields may be separated by spaces or tabs.

    Args:
        path: The ``man_track.txt`` / ``res_track.txt`` file.

    Returns:
        The ``(n, 4)`` int64 table of the well-formed lines, the 1-based line number of each
        table row, and one problem per malformed line (or a missing file).
    """
    p = Path(path)
    if not p.is_file():
        return np.zeros((0, 4), dtype=np.int64), [], [f"{p.name} is missing"]
    rows: list[list[int]] = []
    lines: list[int] = []
    problems: list[str] = []
    text = p.read_text(encoding="utf-8", errors="replace")
    for i, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [int(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 4 or len(fields) != 4:
            problems.append(
                f"{p.name} line {i}: expected 4 integers 'L B E P', got {line.strip()!r}"
            )
            continue
        rows.append(values)
        lines.append(i)
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    return table, lines, problems


def read_track_file(path: str | os.PathLike) -> np.ndarray:
    """Read a CTC track file into an ``(n, 4)`` int64 table ``L B E P``.

    Args:
        path: The track file.

    Returns:
        The table.

    Raises:
        ValidationError: Listing every malformed line (or a missing file).
    """
    table, _, problems = parse_track_file(path)
    if problems:
        raise ValidationError(problems, context=str(path))
    return table


def write_track_file(path: str | os.PathLike, tracks: np.ndarray) -> None:
    """Write an ``(n, 4)`` table as CTC ``L B E P`` lines.

    Args:
        path: Destination file.
        tracks: The track table.
    """
    tab = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    text = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in tab.tolist())
    Path(path).write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------- frames
def _scan(folder: Path, pattern: re.Pattern[str]) -> tuple[dict[int, Path], list[str]]:
    """Map frame numbers to files; report duplicates and unexpected TIFFs."""
    found: dict[int, Path] = {}
    problems: list[str] = []
    for entry in sorted(os.listdir(folder)):
        m = pattern.match(entry)
        if m is None:
            if entry.lower().endswith((".tif", ".tiff")):
                problems.append(f"unexpected TIFF file {entry} (expected {pattern.pattern})")
            continue
        t = int(m.group(1))
        if t in found:
            problems.append(f"{found[t].name} and {entry} both give frame {t}")
            continue
        found[t] = folder / entry
    return found, problems


def _read_stack(
    files: dict[int, Path],
    n_frames: int,
    shape: tuple[int, ...] | None,
    name_of: Callable[[int], str],
) -> tuple[np.ndarray, list[str], list[int]]:
    """Read frames ``0..n_frames-1`` into one stack; report missing, extra and bad frames."""
    problems: list[str] = []
    skip: list[int] = []
    missing = [t for t in range(n_frames) if t not in files]
    if missing:
        from cellbench.tracks import format_ranges

        names = ", ".join(name_of(t) for t in missing[:5]) + (", ..." if len(missing) > 5 else "")
        problems.append(
            f"{len(missing)} frame file(s) missing: frames {format_ranges(missing)} ({names})"
        )
        skip.extend(missing)
    for t in sorted(files):
        if t >= n_frames:
            problems.append(
                f"{files[t].name} (frame {t}) is beyond the {n_frames} frames of the sequence "
                f"(frames 0..{n_frames - 1})"
            )
    stack: np.ndarray | None = None
    for t in range(n_frames):
        path = files.get(t)
        if path is None:
            continue
        try:
            arr = read_tiff(path)
        except Exception as err:  # unreadable or not a TIFF: report, keep going
            problems.append(f"{path.name} (frame {t}): cannot be read as a TIFF ({err})")
            skip.append(t)
            continue
        bad = False
        if arr.dtype not in MASK_DTYPES:
            problems.append(
                f"{path.name} (frame {t}): dtype {arr.dtype}, expected uint16 "
                "(CTC masks are 16-bit unsigned integer images)"
            )
            bad = True
        expected = shape if shape is not None else (stack.shape[1:] if stack is not None else None)
        if expected is not None and arr.shape != tuple(expected):
            problems.append(
                f"{path.name} (frame {t}): shape {arr.shape}, expected {tuple(expected)}"
            )
            bad = True
        elif arr.ndim not in (2, 3):
            problems.append(
                f"{path.name} (frame {t}): {arr.ndim} dims, expected a 2D (Y, X) or 3D (Z, Y, X) "
                "label image"
            )
            bad = True
        if bad:
            skip.append(t)
            continue
        if stack is None:
            stack = np.zeros((n_frames, *arr.shape), dtype=np.uint16)
        stack[t] = arr
    if stack is None:
        stack = np.zeros((n_frames, *(shape or (0, 0))), dtype=np.uint16)
    return stack, problems, sorted(set(skip))


def _namer(prefix: str, files: dict[int, Path], digits: int) -> Callable[[int], str]:
    def name_of(t: int) -> str:
        path = files.get(t)
        return path.name if path is not None else f"{prefix}{t:0{digits}d}.tif"

    return name_of


# ---------------------------------------------------------------------------- readers
def _read_seg(seg_dir: Path, n_frames: int, shape: tuple[int, ...]) -> tuple[list, list[str]]:
    annotations: list[SegAnnotation] = []
    problems: list[str] = []
    for entry in sorted(os.listdir(seg_dir)):
        m = _SEG_RE.match(entry)
        if m is None:
            if entry.lower().endswith((".tif", ".tiff")):
                problems.append(f"SEG: unexpected TIFF file {entry}")
            continue
        t = int(m.group(1))
        z = int(m.group(2)) if m.group(2) is not None else None
        where = f"SEG/{entry} (frame {t}" + (f", slice z={z})" if z is not None else ")")
        try:
            arr = read_tiff(seg_dir / entry)
        except Exception as err:
            problems.append(f"{where}: cannot be read as a TIFF ({err})")
            continue
        expected = shape if z is None else shape[1:]
        if arr.dtype not in MASK_DTYPES:
            problems.append(f"{where}: dtype {arr.dtype}, expected uint16")
            continue
        if z is not None and len(shape) != 3:
            problems.append(f"{where}: a slice annotation needs 3D frames, frames are {shape}")
            continue
        if arr.shape != expected:
            problems.append(f"{where}: shape {arr.shape}, expected {expected}")
            continue
        if not 0 <= t < n_frames:
            problems.append(f"{where}: frame {t} is outside 0..{n_frames - 1}")
            continue
        if z is not None and not 0 <= z < shape[0]:
            problems.append(f"{where}: slice {z} is outside 0..{shape[0] - 1}")
            continue
        annotations.append(SegAnnotation(frame=t, labels=arr, z=z))
    return annotations, problems


def read_ctc_ground_truth(
    gt_dir: str | os.PathLike, *, seg: bool = True, validate: bool = True
) -> TrackedSequence:
    """Read a CTC ground-truth folder ``<seq>_GT`` (``TRA`` and, if present, ``SEG``).

    Args:
        gt_dir: The ``<seq>_GT`` folder.
        seg: Whether to read the sparse ``SEG`` annotations (if the folder exists).
        validate: Whether to check the CTC rules (raise on any problem).

    Returns:
        The ground truth, with its SEG annotations.

    Raises:
        ValidationError: Listing every problem found, with file names and frames.
    """
    gt = Path(gt_dir)
    tra = gt / "TRA"
    if not tra.is_dir():
        raise ValidationError(
            [f"no TRA folder in {gt} (expected {gt}/TRA/man_track###.tif)"], str(gt)
        )
    files, problems = _scan(tra, _TRA_RE)
    if not files:
        raise ValidationError([f"no man_track###.tif files in {tra}"], str(gt))
    n_frames = max(files) + 1
    name_of = _namer("man_track", files, frame_digits(n_frames))
    stack, more, skip = _read_stack(files, n_frames, None, name_of)
    problems += more
    table, lines, more = parse_track_file(tra / GT_TRACK_FILE)
    problems += more
    annotations: list[SegAnnotation] = []
    if seg and (gt / "SEG").is_dir():
        annotations, more = _read_seg(gt / "SEG", n_frames, stack.shape[1:])
        problems += more
    seq = TrackedSequence(labels=stack, tracks=table, seg=tuple(annotations), name=gt.name)
    if validate:
        problems += seq.problems(
            frame_name=name_of,
            row_name=lambda i: f"{GT_TRACK_FILE} line {lines[i]}",
            table_name=GT_TRACK_FILE,
            skip_frames=skip,
        )
        if problems:
            raise ValidationError(problems, context=str(gt))
    return seq


def ctc_result_problems(
    res_dir: str | os.PathLike,
    n_frames: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> tuple[TrackedSequence | None, list[str]]:
    """Read a CTC result folder and list every problem (never raises for bad content).

    Args:
        res_dir: The ``<seq>_RES`` folder.
        n_frames: Expected number of frames (from the ground truth); default: the highest
            frame number found plus one.
        shape: Expected spatial shape of each mask (from the ground truth).

    Returns:
        The sequence as read (``None`` if nothing could be read) and the problems.
    """
    res = Path(res_dir)
    if not res.is_dir():
        return None, [f"result folder {res} does not exist"]
    files, problems = _scan(res, _RES_RE)
    if n_frames is None:
        if not files:
            return None, [*problems, f"no mask###.tif files in {res}"]
        n_frames = max(files) + 1
    name_of = _namer("mask", files, frame_digits(n_frames))
    stack, more, skip = _read_stack(files, n_frames, shape, name_of)
    problems += more
    table, lines, more = parse_track_file(res / RES_TRACK_FILE)
    problems += more
    seq = TrackedSequence(labels=stack, tracks=table, name=res.name)
    problems += seq.problems(
        frame_name=name_of,
        row_name=lambda i: f"{RES_TRACK_FILE} line {lines[i]}",
        table_name=RES_TRACK_FILE,
        skip_frames=skip,
    )
    return seq, problems


def read_ctc_result(
    res_dir: str | os.PathLike,
    n_frames: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> TrackedSequence:
    """Read and validate a CTC result folder ``<seq>_RES``.

    Args:
        res_dir: The result folder (``mask###.tif`` and ``res_track.txt``).
        n_frames: Expected number of frames (pass the ground truth's).
        shape: Expected spatial shape of each mask (pass the ground truth's).

    Returns:
        The result sequence.

    Raises:
        ValidationError: Listing every problem, each naming the file and frame.
    """
    seq, problems = ctc_result_problems(res_dir, n_frames=n_frames, shape=shape)
    if problems or seq is None:
        raise ValidationError(problems, context=str(res_dir))
    return seq


def validate_ctc_result(
    res_dir: str | os.PathLike,
    n_frames: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> None:
    """Check a CTC result folder against the CTC rules.

    Args:
        res_dir: The ``<seq>_RES`` folder.
        n_frames: Expected number of frames.
        shape: Expected spatial shape.

    Raises:
        ValidationError: Listing every problem found.
    """
    read_ctc_result(res_dir, n_frames=n_frames, shape=shape)


# ---------------------------------------------------------------------------- writers
def _check_writable(seq: TrackedSequence, what: str) -> np.ndarray:
    lab = seq.labels
    if lab.dtype.kind not in "ui" or lab.ndim not in (3, 4):
        raise ValidationError(
            [f"labels must be integer (T, [Z,] Y, X), got {lab.dtype} {lab.shape}"], what
        )
    hi = int(lab.max(initial=0))
    if hi > np.iinfo(np.uint16).max or (lab.size and int(lab.min()) < 0):
        raise ValidationError(
            [f"label ids must fit in uint16 (0..65535) for CTC files, max id is {hi}"], what
        )
    return lab


def write_ctc_result(
    seq: TrackedSequence, res_dir: str | os.PathLike, digits: int | None = None
) -> Path:
    """Write a sequence as a CTC result folder (``mask###.tif`` + ``res_track.txt``).

    Args:
        seq: The sequence (ids must fit in uint16).
        res_dir: Destination folder (created).
        digits: Frame-number digits; default 3, or 4 beyond 1000 frames.

    Returns:
        The folder.
    """
    out = Path(res_dir)
    lab = _check_writable(seq, str(out))
    out.mkdir(parents=True, exist_ok=True)
    d = digits or frame_digits(seq.n_frames)
    for t in range(seq.n_frames):
        _imwrite(out / f"mask{t:0{d}d}.tif", lab[t].astype(np.uint16, copy=False))
    write_track_file(out / RES_TRACK_FILE, seq.tracks)
    return out


def write_ctc_ground_truth(
    seq: TrackedSequence, gt_dir: str | os.PathLike, digits: int | None = None
) -> Path:
    """Write a sequence as a CTC ground-truth folder (``TRA`` and, if annotated, ``SEG``).

    Slice annotations of 3D frames are written as ``man_seg_TTT_ZZZ.tif``.

    Args:
        seq: The ground truth (ids must fit in uint16).
        gt_dir: Destination ``<seq>_GT`` folder (created).
        digits: Frame-number digits; default 3, or 4 beyond 1000 frames.

    Returns:
        The folder.
    """
    out = Path(gt_dir)
    lab = _check_writable(seq, str(out))
    d = digits or frame_digits(seq.n_frames)
    tra = out / "TRA"
    tra.mkdir(parents=True, exist_ok=True)
    for t in range(seq.n_frames):
        _imwrite(tra / f"man_track{t:0{d}d}.tif", lab[t].astype(np.uint16, copy=False))
    write_track_file(tra / GT_TRACK_FILE, seq.tracks)
    _write_seg(out / "SEG", seq.seg, d)
    return out


def _write_seg(seg: Path, annotations: Sequence[SegAnnotation], d: int) -> None:
    """``man_seg###.tif`` per annotated frame, ``man_seg_###_ZZZ.tif`` per annotated slice."""
    if not annotations:
        return
    seg.mkdir(parents=True, exist_ok=True)
    for a in annotations:
        name = (
            f"man_seg{a.frame:0{d}d}.tif"
            if a.z is None
            else (f"man_seg_{a.frame:0{d}d}_{a.z:03d}.tif")
        )
        _imwrite(seg / name, np.asarray(a.labels).astype(np.uint16, copy=False))


# ---------------------------------------------------------------------------- scoring
def score_ctc_folders(
    gt_dir: str | os.PathLike,
    res_dir: str | os.PathLike,
    metrics: Sequence[Metric[TrackingMatch, Any]] | None = None,
    sample_id: str | None = None,
    *,
    linking_only: bool = False,
) -> dict[str, MetricResult]:
    """Score one CTC result folder against its ground-truth folder.

    Args:
        gt_dir: The ``<seq>_GT`` folder (``TRA`` and optional ``SEG``).
        res_dir: The ``<seq>_RES`` folder (``mask###.tif`` and ``res_track.txt``).
        metrics: Tracking metrics to compute (default: :class:`CTCMeasures` and
            :class:`DivisionMetrics`).
        sample_id: Identifier of the sequence in the results (default: the GT folder name).
        linking_only: The segmentation was given (the CTC linking benchmark): refuse a result
            whose masks are not the reference's, relabelled, before scoring (see
            :func:`cellbench.metrics.tracking.linking.given_segmentation_problems`).

    Returns:
        ``{metric.name: MetricResult}``.

    Raises:
        ValidationError: If either folder breaks the CTC rules, or, linking only, the masks
            differ from the reference's (every problem listed).
    """
    gt = read_ctc_ground_truth(gt_dir)
    res = read_ctc_result(res_dir, n_frames=gt.n_frames, shape=gt.spatial_shape)
    match = match_tracking(gt, res, validate=False)
    if linking_only:
        from cellbench.metrics.tracking.linking import given_segmentation_problems

        problems = given_segmentation_problems(match)
        if problems:
            raise ValidationError(problems, context=f"{res_dir} (linking only)")
    chosen: list[Metric[TrackingMatch, Any]] = (
        list(metrics) if metrics is not None else [CTCMeasures(), DivisionMetrics()]
    )
    sid = sample_id or os.path.basename(os.path.normpath(str(gt_dir)))
    return {m.name: m.compute([match], sample_ids=[sid]) for m in chosen}


# ---------------------------------------------------------------------------- dataset folders
#: Sidecar written beside the CTC folders by :func:`write_ctc_dataset`: what the CTC layout
#: has no place for (split, channel names, pixel sizes, metadata), so a store -> CTC -> store
#: round trip is exact. CTC tools ignore it; without it the reader uses its defaults.
SIDECAR = "cellbench.json"


def sidecar_record(sample: Sample) -> dict[str, Any]:
    """What a :data:`SIDECAR` keeps of a sequence that the track files cannot hold.

    The same record as every image-folder format's sidecar (:func:`cellbench.formats.images.
    sample_record`): axes, split, channel names, pixel sizes and metadata.
    """
    from cellbench.formats.images import sample_record

    return sample_record(sample)


def write_sidecar(out: Path, records: dict[str, dict[str, Any]]) -> None:
    """Write the :data:`SIDECAR` of a dataset folder (``{"sequences": {name: record}}``)."""
    (out / SIDECAR).write_text(json.dumps({"sequences": records}, indent=1), encoding="utf-8")


_IMG_RE = re.compile(r"^t(\d+)\.tiff?$")
_SEG_CHOICES = ("gold", "silver", "none")


def _sequences(src: Path) -> list[str]:
    """Sequence names of a CTC dataset folder: ``01``, ``02`` ... (folders with images)."""
    return sorted(
        p.name
        for p in src.iterdir()
        if p.is_dir()
        and not p.name.endswith(("_GT", "_ST", "_RES"))
        and any(_IMG_RE.match(f) for f in os.listdir(p))
    )


def read_sidecar(src: Path) -> tuple[dict[str, Any], list[str]]:
    """The per-sequence records of a :data:`SIDECAR` file (empty without one), and problems."""
    import json

    path = src / SIDECAR
    if not path.is_file():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        seqs = data["sequences"]
        if not isinstance(seqs, dict):
            raise TypeError("'sequences' is not an object")
    except (ValueError, KeyError, TypeError) as err:
        return {}, [f"{SIDECAR}: unreadable ({err}); expected {{'sequences': {{name: {{...}}}}}}"]
    return seqs, []


def _frame_pieces(frame: np.ndarray) -> list[int]:
    """Labels of one frame made of more than one connected piece (full connectivity)."""
    from skimage.measure import label as cc_label

    if not frame.any():
        return []
    comps = cc_label(frame, background=0, connectivity=frame.ndim)
    pairs = np.unique(np.stack([frame[comps > 0].astype(np.int64), comps[comps > 0]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    return ids[counts > 1].tolist()


class _SequenceReader:
    """One CTC sequence (``<seq>/``, ``<seq>_GT``, ``<seq>_ST``), read frame by frame.

    The folders are scanned and the track table, file names and first frames checked when it is
    made; :meth:`sample` gives a :class:`~cellbench.store.sample.Sample` whose ``image``,
    ``instances`` and ``seg`` are :class:`~cellbench.store.frames.FrameSource` objects, so the
    store writer holds one frame at a time. Each frame is checked as it is read (file, dtype,
    shape, and the ids present in each TRA frame are kept); :meth:`finish` reads whatever the
    consumer did not and checks the track table against the ids of every frame, giving every
    problem of the sequence at once, each naming the folder, file and frame.
    """

    def __init__(self, src: Path, name: str, seg: str, check: bool) -> None:
        self.name = name
        self.seg_choice = seg
        self.check = check
        self.seq_dir = src / name
        self.gt_dir, self.st_dir = src / f"{name}_GT", src / f"{name}_ST"
        self.upfront: list[str] = []  # problems found before reading any frame
        self.img_problems: dict[int, str] = {}
        self.gt_problems: list[str] = []
        self.mask_problems: dict[int, str] = {}
        self.seg_problems: dict[tuple[int, int], str] = {}
        self.pieces: dict[int, str] = {}
        self.ids: dict[int, np.ndarray] = {}
        self.bad_masks: set[int] = set()
        self.seg_read: set[int] = set()
        self.img_read: set[int] = set()
        self.n_frames: int | None = None
        self.has_truth = (self.gt_dir / "TRA").is_dir()
        self.tra_files: dict[int, Path] = {}
        self.mask_shape: tuple[int, ...] | None = None
        self.table = np.zeros((0, 4), dtype=np.int64)
        self.lines: list[int] = []
        if self.has_truth:
            self._scan_truth()
        self._scan_images()
        self.seg_files: dict[int, dict[int, Path]] = {}  # frame -> {z (-1 whole): file}
        self.seg_dir: Path | None = None
        if seg == "gold" and self.has_truth and (self.gt_dir / "SEG").is_dir():
            self.seg_dir, self.seg_prefix = self.gt_dir / "SEG", f"{self.gt_dir.name}: SEG"
        elif seg == "silver":
            if not (self.st_dir / "SEG").is_dir():
                self.upfront.append(f"{self.st_dir.name}/SEG: missing (silver truth asked for)")
            elif self.image_shape is not None:
                self.seg_dir, self.seg_prefix = self.st_dir / "SEG", f"{self.st_dir.name}/SEG"
        if self.seg_dir is not None:
            self._scan_seg()
        if (
            self.image_shape is not None
            and self.has_truth
            and self.mask_shape is not None
            and self.mask_shape != self.image_shape[1:]
        ):
            self.upfront.append(
                f"{self.gt_dir.name}/TRA: masks are {(self.n_frames, *self.mask_shape)} "
                f"(T, [Z,] Y, X), images in {name}/ are {(self.n_img, *self.image_shape[1:])}"
            )

    # ------------------------------------------------------------------ scanning
    def _scan_truth(self) -> None:
        tra = self.gt_dir / "TRA"
        files, problems = _scan(tra, _TRA_RE)
        self.gt_problems += problems
        if not files:
            self.gt_problems.append(f"no man_track###.tif files in {tra}")
            self.has_truth = False
            return
        self.tra_files = files
        self.n_frames = max(files) + 1
        self.name_of = _namer("man_track", files, frame_digits(self.n_frames))
        missing = [t for t in range(self.n_frames) if t not in files]
        if missing:
            from cellbench.tracks import format_ranges

            names = ", ".join(self.name_of(t) for t in missing[:5]) + (
                ", ..." if len(missing) > 5 else ""
            )
            self.gt_problems.append(
                f"{len(missing)} frame file(s) missing: frames {format_ranges(missing)} ({names})"
            )
            self.bad_masks.update(missing)
        self.table, self.lines, more = parse_track_file(tra / GT_TRACK_FILE)
        self.gt_problems += more
        for t in sorted(files):  # the first good frame fixes the shape the others must have
            arr = self._mask(t)
            if arr is not None:
                self.mask_shape = arr.shape
                break

    def _scan_images(self) -> None:
        seq_dir = self.seq_dir
        files, problems = _scan(seq_dir, _IMG_RE)
        self.upfront += [f"{seq_dir.name}/{p}" for p in problems]
        self.image_shape: tuple[int, ...] | None = None
        self.image_dtype: np.dtype | None = None
        if not files:
            self.upfront.append(f"{seq_dir.name}: no t###.tif frames")
            self.img_files: dict[int, Path] = {}
            self.n_img = 0
            return
        n = max(files) + 1 if self.n_frames is None else self.n_frames
        for t in sorted(files):
            if t >= n:
                self.upfront.append(
                    f"{seq_dir.name}/{files[t].name}: frame {t} is beyond the {n} frames of "
                    "the ground truth"
                )
        files = {t: f for t, f in files.items() if t < n}
        missing = [t for t in range(n) if t not in files]
        if missing:
            from cellbench.tracks import format_ranges

            self.upfront.append(
                f"{seq_dir.name}: {len(missing)} frame file(s) missing: frames "
                f"{format_ranges(missing)}"
            )
        self.img_files, self.n_img = files, n
        for t in sorted(files):  # the first good frame fixes dtype and shape
            where = f"{seq_dir.name}/{files[t].name} (frame {t})"
            try:
                arr = read_tiff(files[t])
            except Exception as err:
                self.img_problems[t] = f"{where}: cannot be read as a TIFF ({err})"
                continue
            if arr.dtype.kind not in "uif":
                self.img_problems[t] = f"{where}: dtype {arr.dtype}, expected a numeric image"
                continue
            if arr.ndim not in (2, 3):
                self.img_problems[t] = f"{where}: {arr.ndim} dims, expected (Y, X) or (Z, Y, X)"
                continue
            self.image_shape, self.image_dtype = (1, *arr.shape), arr.dtype
            break

    def _scan_seg(self) -> None:
        assert self.seg_dir is not None
        shape = self.mask_shape if self.seg_choice == "gold" else self.image_shape[1:]  # type: ignore[index]
        n_frames = self.n_frames if self.seg_choice == "gold" else self.n_img
        for entry in sorted(os.listdir(self.seg_dir)):
            m = _SEG_RE.match(entry)
            if m is None:
                if entry.lower().endswith((".tif", ".tiff")):
                    self.upfront.append(f"{self.seg_prefix}: unexpected TIFF file {entry}")
                continue
            t = int(m.group(1))
            z = int(m.group(2)) if m.group(2) is not None else None
            where = f"{self.seg_prefix}/{entry} (frame {t}" + (
                f", slice z={z})" if z is not None else ")"
            )
            if shape is not None and z is not None and len(shape) != 3:
                self.upfront.append(
                    f"{where}: a slice annotation needs 3D frames, frames are {shape}"
                )
            elif n_frames is not None and not 0 <= t < n_frames:
                self.upfront.append(f"{where}: frame {t} is outside 0..{n_frames - 1}")
            elif shape is not None and z is not None and not 0 <= z < shape[0]:
                self.upfront.append(f"{where}: slice {z} is outside 0..{shape[0] - 1}")
            else:
                self.seg_files.setdefault(t, {})[-1 if z is None else z] = self.seg_dir / entry

    # ------------------------------------------------------------------ frames
    def _mask(self, t: int) -> np.ndarray | None:
        """TRA frame ``t`` as uint16 (None when missing or bad: the problem is recorded)."""
        path = self.tra_files.get(t)
        if path is None:
            return None
        try:
            arr = read_tiff(path)
        except Exception as err:  # unreadable or not a TIFF: report, keep going
            self.mask_problems[t] = f"{path.name} (frame {t}): cannot be read as a TIFF ({err})"
            self.bad_masks.add(t)
            return None
        problems = []
        if arr.dtype not in MASK_DTYPES:
            problems.append(
                f"{path.name} (frame {t}): dtype {arr.dtype}, expected uint16 "
                "(CTC masks are 16-bit unsigned integer images)"
            )
        if self.mask_shape is not None and arr.shape != self.mask_shape:
            problems.append(
                f"{path.name} (frame {t}): shape {arr.shape}, expected {self.mask_shape}"
            )
        elif arr.ndim not in (2, 3):
            problems.append(
                f"{path.name} (frame {t}): {arr.ndim} dims, expected a 2D (Y, X) or 3D (Z, Y, X) "
                "label image"
            )
        if problems:
            self.mask_problems[t] = "\n".join(problems)
            self.bad_masks.add(t)
            return None
        arr = arr.astype(np.uint16, copy=False)
        if t not in self.ids:
            from cellbench.metrics.matching import present_ids

            self.ids[t] = present_ids(arr)
            if self.check:
                split = _frame_pieces(arr)
                if split:
                    d = frame_digits(self.n_frames or 1)
                    self.pieces[t] = (
                        f"{self.gt_dir.name}/TRA/man_track{t:0{d}d}.tif (frame {t}): label(s) "
                        f"{', '.join(map(str, split[:10]))} are in more than one piece "
                        "(expected one connected object per label)"
                    )
        return arr

    def _read_mask(self, t: int) -> np.ndarray:
        arr = self._mask(t)
        return np.zeros(self.mask_shape, np.uint16) if arr is None else arr  # type: ignore[arg-type]

    def _read_image(self, t: int) -> np.ndarray:
        assert self.image_shape is not None and self.image_dtype is not None
        self.img_read.add(t)
        path = self.img_files.get(t)
        if path is None:
            return np.zeros(self.image_shape, self.image_dtype)
        where = f"{self.seq_dir.name}/{path.name} (frame {t})"
        try:
            arr = read_tiff(path)
        except Exception as err:
            self.img_problems[t] = f"{where}: cannot be read as a TIFF ({err})"
            return np.zeros(self.image_shape, self.image_dtype)
        if arr.dtype.kind not in "uif":
            self.img_problems[t] = f"{where}: dtype {arr.dtype}, expected a numeric image"
        elif arr.shape != self.image_shape[1:] or arr.dtype != self.image_dtype:
            self.img_problems[t] = (
                f"{where}: {arr.dtype} {arr.shape}, expected {self.image_dtype} "
                f"{self.image_shape[1:]} like the first frame"
            )
        else:
            return arr[None]  # the channel axis, as a view (no copy of the frame)
        return np.zeros(self.image_shape, self.image_dtype)

    def _read_seg(self, t: int) -> np.ndarray:
        shape = self.image_shape[1:] if self.image_shape is not None else self.mask_shape
        out = np.zeros(shape, np.uint16)  # type: ignore[arg-type]
        self.seg_read.add(t)
        for z, path in sorted(self.seg_files.get(t, {}).items()):
            where = f"{self.seg_prefix}/{path.name} (frame {t}" + (
                f", slice z={z})" if z >= 0 else ")"
            )
            expected = shape if z < 0 else shape[1:]
            try:
                arr = read_tiff(path)
            except Exception as err:
                self.seg_problems[(t, z)] = f"{where}: cannot be read as a TIFF ({err})"
                continue
            if arr.dtype not in MASK_DTYPES:
                self.seg_problems[(t, z)] = f"{where}: dtype {arr.dtype}, expected uint16"
            elif arr.shape != tuple(expected):
                self.seg_problems[(t, z)] = f"{where}: shape {arr.shape}, expected {expected}"
            elif z < 0:
                out[...] = arr
            else:
                out[z] = arr
        return out

    # ------------------------------------------------------------------ results
    def sample(self, meta: dict[str, Any], split: str) -> Sample:
        """The lazy sample (call only when :meth:`problems` is empty so far)."""
        from cellbench.store.frames import FrameSource
        from cellbench.store.sample import Sample

        assert self.image_shape is not None and self.image_dtype is not None
        n = self.n_img
        info = meta.get(self.name, {})
        image = FrameSource((n, *self.image_shape), self.image_dtype, self._read_image)
        sample = Sample(
            id=self.name,
            image=image,
            axes=str(info.get("axes", "tczyx" if len(self.image_shape) == 4 else "tcyx")),
            channel_names=list(info.get("channel_names", [])),
            split=str(info.get("split", split)),
            pixel_size={k: float(v) for k, v in info.get("pixel_size", {}).items()},
            metadata=dict(info.get("metadata", {})),
        )
        if self.has_truth and self.mask_shape is not None:
            sample.instances = FrameSource((n, *self.mask_shape), np.uint16, self._read_mask)
            sample.tracks = self.table
        if self.seg_files:
            rows = sorted((t, z) for t, zs in self.seg_files.items() for z in zs)
            sample.seg = FrameSource((n, *self.image_shape[1:]), np.uint16, self._read_seg)
            sample.seg_annotated = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return sample

    def read_all(self) -> None:
        """Read every frame not read yet (to check it)."""
        if self.image_shape is not None:
            for t in sorted(self.img_files):
                if t not in self.img_read:
                    self._read_image(t)
        for t in sorted(self.tra_files):
            if t not in self.ids and t not in self.bad_masks:
                self._mask(t)
        if self.image_shape is not None or self.mask_shape is not None:
            for t in sorted(self.seg_files):
                if t not in self.seg_read:
                    self._read_seg(t)

    def problems(self) -> list[str]:
        """Every problem found so far, image folder first, then the truth, then SEG."""
        out: list[str] = []
        img = [p for p in self.upfront if p.startswith(f"{self.seq_dir.name}/")]
        img += [p for p in self.upfront if p.startswith(f"{self.seq_dir.name}:")]
        out += img + [self.img_problems[t] for t in sorted(self.img_problems)]
        gt = list(self.gt_problems)
        for t in sorted(self.mask_problems):
            gt += self.mask_problems[t].split("\n")
        if (
            self.has_truth
            and self.mask_shape is not None
            and len(self.ids) + len(self.bad_masks) >= (self.n_frames or 0)
        ):
            ids = [self.ids.get(t, np.zeros(0, np.int64)) for t in range(self.n_frames or 0)]
            gt += track_table_problems(
                self.table,
                ids,
                self.n_frames or 0,
                frame_name=self.name_of,
                row_name=lambda i: f"{GT_TRACK_FILE} line {self.lines[i]}",
                table_name=GT_TRACK_FILE,
                skip_frames=sorted(self.bad_masks),
            )
        out += [f"{self.gt_dir.name}: {p}" for p in gt]
        rest = [p for p in self.upfront if p not in img]
        out += rest + [self.seg_problems[k] for k in sorted(self.seg_problems)]
        out += [self.pieces[t] for t in sorted(self.pieces)]
        return out


def _read_sequence(
    src: Path, name: str, seg: str, meta: dict[str, Any], split: str, check: bool
) -> tuple[Any, list[str]]:
    """Every problem of one sequence, all frames read one at a time (``check``: pieces too)."""
    reader = _SequenceReader(src, name, seg, check)
    reader.read_all()
    problems = reader.problems()
    if problems or reader.image_shape is None:
        return None, problems
    sample = reader.sample(meta, split)  # what the sidecar says must fit the frames
    return None, [f"sample {sample.id!r}: {p}" for p in sample.problems()]


def read_ctc_dataset(
    src: str | os.PathLike,
    *,
    seg: str = "gold",
    split: str = "train",
    sequences: Sequence[str] | None = None,
) -> Any:
    """Stream a CTC dataset folder (``01/``, ``01_GT/``, ``01_ST/``, ``02/`` ...) as samples.

    One :class:`~cellbench.store.sample.Sample` per sequence (id = the sequence name), image
    ``(T, 1, [Z,] Y, X)`` from ``<seq>/t###.tif``; when ``<seq>_GT/TRA`` exists, ``instances``
    are the TRA markers and ``tracks`` the ``man_track.txt`` table, and SEG truth is kept as
    sparse ``seg`` + ``seg_annotated`` (only the annotated frames or z slices). Sequences
    without ground truth (CTC test sets) give image-only samples.

    Args:
        src: The dataset folder.
        seg: ``gold`` (``<seq>_GT/SEG``, manual and sparse), ``silver`` (``<seq>_ST/SEG``,
            computer-generated from several top methods, every frame) or ``none``.
        split: Split of every sample (a ``cellbench.json`` sidecar overrides it).
        sequences: Only these sequences (default: all); a string is split at commas.

    Yields:
        One sample per sequence, in name order. Problems of one sequence do not stop the check
        of the others: once any is found nothing more is yielded, and every problem is raised
        together at the end.

    Raises:
        ValidationError: Listing every problem of every sequence (file, frame, expectation).
    """
    root = Path(src)
    names = _listing(root, seg, sequences)
    meta, _ = read_sidecar(root)
    problems: list[str] = []
    for name in names:
        reader = _SequenceReader(root, name, seg, check=False)
        sample, more = _upfront(reader, meta, split)
        if more or problems or sample is None:
            # Not yielded: check every frame now, so all problems are listed together.
            reader.read_all()
            problems += _sequence_problems(reader, more)
            continue
        yield sample  # the consumer reads its frames one at a time ...
        reader.read_all()  # ... and whatever it did not read is checked here
        problems += reader.problems()
    if problems:
        raise ValidationError(problems, context=str(root))


def _upfront(
    reader: _SequenceReader, meta: dict[str, Any], split: str
) -> tuple[Sample | None, list[str]]:
    """The lazy sample of a sequence and the problems found before any frame is read."""
    problems = reader.problems()
    if reader.image_shape is None and not problems:
        problems = [f"{reader.seq_dir.name}/: no readable t###.tif frame"]
    if problems:
        return None, problems
    sample = reader.sample(meta, split)  # what the sidecar says must fit the frames
    return sample, [f"sample {sample.id!r}: {p}" for p in sample.problems()]


def _sequence_problems(reader: _SequenceReader, upfront: list[str]) -> list[str]:
    """Every problem of a fully read sequence, the up-front ones not repeated."""
    found = reader.problems()
    return found + [p for p in upfront if p not in found]


def _listing(root: Path, seg: str, sequences: Sequence[str] | str | None) -> list[str]:
    """The sequences to read; raises what stops reading (bad option, folder or sidecar)."""
    if seg not in _SEG_CHOICES:
        raise ValidationError([f"seg={seg!r}: expected one of {', '.join(_SEG_CHOICES)}"])
    if not root.is_dir():
        raise ValidationError([f"{root}: not a folder (expected a CTC dataset folder)"])
    _, problems = read_sidecar(root)
    if problems:
        raise ValidationError(problems, context=str(root))
    names = _sequences(root)
    if isinstance(sequences, str):  # from the command line: "01,02"
        sequences = [s.strip() for s in sequences.split(",") if s.strip()]
    if sequences is not None:
        unknown = sorted(set(sequences) - set(names))
        if unknown:
            raise ValidationError(
                [
                    f"sequence {u!r} not found (found: {', '.join(names) or 'none'})"
                    for u in unknown
                ],
                context=str(root),
            )
        names = [n for n in names if n in set(sequences)]
    if not names:
        raise ValidationError(
            [f"{root}: no sequence folder with t###.tif frames (expected 01/, 02/, ...)"]
        )
    return names


def ctc_items(
    src: str | os.PathLike,
    *,
    seg: str = "gold",
    split: str = "train",
    sequences: Sequence[str] | str | None = None,
) -> ItemList:
    """The sequence names of a CTC dataset folder (the per-item listing; ``Format.items``).

    Takes :func:`read_ctc_dataset`'s options and raises what it raises before reading.
    """
    root = Path(src)
    return ItemList(_listing(root, seg, sequences), [], str(root))


def read_ctc_item(
    src: str | os.PathLike,
    item: str,
    *,
    seg: str = "gold",
    split: str = "train",
    sequences: Sequence[str] | str | None = None,
) -> tuple[Any, list[str]]:
    """Sequence ``item`` of a CTC dataset folder as a sample, and its problems.

    Every frame is read once to check it before the sample is returned (a task writes what it
    gets, so problems cannot wait until after the write); the sample then reads its frames
    again, one at a time, as they are written.
    """
    root = Path(src)
    meta, _ = read_sidecar(root)
    reader = _SequenceReader(root, item, seg, check=False)
    sample, more = _upfront(reader, meta, split)
    reader.read_all()
    problems = _sequence_problems(reader, more)
    if problems or sample is None:
        return None, problems
    return sample, []


def ctc_dataset_problems(src: str | os.PathLike, *, seg: str = "gold", **_: Any) -> list[str]:
    """Every problem of a CTC dataset folder, all sequences at once (never raises).

    Checked beyond what reading checks: objects in more than one piece in the TRA masks.

    Args:
        src: The dataset folder.
        seg: Which SEG truth to check (``gold``, ``silver`` or ``none``).

    Returns:
        One line per problem, naming the sequence folder, file and frame.
    """
    root = Path(src)
    if seg not in _SEG_CHOICES:
        return [f"seg={seg!r}: expected one of {', '.join(_SEG_CHOICES)}"]
    if not root.is_dir():
        return [f"{root}: not a folder (expected a CTC dataset folder)"]
    meta, problems = read_sidecar(root)
    names = _sequences(root)
    if not names:
        problems.append(f"{root}: no sequence folder with t###.tif frames (expected 01/, 02/)")
    for name in names:
        problems += _read_sequence(root, name, seg, meta, "train", check=True)[1]
    return problems


def write_ctc_dataset(samples: Any, dest: str | os.PathLike, *, seg: str = "gold") -> None:
    """Write tracking samples as a CTC dataset folder, one sequence per sample.

    ``<id>/t###.tif`` (the image, one channel), ``<id>_GT/TRA`` (instances and the track table)
    and the SEG truth as ``<id>_GT/SEG`` (or ``<id>_ST/SEG`` with ``seg="silver"``), plus the
    :data:`SIDECAR` ``cellbench.json`` (split, channel names, pixel sizes, metadata). Sequence
    folders are named by sample id. ``dest`` must not exist (callers write to a temporary
    folder and rename it).

    Args:
        samples: Tracking samples (image ``tcyx``/``tczyx`` with one channel).
        dest: Destination folder (created).
        seg: Where SEG truth goes: ``gold`` (``_GT/SEG``) or ``silver`` (``_ST/SEG``).

    Raises:
        ValidationError: A sample the CTC layout cannot hold (several channels, no time axis,
            ids beyond uint16), every problem of it listed.
    """
    from cellbench.tracks import seg_annotations

    if seg not in ("gold", "silver"):
        raise ValidationError([f"seg={seg!r}: expected gold or silver"])
    out = Path(dest)
    out.mkdir(parents=True)
    meta: dict[str, Any] = {}
    for sample in samples:
        where = f"sample {sample.id!r}"
        problems = list(sample.problems())
        if "t" not in sample.axes:
            problems.append(f"{where}: axes {sample.axes!r} have no time axis (CTC needs t)")
        elif sample.image.shape[1] != 1:
            problems.append(
                f"{where}: {sample.image.shape[1]} channels; CTC frames hold one channel "
                "(write one channel per dataset)"
            )
        if problems:
            raise ValidationError(problems, context=str(out))
        n_frames = sample.image.shape[0]
        d = frame_digits(n_frames)
        (out / sample.id).mkdir()
        for t in range(n_frames):  # one frame at a time (a lazy sequence is never held whole)
            _imwrite(out / sample.id / f"t{t:0{d}d}.tif", np.asarray(sample.image[t, 0]))
        ann: tuple[SegAnnotation, ...] = ()
        if sample.seg is not None and sample.seg_annotated is not None:
            ann = seg_annotations(sample.seg, sample.seg_annotated)
        if sample.instances is not None and sample.tracks is not None:
            seq = TrackedSequence(
                sample.instances, sample.tracks, seg=ann if seg == "gold" else (), name=sample.id
            )
            write_ctc_ground_truth(seq, out / f"{sample.id}_GT", digits=d)
        if seg == "silver" or sample.instances is None:
            _write_seg(out / f"{sample.id}_{'ST' if seg == 'silver' else 'GT'}" / "SEG", ann, d)
        meta[sample.id] = sidecar_record(sample)
    write_sidecar(out, meta)


FORMAT = Format(
    name="ctc",
    description="Cell Tracking Challenge dataset folder (01/t###.tif, 01_GT/TRA, SEG, 01_ST)",
    tasks=("tracking",),
    read=read_ctc_dataset,
    write=write_ctc_dataset,
    validate=ctc_dataset_problems,
    options={
        "seg": "read: SEG truth gold (01_GT/SEG, sparse, manual), silver (01_ST/SEG) or none; "
        "write: where SEG truth goes, gold (_GT/SEG) or silver (_ST/SEG)",
        "split": "read only: split of every sequence when no cellbench.json says (default train)",
        "sequences": "read only: the sequences to read (default all)",
    },
    items=ctc_items,
    read_item=read_ctc_item,
)


def ctc_archive_samples(
    archive: str | os.PathLike,
    work_dir: str | os.PathLike,
    name: str,
    splits: dict[str, str],
    *,
    seg: str = "gold",
    pixel_size: dict[str, float] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Stream the sequences of a Cell Tracking Challenge training archive (``<NAME>.zip``).

    The archive holds ``<NAME>/01/t###.tif``, ``<NAME>/01_GT/{TRA,SEG}``, optionally
    ``<NAME>/01_ST/SEG``, and the same for ``02``. It is extracted into ``work_dir`` (one
    sequence is held in memory at a time) and read with :func:`read_ctc_dataset`.

    Args:
        archive: The zip file.
        work_dir: Scratch folder (the recipe context's).
        name: The dataset name, the archive's top folder (e.g. ``Fluo-N2DH-GOWT1``).
        splits: ``{sequence: split}``; every sequence of the archive must be listed.
        seg: SEG truth to keep (``gold``, ``silver`` or ``none``).
        pixel_size: Physical sizes to record on every sample (only if known).
        metadata: Extra metadata for every sample (the sequence is added as ``sequence``).

    Yields:
        One sample per sequence (id ``<sequence>``).

    Raises:
        ValidationError: A layout or content problem (every problem of a sequence listed), or
            sequences in the archive that ``splits`` does not list (and vice versa).
    """
    import zipfile

    out = Path(work_dir) / "ctc-extract"
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        bad = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValidationError([f"unsafe path {b!r} in the archive" for b in bad[:5]])
        if not any(n.startswith(f"{name}/") for n in names):
            raise ValidationError(
                [f"{Path(archive).name}: no top folder {name}/ (expected {name}/01/t000.tif ...)"]
            )
        zf.extractall(out)
    root = out / name
    found = _sequences(root)
    problems = [
        f"sequence {s} is in the archive but has no split in the recipe"
        for s in found
        if s not in splits
    ]
    problems += [f"sequence {s} is missing from the archive" for s in splits if s not in found]
    if problems:
        raise ValidationError(problems, context=str(archive))
    for seq in sorted(splits):
        for sample in read_ctc_dataset(root, seg=seg, split=splits[seq], sequences=[seq]):
            sample.pixel_size = dict(pixel_size or {})
            sample.metadata = {**(metadata or {}), "sequence": seq, "seg_truth": seg}
            yield sample
