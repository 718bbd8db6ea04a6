"""Deterministic synthetic fluorescence microscopy for every cellbench task."""
