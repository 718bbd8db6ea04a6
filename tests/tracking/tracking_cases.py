"""Tiny hand-built tracked sequences whose CTC error counts are worked out by hand.

The base ground truth (4 frames, 20 x 20) has six tracks::

    A=1  frames 0-3  rows 1-4,   cols 1-4
    B=2  frames 0-1  rows 1-4,   cols 10-13   divides into
    C=3  frames 2-3  rows 1-3,   cols 9-12    (parent B)
    D=4  frames 2-3  rows 6-8,   cols 9-12    (parent B)
    E=5  frames 1-3  rows 12-15, cols 1-4     (appears)
    F=6  frame  0    rows 16-18, cols 10-12   (disappears)

14 nodes, 10 edges (8 track links, 2 parent links): AOGM_0 = 10*14 + 1.5*10 = 155.
"""

from __future__ import annotations

import numpy as np

from cellbench.tracks import SegAnnotation, TrackedSequence

BOX = {
    "A": (1, 5, 1, 5),
    "B": (1, 5, 10, 14),
    "C": (1, 4, 9, 13),
    "D": (6, 9, 9, 13),
    "E": (12, 16, 1, 5),
    "F": (16, 19, 10, 13),
    "X": (16, 19, 16, 19),  # free space for extra objects
}

BASE = [
    # (track id, box, frames)
    (1, "A", range(0, 4)),
    (2, "B", range(0, 2)),
    (3, "C", range(2, 4)),
    (4, "D", range(2, 4)),
    (5, "E", range(1, 4)),
    (6, "F", range(0, 1)),
]
BASE_TABLE = [[1, 0, 3, 0], [2, 0, 1, 0], [3, 2, 3, 2], [4, 2, 3, 2], [5, 1, 3, 0], [6, 0, 0, 0]]


def paint(
    objects: list[tuple[int, int, str]], n_frames: int = 4, shape: tuple[int, int] = (20, 20)
) -> np.ndarray:
    """Label stack from ``(frame, label, box name)`` triples, painted in order."""
    lab = np.zeros((n_frames, *shape), dtype=np.uint16)
    for t, label, box in objects:
        r0, r1, c0, c1 = BOX[box]
        lab[t, r0:r1, c0:c1] = label
    return lab


def base_objects() -> list[tuple[int, int, str]]:
    """``(frame, label, box)`` of the base ground truth."""
    return [(t, tid, box) for tid, box, frames in BASE for t in frames]


def base_gt(seg: bool = False) -> TrackedSequence:
    """The base ground truth (optionally with SEG truth for frame 1, objects A and B only)."""
    lab = paint(base_objects())
    ann: tuple[SegAnnotation, ...] = ()
    if seg:
        s = lab[1].copy()
        s[s == 5] = 0  # E is not annotated in SEG
        ann = (SegAnnotation(frame=1, labels=s),)
    return TrackedSequence(lab, np.asarray(BASE_TABLE), seg=ann, name="base")


def result(objects: list[tuple[int, int, str]], table: list[list[int]]) -> TrackedSequence:
    """A result sequence from painted objects and its table."""
    return TrackedSequence(paint(objects), np.asarray(table).reshape(-1, 4), name="res")


def replace(
    objects: list[tuple[int, int, str]], frame: int, box: str, label: int
) -> list[tuple[int, int, str]]:
    """Give the object drawn at ``box`` in ``frame`` a new label."""
    return [(t, label if (t == frame and b == box) else lab, b) for t, lab, b in objects]


def drop(objects: list[tuple[int, int, str]], frame: int, box: str) -> list[tuple[int, int, str]]:
    """Remove the object drawn at ``box`` in ``frame``."""
    return [(t, lab, b) for t, lab, b in objects if not (t == frame and b == box)]


def div_gt() -> TrackedSequence:
    """P (frames 0-2, wide box) divides into Q (left half) and R (right half), frames 3-5."""
    lab = np.zeros((6, 24, 24), dtype=np.uint16)
    lab[0:3, 2:6, 2:10] = 1
    lab[3:6, 2:6, 2:6] = 2
    lab[3:6, 2:6, 6:10] = 3
    lab[:, 14:18, 14:18] = 4
    return TrackedSequence(lab, [[1, 0, 2, 0], [2, 3, 5, 1], [3, 3, 5, 1], [4, 0, 5, 0]])


def late_division(shift: int) -> TrackedSequence:
    """The result divides ``shift`` frames late: P continues on Q's pixels meanwhile."""
    lab = div_gt().labels.copy()
    last = 2 + shift
    for t in range(3, last + 1):
        lab[t][lab[t] == 2] = 1
        lab[t][lab[t] == 3] = 0
    table = [[1, 0, last, 0], [2, last + 1, 5, 1], [3, last + 1, 5, 1], [4, 0, 5, 0]]
    return TrackedSequence(lab, table)


def early_division() -> TrackedSequence:
    """The result divides one frame early: Q' takes the parent's last frame, R' is an extra."""
    lab = div_gt().labels.copy()
    lab[2][lab[2] == 1] = 2
    lab[2, 20:22, 20:22] = 3
    return TrackedSequence(lab, [[1, 0, 1, 0], [2, 2, 5, 1], [3, 2, 5, 1], [4, 0, 5, 0]])
