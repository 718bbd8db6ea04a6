"""Community file formats: one registry, one module per format.

Every format people already have (Cell Tracking Challenge folders, GEFF graphs, COCO JSON,
DSB2018/BBBC038 folders, Cellpose/StarDist layouts, TissueNet npz, image folders, OME-TIFF,
OME-Zarr) is described once by a :class:`~cellbench.formats.registry.Format`: how to read it
into :class:`~cellbench.store.sample.Sample` objects (streamed, one at a time), how to write
samples back, and how to list every problem in a folder without converting it. Formats that
belong to one task live in that task's package (``cellbench/tasks/<task>/``) and are named in
:data:`~cellbench.formats.registry.BUILTIN`; ``cellbench convert`` and ``cellbench validate``
look them up here.
"""

from cellbench.formats.registry import Format, format_names, get_format

__all__ = ["Format", "format_names", "get_format"]
