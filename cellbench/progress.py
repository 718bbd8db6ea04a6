"""Progress for steps that take more than a couple of seconds, on stderr.

Counted work uses tqdm bars directly (``tqdm(..., disable=not progress)``); a step whose length is
unknown (a ``pip download``, loading a model, starting data-loader workers) uses
:func:`activity`: a one-line ticker with the elapsed time on a terminal, and one plain line when
stderr is a pipe or log (so a log still says what the minutes went on). With ``after_s`` (e.g.
:data:`STEP_THRESHOLD_S`) nothing appears unless the step outlasts it: training start-up wraps
every step that can be slow (opening the store, fitting normalisation statistics,
indexing splits, building the model, the first batch) this way. Nothing is printed on
stdout, which stays free for results and ``--json``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

#: Steps shorter than this show nothing when called with ``after_s=STEP_THRESHOLD_S``.
STEP_THRESHOLD_S = 2.0


@contextmanager
def activity(
    description: str,
    enabled: bool = True,
    *,
    interval_s: float = 0.5,
    after_s: float = 0.0,
    stream: TextIO | None = None,
) -> Iterator[None]:
    """Show that ``description`` is under way until the block ends.

    Args:
        description: What is happening (``"pip download stardist==0.9.2"``).
        enabled: False prints nothing.
        interval_s: How often the elapsed time is refreshed on a terminal.
        after_s: Show nothing unless the block is still running after this many seconds
            (a step that is usually quick prints nothing; a slow one still says what the
            time goes on). Once shown, the line ends with the step's total time.
        stream: Where to write (default: ``sys.stderr`` at call time).
    """
    if not enabled:
        yield
        return
    out = stream if stream is not None else sys.stderr
    tty = out.isatty()
    stop = threading.Event()
    shown = threading.Event()
    lock = threading.Lock()
    start = time.monotonic()

    def show() -> None:
        with lock:
            if stop.is_set():
                return
            out.write(f"{description} ..." + ("" if tty else "\n"))
            out.flush()
            shown.set()

    def tick() -> None:
        if after_s > 0:
            if stop.wait(after_s):
                return
            show()
        if not tty:
            return
        while not stop.wait(interval_s):
            with lock:
                out.write(f"\r{description} ... {time.monotonic() - start:.0f} s")
                out.flush()

    if after_s <= 0:
        show()
        if not tty:
            yield
            return
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with lock:
            stop.set()
        thread.join()
        if shown.is_set():
            elapsed = time.monotonic() - start
            if tty:
                out.write(f"\r{description} ... {elapsed:.0f} s\n")
            elif after_s > 0:
                out.write(f"{description}: done in {elapsed:.1f} s\n")
            out.flush()
