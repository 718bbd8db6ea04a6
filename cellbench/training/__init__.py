"""Training: data loading over Zarr stores, the training engine and the baseline models."""
