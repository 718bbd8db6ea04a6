"""Tiny configurations of the built-in baselines, for CPU tests, demos and smoke runs.

The defaults of every config class are sized for GPU training; :func:`tiny_config` returns the
model config fields of a version that trains in seconds on a laptop CPU (a few thousand to a
few hundred thousand parameters, small patches), for the same code paths.
"""

from __future__ import annotations

from typing import Any

from cellbench.errors import CellbenchError


def tiny_config(name: str, ndim: int = 2) -> dict[str, Any]:
    """Model config fields of a CPU-sized version of a built-in baseline.

    Args:
        name: Registry name (``unet``, ``resnet18``, ``maskrcnn``, ...).
        ndim: Spatial dims of the data (2 or 3).

    Returns:
        A fresh mapping for ``config_class.from_dict``.

    Raises:
        CellbenchError: For a baseline without a tiny configuration.
    """
    patch = [32, 32] if ndim == 2 else [8, 16, 16]
    unet = {"depth": 2 if ndim == 3 else 3, "base_channels": 8, "patch_size": patch}
    if ndim == 3:
        unet["pool_z"] = False
    configs: dict[str, dict[str, Any]] = {
        "resnet18": {"pretrained": "none"},
        "resnet50": {"pretrained": "none"},
        "unet": dict(unet),
        "unet-regression": dict(unet),
        "embedding-unet": {**unet, "embedding_dim": 4, "min_object_size": 3},
        "maskrcnn": {
            "backbone": "resnet18",
            "rpn_batch_size_per_image": 64,
            "box_batch_size_per_image": 64,
            "box_detections_per_img": 50,
            "rpn_pre_nms_top_n_test": 300,
            "rpn_post_nms_top_n_test": 150,
            "patch_size": [64, 64],
        },
    }
    detector = configs["embedding-unet"]
    configs["tracker"] = {"detector": "embedding-unet", "detector_config": detector}
    if name not in configs:
        raise CellbenchError(
            f"no tiny configuration for baseline {name!r} (known: {', '.join(sorted(configs))})"
        )
    return configs[name]
