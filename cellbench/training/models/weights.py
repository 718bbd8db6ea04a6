"""Loading pretrained weights from local files only (never from the network).

Two sources are supported:

* ImageNet weights of torchvision ResNets, read from the torch hub cache
  (``torch.hub.get_dir()/checkpoints/<file name of the torchvision URL>``), the place
  torchvision itself caches them. Nothing is downloaded: when the file is missing,
  :func:`imagenet_checkpoint` raises one clear error saying which file to put where.
* A local checkpoint: a ``.safetensors`` file, or a PyTorch file read with
  ``torch.load(..., weights_only=True)`` (no unpickling of arbitrary objects). A plain state
  dict or a dict wrapping one under ``state_dict``/``model``/``net`` is accepted, and
  ``module.`` prefixes left by ``DistributedDataParallel`` are removed.

:func:`load_checked` compares keys and shapes before loading and reports every mismatch at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from cellbench.errors import CellbenchError, ValidationError

#: torchvision ImageNet weights per architecture (the ``DEFAULT`` weights of torchvision).
IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}

_MAX_LISTED = 8


def imagenet_file_name(arch: str) -> tuple[str, str]:
    """Return the torchvision file name and URL of an architecture's ImageNet weights."""
    import torchvision.models as tvm

    weights = getattr(tvm, IMAGENET_WEIGHTS[arch]).DEFAULT
    url = str(weights.url)
    return url.rsplit("/", 1)[-1], url


def imagenet_checkpoint(arch: str, field: str = "pretrained") -> Path:
    """Locate torchvision's ImageNet weights for ``arch`` in the local torch hub cache.

    Args:
        arch: Architecture (a key of :data:`IMAGENET_WEIGHTS`).
        field: Model config field that asked for them, for the message.

    Raises:
        CellbenchError: If the file is not there, naming the file, its URL, the directory and
            how to train from scratch instead.
    """
    name, url = imagenet_file_name(arch)
    directory = Path(torch.hub.get_dir()) / "checkpoints"
    path = directory / name
    if not path.is_file():
        raise CellbenchError(
            f"ImageNet weights for {arch} not found: cellbench never downloads them; put "
            f"{name} (from {url}) in {directory}/ (torch.hub.get_dir(), set by TORCH_HOME), "
            f"or train from scratch with `{field}: none` in the model config "
            f"(command line: --set model.{field}=none)"
        )
    return path


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local safetensors or PyTorch file (no arbitrary unpickling).

    Raises:
        CellbenchError: If the file is missing, unreadable or holds no tensor dictionary.
    """
    p = Path(path)
    if not p.is_file():
        raise CellbenchError(f"checkpoint {p} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: object = load_file(str(p), device="cpu")
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # the readers raise many unrelated types
        raise CellbenchError(
            f"checkpoint {p} could not be read as safetensors or a weights-only PyTorch file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(data, Mapping):
        for key in ("state_dict", "model", "net"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner:
                data = inner
                break
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise CellbenchError(f"checkpoint {p} does not hold a state dict of named tensors")
    state = dict(data)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (otherwise return a copy)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _listed(names: Iterable[str]) -> str:
    names = list(names)
    head = ", ".join(names[:_MAX_LISTED])
    return head + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    ignore_missing: Iterable[str] = (),
) -> None:
    """Load a state dict after checking that every key and shape fits the module.

    Args:
        module: The module to load into.
        state: The state dict.
        source: Where the weights come from (a path), for the message.
        ignore_missing: Key prefixes the checkpoint may lack (they keep their initial values).

    Raises:
        ValidationError: Listing the missing keys, the unexpected keys and every shape mismatch.
    """
    own = module.state_dict()
    skip = tuple(ignore_missing)
    missing = [
        k
        for k in own
        if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(skip)
    ]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing key(s) {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected key(s) {_listed(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_listed(shapes)}")
    if problems:
        raise ValidationError(
            [*problems, "the checkpoint does not fit this architecture and data spec"],
            context=f"checkpoint {source}",
        )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
