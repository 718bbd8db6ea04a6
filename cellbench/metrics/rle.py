"""Overlapping instance masks as column-major runs (COCO RLE), without dense decoding.

A COCO results file holds one RLE per detection. Decoding each into an ``H x W`` mask (what
``pycocotools.mask.decode`` does) costs ``n_dets x H x W`` bytes and time; the runs themselves
are all that IoU, areas and painting need. This module keeps them as runs:

* :func:`runs_from_counts` decodes compressed RLE strings into runs, vectorised in NumPy over
  all masks of an image (pycocotools exposes no API that returns the uncompressed counts of a
  compressed RLE, only dense masks);
* :func:`run_overlap` gives the sparse overlap of a label image with the runs: the image cut
  into its own runs once, each predicted run split where the label changes, a ``np.bincount``
  of (mask, label) codes weighted by the pieces' lengths;
* :func:`paint_runs` paints the runs into one label image exactly as
  :func:`cellbench.predictions.paint_masks` paints dense masks (higher scores on top).

Why hand-rolled, measured with ``benchmarks/coco_results.py`` (20 dense 512x512 images, ~300
overlapping detections each, 2-core x86_64): reading the results through dense masks cost ~280
ms per image for COCO AP alone (decode to an ``(n, 512, 512)`` stack, then re-encode for
``pycocotools.mask.iou``); through runs, COCO AP from the two files end to end (JSON, RLE
decode, ground truth from the store, join, matching, accumulation) costs ~3 ms per image, level
with ultrafast-pycocotools' compiled evaluator, with precision/recall arrays identical to
pycocotools' ``COCOeval`` (figures and history in ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.matching import OverlapPairs, nonzero_index

#: Characters per number above which a compressed RLE is malformed (5 bits per character;
#: 13 characters already exceed any count of a 2**32-pixel image).
_MAX_CHARS = 12


@dataclass(frozen=True)
class MaskRuns:
    """Possibly overlapping binary masks of one 2D image as column-major runs.

    Pixels are numbered in COCO RLE order (down columns): pixel ``(y, x)`` is ``x * H + y``.

    Attributes:
        shape: ``(H, W)`` of the image.
        mask: For each run, the index of its mask (0..n-1), int64.
        start: For each run, its first pixel, int64.
        length: For each run, its pixel count (> 0), int64.
        scores: Confidence of each mask, float64.
        range_areas: The area each mask counts as for COCO area ranges (pycocotools'
            ``ann['area']``: the pixel count, or ``w * h`` of a result's bbox), float64.
    """

    shape: tuple[int, int]
    mask: np.ndarray
    start: np.ndarray
    length: np.ndarray
    scores: np.ndarray
    range_areas: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.size)

    def areas(self) -> np.ndarray:
        """Pixel count of each mask, int64."""
        return np.bincount(self.mask, weights=self.length, minlength=len(self)).astype(np.int64)

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mask index, pixel)`` of every pixel of every mask (total area entries)."""
        total = int(self.length.sum())
        owner = np.repeat(self.mask, self.length)
        # pixel = run start + offset inside the run
        offset = np.arange(total, dtype=np.int64)
        run_first = np.cumsum(self.length) - self.length
        pix = offset + np.repeat(self.start - run_first, self.length)
        return owner, pix

    def problems(self, where: str) -> list[str]:
        """Inconsistencies (run outside the image, mask index out of range, score count)."""
        out = []
        n, n_px = len(self), self.shape[0] * self.shape[1]
        if self.range_areas.shape != (n,):
            out.append(f"{where}: {self.range_areas.size} areas for {n} masks")
        if not np.isfinite(self.scores).all():
            out.append(f"{where}: mask scores contain NaN or infinite values")
        if self.mask.size and (self.mask.min() < 0 or self.mask.max() >= n):
            out.append(f"{where}: runs refer to masks outside 0..{n - 1}")
        if self.start.size and (
            self.start.min() < 0
            or self.length.min() <= 0
            or (self.start + self.length).max() > n_px
        ):
            out.append(f"{where}: runs reach outside the {self.shape[0]}x{self.shape[1]} image")
        return out


def decode_counts(strings: list[bytes], n_pixels: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Uncompressed counts of compressed COCO RLE strings (pycocotools' ``rleFrString``).

    Each number is 5 bits per character (``c - 48``), bit 0x20 = more characters follow, bit
    0x10 of the last character = negative; from the fourth number on, the number is a delta
    to the one two places before.

    Args:
        strings: The ``counts`` byte strings.
        n_pixels: ``H * W``: the counts of every string must sum to it.

    Returns:
        ``(owner, counts, bad)``: per count the index of its string and its value (int64), and
        the indices of malformed strings (bad characters, truncated numbers, negative counts,
        counts not summing to ``n_pixels``); their counts are left out.
    """
    lens = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    owner, value, _, bad = _decode(b"".join(strings), lens, n_pixels)
    return owner, value, bad


def _decode(
    joined: bytes, lens: np.ndarray, n_pixels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """:func:`decode_counts` of ``joined`` strings, plus each count's index in its string.

    ``lens`` holds the byte length of each string. Characters stay uint8 and only the numbers
    (about two thirds as many) are int64: a number is its first character's 5 bits, then the
    characters of the longer numbers are added one position at a time (most counts take one or
    two characters). Each string's numbers are counted from a cumsum of the end flags, not
    from a per-character owner array.
    """
    n_s = lens.size
    str_end = np.cumsum(lens)
    raw = np.frombuffer(joined, dtype=np.uint8) - np.uint8(48)
    bad = np.zeros(n_s, dtype=bool)
    outside = raw > 63  # below '0' wraps around above 63 too
    if outside.any():
        bad[np.searchsorted(str_end, np.flatnonzero(outside), side="right")] = True
        raw[outside] = 0
    ends = raw < 32  # bit 0x20 clear: the number's last character
    # a string's last character must end its number (an empty string has none)
    has_chars = lens != 0
    last = str_end[has_chars] - 1
    bad[np.flatnonzero(has_chars)[~ends[last]]] = True
    ends[last] = True
    end_idx = np.flatnonzero(ends)
    ends_before = np.zeros(raw.size + 1, dtype=np.int64)
    np.cumsum(ends, out=ends_before[1:])
    per_string = ends_before[str_end] - ends_before[str_end - lens]  # numbers in each string
    owner = np.repeat(np.arange(n_s), per_string)
    start = np.empty_like(end_idx)
    start[:1] = 0
    start[1:] = end_idx[:-1] + 1
    n_chars = end_idx - start + 1
    bad[owner[n_chars > _MAX_CHARS]] = True
    value = (raw[start] & 0x1F).astype(np.int64)
    longer = np.flatnonzero(n_chars > 1)
    k = 1
    while longer.size and k < _MAX_CHARS:
        value[longer] |= (raw[start[longer] + k] & 0x1F).astype(np.int64) << (5 * k)
        k += 1
        longer = longer[n_chars[longer] > k]
    negative = np.flatnonzero((raw[end_idx] & 0x10) != 0)
    value[negative] -= np.int64(1) << (5 * np.minimum(n_chars[negative], _MAX_CHARS))
    # index of each number inside its string (strings without numbers have no first number)
    per_string = per_string[has_chars]
    first_num = np.cumsum(per_string) - per_string
    own_first = np.repeat(first_num, per_string)
    num_index = np.arange(owner.size) - own_first
    # deltas: x[j] += x[j - 2] for j > 2, i.e. a running sum over odd j >= 1 and one over even
    # j >= 2 in each string. A string's odd numbers share one parity of the global position and
    # its even ones the other, so one running sum per global parity (two strided cumsums) less
    # its value just before the string's chain (position first - 1 for odd j, first for even j,
    # whose own number is not chained) gives both; j = 0 keeps its value. (A masked running sum
    # per chain, as before: 0.47 -> 0.35 ms per image of 300 masks, coco_results.py's files.)
    chained = value.copy()
    chained[first_num] = 0
    running = np.empty(value.size + 1, dtype=np.int64)  # running[1 + i]: sum up to i by parity
    running[0] = 0
    np.cumsum(chained[0::2], out=running[1::2])
    np.cumsum(chained[1::2], out=running[2::2])
    out = running[1:] - running[own_first + 1 - (num_index & 1)]
    out[first_num] = value[first_num]
    bad[owner[out < 0]] = True
    totals = np.zeros(n_s, dtype=np.int64)
    if first_num.size:
        totals[has_chars] = np.add.reduceat(out, first_num)
    bad |= totals != n_pixels
    if not bad.any():
        return owner, out, num_index, []
    keep = ~bad[owner]
    return owner[keep], out[keep], num_index[keep], np.flatnonzero(bad).tolist()


def runs_from_counts(
    counts_in: list[str] | list[bytes],
    shape: tuple[int, int],
    scores: np.ndarray,
    range_areas: np.ndarray | None = None,
    *,
    where: str = "masks",
    name_of: Callable[[int], str] | None = None,
) -> MaskRuns:
    """Runs of compressed RLEs given by their ``counts`` (bytes or str), all of size ``shape``.

    Args:
        counts_in: One compressed RLE ``counts`` string per mask.
        shape: ``(H, W)``.
        scores: One score per mask.
        range_areas: Area per mask for area ranges; default the pixel count.
        where: Prefix of error messages.
        name_of: How to name mask ``k`` in error messages (default ``"<where> <k>"``).

    Returns:
        The masks as runs.

    Raises:
        ValidationError: Listing every RLE that does not decode to ``H x W`` pixels.
    """
    h, w = int(shape[0]), int(shape[1])
    try:
        joined_str = "".join(counts_in)  # str counts (JSON): one join, one encode
    except TypeError:  # bytes among them
        joined_str = None
    if joined_str is not None and joined_str.isascii():
        joined = joined_str.encode("ascii")
        lens = np.fromiter(map(len, counts_in), dtype=np.int64, count=len(counts_in))
    else:
        # utf-8 keeps any non-ASCII character outside 0-o, so it is refused
        strings = [c.encode() if isinstance(c, str) else c for c in counts_in]
        joined = b"".join(strings)
        lens = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    owner, counts, num_index, bad = _decode(joined, lens, h * w)
    if bad:
        raise ValidationError(
            [
                f"{name_of(k) if name_of else f'{where} {k}'}: compressed RLE counts do not decode "
                f"to {h}x{w} pixels "
                "(malformed string or wrong total)"
                for k in bad
            ],
            where,
        )
    # pixel offset of each count inside its string: counts before it in the same string
    starts = np.cumsum(counts) - counts
    starts -= starts[np.arange(owner.size) - num_index]
    fg = np.flatnonzero(((num_index & 1) == 1) & (counts > 0))  # (boolean indexing: 5x slower)
    runs = MaskRuns(
        shape=(h, w),
        mask=owner[fg],
        start=starts[fg],
        length=counts[fg],
        scores=np.asarray(scores, dtype=np.float64).reshape(-1),
        range_areas=np.zeros(0),
    )
    areas = runs.areas().astype(np.float64) if range_areas is None else range_areas
    return MaskRuns(
        runs.shape,
        runs.mask,
        runs.start,
        runs.length,
        runs.scores,
        np.asarray(areas, dtype=np.float64).reshape(-1),
    )


def run_overlap(gt: np.ndarray, runs: MaskRuns) -> OverlapPairs:
    """Sparse overlap of a 2D ground-truth label image with masks given as runs.

    ``pred_ids`` are the mask indices 0..n-1 (every mask, empty ones included); ``gt_ids`` the
    present ground-truth ids in ascending order. Cost: one pass over the image's pixels plus
    the number of runs.

    The image is cut into its column-major runs of equal id (background runs included; a new
    run at the top of every column) by :func:`column_runs`, and each predicted run ``[s, e)``
    finds the image runs holding ``s`` and ``e - 1`` by :func:`_run_of`. Each predicted run is
    split at the image runs it meets (cost: runs, not pixels); the pieces that fall on an
    object are summed per (mask, object) pair by one ``np.bincount``.

    Args:
        gt: ``(H, W)`` label image, 0 = background.
        runs: The predicted masks.

    Returns:
        The overlapping pairs with their intersections and both sides' pixel areas.
    """
    g = np.asarray(gt)
    g_start, run_val = column_runs(g)
    return _overlap_runs(g_start, run_val, int(g.size), runs)


def column_runs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-major runs of equal value of a 2D array: first pixel (``x * H + y``) and value.

    Every column starts a new run (a run never continues from the bottom of one column into
    the next), so the runs are those of the column-major flattened image, cut at column tops.

    Found without a column-major copy: a transposed copy costs about a nanosecond per pixel
    (0.32 ms for a 512 x 512 uint16 label image, more than everything else per pixel), while the
    run tops are the pixels that differ from the one above, a row-major comparison; their
    ``np.flatnonzero`` comes in row-major order and a stable sort by column (NumPy's radix sort
    of 16-bit keys, 0.06 ms for 14,000 runs) puts them in column-major order. Measured on
    ``benchmarks/coco_results.py``'s ground truth (x86_64, 20 images of 512 x 512, ~300 cells):
    0.55 -> 0.40 ms per image for the runs and their values.

    Returns:
        ``(start int64, value)``, in column-major order (``start[0] == 0``).
    """
    g = np.ascontiguousarray(image)
    h, w = g.shape
    top = np.empty((h, w), dtype=bool)
    top[:1] = True
    np.not_equal(g[1:], g[:-1], out=top[1:])
    flat = np.flatnonzero(top)
    y, x = np.divmod(flat, w)
    order = np.argsort(x.astype(np.uint16 if w <= 1 << 16 else np.int64), kind="stable")
    start = x[order]
    start *= h
    start += y[order]
    return start, g.reshape(-1)[flat[order]]


def _run_of(start: np.ndarray, size: int, pixels: np.ndarray) -> np.ndarray:
    """Index of the run holding each pixel: ``searchsorted(start, pixels, "right") - 1``.

    ``start`` is sorted with ``start[0] == 0``; ``size`` is past the last pixel. Faster than a
    binary search (0.2 ms for 8,600 pixels in 14,000 runs) and than a per-pixel run index
    (a cumsum or repeat over the whole image, 0.15-0.19 ms): the runs are counted per bucket
    of 8 pixels, each pixel starts at the first run of its bucket and steps forward while the
    next run starts at or before it (a few steps: a bucket holds at most 8 run starts).
    """
    shift = 3
    n_bucket = (size >> shift) + 1
    before = np.zeros(n_bucket + 1, dtype=np.int64)
    np.cumsum(np.bincount(start >> shift, minlength=n_bucket), out=before[1:])
    run = before[pixels >> shift]  # runs that start before the pixel's bucket
    bounded = np.append(start, size)  # the sentinel stops every step
    moving = np.flatnonzero(bounded[run] <= pixels)
    while moving.size:
        run[moving] += 1
        moving = moving[bounded[run[moving]] <= pixels[moving]]
    return run - 1


def _overlap_runs(
    g_start: np.ndarray, g_value: np.ndarray, size: int, runs: MaskRuns
) -> OverlapPairs:
    """:func:`run_overlap` from the image's column-major runs (``start``, ``value``)."""
    n_d = len(runs)
    g_end = np.empty_like(g_start)
    g_end[:-1] = g_start[1:]
    g_end[-1:] = size
    run_val = g_value.astype(np.int64)
    top = int(run_val.max(initial=0))
    if top < max(1 << 20, 4 * run_val.size):  # small ids: a lookup table, no sort
        present = np.bincount(run_val, minlength=top + 1) > 0
        present[0] = False
        gt_ids = np.flatnonzero(present).astype(np.int64)
        lut = np.cumsum(present)  # id -> 1..n_g in ascending id, background -> 0
        g_id = lut[run_val]
    else:
        gt_ids, g_id = np.unique(run_val, return_inverse=True)
        if gt_ids[0] == 0:
            gt_ids = gt_ids[1:]
        else:
            g_id = g_id + 1
    n_g = gt_ids.size
    gt_area = np.bincount(g_id, weights=g_end - g_start, minlength=n_g + 1)[1:].astype(np.int64)
    if n_g == 0 or runs.start.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return OverlapPairs(gt_ids, np.arange(n_d, dtype=np.int64), gt_area, runs.areas(), z, z, z)
    s0, e0 = runs.start, runs.start + runs.length
    held = _run_of(g_start, size, np.concatenate([s0, e0 - 1]))
    first = held[: s0.size]  # the image run holding each predicted run's first pixel
    n_piece = held[s0.size :] - first + 1  # ... and how many image runs it meets
    piece_run = np.repeat(np.arange(s0.size), n_piece)
    # piece k of run r lies on image run first[r] + (k - pieces before r)
    piece_g = np.repeat(first - (np.cumsum(n_piece) - n_piece), n_piece)
    piece_g += np.arange(piece_run.size)
    obj = g_id[piece_g]
    on_object = np.flatnonzero(obj != 0)
    piece_run, piece_g, obj = piece_run[on_object], piece_g[on_object], obj[on_object]
    weight = np.minimum(g_end[piece_g], e0[piece_run]) - np.maximum(g_start[piece_g], s0[piece_run])
    code = runs.mask[piece_run] * n_g + (obj - 1)
    if n_d * n_g <= max(1 << 22, 4 * code.size):
        table = np.bincount(code, weights=weight, minlength=n_d * n_g)
        nz = nonzero_index(table)
        cnt = table[nz]
    else:
        nz, inv = np.unique(code, return_inverse=True)
        cnt = np.bincount(inv, weights=weight)
    d_idx, g_idx = np.divmod(nz, n_g)
    return OverlapPairs(
        gt_ids=gt_ids,
        pred_ids=np.arange(n_d, dtype=np.int64),
        gt_area=gt_area,
        pred_area=runs.areas(),
        gt_index=g_idx.astype(np.int64),
        pred_index=d_idx.astype(np.int64),
        intersection=cnt.astype(np.int64),
    )


def paint_runs(runs: MaskRuns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the masks into one label image exactly as :func:`~cellbench.predictions.paint_masks`.

    Masks are painted in ascending score order (ties in mask order), so a pixel belongs to the
    highest-scored mask covering it (the later one among ties); mask ``k`` gets id 1 for the
    highest score, 2 for the next, ... (stable); masks left without a pixel are dropped.

    Returns:
        ``(label image int32 (H, W), object_ids int64, object_scores float64)``.
    """
    h, w = runs.shape
    n = len(runs)
    ids = np.empty(n, dtype=np.int64)
    ids[np.argsort(-runs.scores, kind="stable")] = np.arange(1, n + 1)
    paint_order = np.empty(n, dtype=np.int64)
    paint_order[np.argsort(runs.scores, kind="stable")] = np.arange(1, n + 1)
    owner, pix = runs.pixels()
    top = np.zeros(h * w, dtype=np.int64)
    np.maximum.at(top, pix, paint_order[owner])  # the last painted mask over each pixel
    by_order = np.zeros(n + 1, dtype=np.int64)
    by_order[paint_order] = ids
    flat = by_order[top].astype(np.int32)
    out = np.ascontiguousarray(flat.reshape(w, h).T)
    painted = np.bincount(top, minlength=n + 1) > 0  # by paint order: no sort of the pixels
    keep = painted[paint_order]  # masks that kept at least one pixel
    order = np.argsort(ids[keep])
    return out, ids[keep][order], runs.scores[keep][order]
