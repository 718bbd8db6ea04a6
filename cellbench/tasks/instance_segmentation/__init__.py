"""Instance segmentation (2D and 3D): every object gets its own id.

The task package (the plugin: nothing outside it branches on this task):

* ``task.py``: declares the task: ground truth, headline and metric suite, the one output check;
* ``io.py``: reads the on-disk prediction formats the task accepts;
* ``training.py``: batch keys, targets, class statistics, epoch diagnostics, tile stitching;
* ``hf.py``: its Hugging Face dataset columns;
* ``controls.py``: the reference controls its leaderboards show beside the entries;
* ``overlays.py``: error overlays (correct, missed, false, split, merged objects).
"""

from cellbench.tasks.instance_segmentation.task import InstanceSegmentationTask

__all__ = ["InstanceSegmentationTask"]
