"""Canonical on-disk storage of cellbench datasets (Zarr v3, OME-Zarr conventions)."""
