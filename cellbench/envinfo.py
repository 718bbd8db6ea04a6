"""Environment report for bug reports (``cellbench env``)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

from cellbench._version import __version__


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def installed_extras() -> str:
    """The optional groups (``pip install cellbench[EXTRA]``) installed, e.g. ``train, hf``."""
    from importlib.util import find_spec

    from cellbench.extras import EXTRA_OF

    have: dict[str, bool] = {}
    for module, extra in EXTRA_OF.items():
        have[extra] = have.get(extra, True) and find_spec(module) is not None
    names = [e for e, ok in have.items() if ok]
    return ", ".join(names) if names else "none (core install)"


def environment_report(include_torch: bool = True) -> dict[str, str]:
    """Collect versions of cellbench, Python, torch/CUDA and the storage stack.

    Args:
        include_torch: Import torch to report its version and CUDA device (slow: seconds);
            when False only installed package versions are read.

    Returns:
        Ordered mapping of component name to version string.
    """
    report = {
        "cellbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "extras": installed_extras(),
    }
    if not include_torch:
        report["torch"] = _pkg("torch")
    else:
        _torch_report(report)
    for name in ("torchvision", "zarr", "numcodecs", "datasets", "huggingface-hub", "numpy"):
        report[name] = _pkg(name)
    return report


def _torch_report(report: dict[str, str]) -> None:
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda"] = (
            f"{torch.version.cuda} ({torch.cuda.get_device_name(0)})"
            if torch.cuda.is_available()
            else f"not available (built for {torch.version.cuda or 'cpu'})"
        )
    except ImportError:
        report["torch"] = "not installed"
        report["cuda"] = "n/a"
