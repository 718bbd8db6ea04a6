"""Progress for steps that take more than a couple of seconds, on stderr.

Counted work uses tqdm bars directly (``tqdm(..., disable=not progress)``); a step whose length is
unknown (a ``pip download``, loading a model, starting data-loader workers) uses
:func:`activity`: a one-line ticker with the elapsed time on a terminal, and one plain line when
stderr is a pipe or log (so a log still says what the minutes went on). Nothing is printed on
stdout, which stays free for results and ``--json``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def activity(description: str, enabled: bool = True, *, interval_s: float = 0.5) -> Iterator[None]:
    """Show that ``description`` is under way until the block ends.

    Args:
        description: What is happening (``"pip download stardist==0.9.2"``).
        enabled: False prints nothing.
        interval_s: How often the elapsed time is refreshed on a terminal.
    """
    if not enabled:
        yield
        return
    stream = sys.stderr
    if not stream.isatty():
        print(f"{description} ...", file=stream, flush=True)
        yield
        return
    stop = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not stop.wait(interval_s):
            stream.write(f"\r{description} ... {time.monotonic() - start:.0f} s")
            stream.flush()

    thread = threading.Thread(target=tick, daemon=True)
    stream.write(f"{description} ...")
    stream.flush()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        stream.write(f"\r{description} ... {time.monotonic() - start:.0f} s\n")
        stream.flush()
