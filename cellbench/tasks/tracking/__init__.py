"""Cell tracking with divisions (Cell Tracking Challenge measures).

The task package (the plugin: nothing outside it branches on this task):

* ``task.py``: declares the task: ground truth, headline and metric suite, the one output check;
* ``io.py``: reads the on-disk prediction formats the task accepts;
* ``training.py``: batch keys, targets, class statistics, epoch diagnostics, tile stitching;
* ``hf.py``: its Hugging Face dataset columns;
* ``controls.py``: the reference controls its leaderboards show beside the entries;
* ``pictures.py``: the pictures its leaderboard pages show;
* ``ctc.py``: reads, writes, validates and scores Cell Tracking Challenge folders (single
  sequences and whole datasets: the ``ctc`` format, and the CTC training-archive reader);
* ``geff.py``: the ``geff`` format: tracking graphs in and out, with label images beside them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrackingTask"]


def __getattr__(name: str) -> Any:
    # The declaration imports the store (zarr); reading or scoring CTC folders (ctc.py), which
    # is timed as a whole process, must not.
    if name == "TrackingTask":
        from cellbench.tasks.tracking.task import TrackingTask

        return TrackingTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
