"""Augmented microscopy: predict fluorescence from transmitted light (label-free prediction).

The task package (the plugin: nothing outside it branches on this task):

* ``task.py``: declares the task: ground truth, headline and metric suite, the one output check;
* ``training.py``: batch keys, targets, class statistics, epoch diagnostics, tile stitching;
* ``hf.py``: its Hugging Face dataset columns;
* ``controls.py``: the reference controls its leaderboards show beside the entries;
* ``pictures.py``: the pictures its leaderboard pages show;
* ``fnet_czi.py``: the ``fnet-czi`` format (Allen label-free CZI z-stacks + pytorch_fnet table).
"""

from cellbench.tasks.augmented_microscopy.task import AugmentedMicroscopyTask

__all__ = ["AugmentedMicroscopyTask"]
