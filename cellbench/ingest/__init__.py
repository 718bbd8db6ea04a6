"""Readers and writers for public source formats, one module per format.

* :mod:`cellbench.ingest.ctc`: the Cell Tracking Challenge layout (``<seq>_GT/TRA``,
  ``<seq>_GT/SEG``, ``<seq>_RES``) to and from :class:`cellbench.tracks.TrackedSequence`.
"""
