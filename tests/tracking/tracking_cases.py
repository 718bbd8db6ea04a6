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
