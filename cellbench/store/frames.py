"""Lazy frame sources: a sequence's frames read one at a time, for streaming conversion.

A :class:`FrameSource` stands for a ``(T, ...)`` array whose frames are read on demand (a
reader's callback, e.g. one TIFF per time point). It has ``shape``, ``dtype`` and per-frame
access, so a :class:`~cellbench.store.sample.Sample` can carry a whole Cell Tracking Challenge
sequence without holding it: the store writer (:class:`~cellbench.store.zarr_store.StoreWriter`)
reads, checks, hashes and writes it frame by frame (chunks never span time points), so
converting holds about one frame at a time instead of the sequence.

Consumers that need the whole array still get it: ``np.asarray(source)`` reads every frame into
one array (as the readers did before), and indexing with a leading integer reads one frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np


class FrameSource:
    """A ``(T, ...)`` array read one frame (index along axis 0) at a time.

    Args:
        shape: Shape of the whole array; ``shape[0]`` is the number of frames.
        dtype: Dtype of every frame.
        read: ``read(t)`` returns frame ``t`` with shape ``shape[1:]`` and ``dtype`` (the
            reader records its own problems and returns a placeholder for an unreadable frame).
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, read: Callable[[int], np.ndarray]):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._read = read

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements of the whole array."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the whole array once decoded."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def frame(self, t: int) -> np.ndarray:
        """Read frame ``t`` (shape ``shape[1:]``, dtype :attr:`dtype`).

        Raises:
            IndexError: If ``t`` is outside ``0..T-1``.
            ValueError: If the reader returned another shape or dtype (a reader bug).
        """
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {t} is outside 0..{self.shape[0] - 1}")
        arr = np.asarray(self._read(t))
        if arr.shape != self.shape[1:] or arr.dtype != self.dtype:
            raise ValueError(
                f"frame {t}: reader returned {arr.dtype} {arr.shape}, expected "
                f"{self.dtype} {self.shape[1:]}"
            )
        return arr

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self.shape[0]):
            yield self.frame(t)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=self.dtype)
        for t in range(self.shape[0]):
            out[t] = self.frame(t)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | np.integer):
            return self.frame(int(key) + (self.shape[0] if key < 0 else 0))
        if isinstance(key, tuple) and key and isinstance(key[0], int | np.integer):
            return self[key[0]][key[1:]]
        return np.asarray(self)[key]

    def __repr__(self) -> str:
        return f"FrameSource(shape={self.shape}, dtype={self.dtype})"


def is_lazy(arr: Any) -> bool:
    """Whether an array field is a :class:`FrameSource` (read frame by frame)."""
    return isinstance(arr, FrameSource)


def row_blocks(
    data: Any, rows: int, prefetch: Executor | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)`` of ``rows`` consecutive entries along axis 0, in order.

    Works for in-memory arrays (views, no copy) and :class:`FrameSource` (frames read and
    stacked ``rows`` at a time; one frame at a time when ``rows`` is 1).

    With ``prefetch`` (an executor), a :class:`FrameSource`'s next block is read there while
    the caller works on the current one: one block ahead, never more, and the reads still
    happen one after another in frame order (the reader's own bookkeeping sees the same
    sequence of calls).
    """
    n = data.shape[0] if data.ndim else 0
    rows = max(1, rows)
    if not is_lazy(data):
        if data.ndim == 0 or n == 0:
            yield 0, data
            return
        for start in range(0, n, rows):
            yield start, data[start : start + rows]
        return

    def read(start: int) -> np.ndarray:
        stop = min(n, start + rows)
        if stop - start == 1:
            return data.frame(start)[None]
        return np.stack([data.frame(t) for t in range(start, stop)])

    if prefetch is None:
        for start in range(0, n, rows):
            yield start, read(start)
        return
    ahead: Future[np.ndarray] | None = prefetch.submit(read, 0) if n else None
    try:
        for start in range(0, n, rows):
            assert ahead is not None
            block = ahead.result()
            ahead = prefetch.submit(read, start + rows) if start + rows < n else None
            yield start, block
            del block
    finally:
        if ahead is not None and not ahead.cancel():  # stopped early: let the read end
            ahead.exception()
