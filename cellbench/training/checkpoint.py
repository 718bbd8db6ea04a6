"""Checkpoints: weights as safetensors, training state loadable with ``weights_only=True``.

Nothing is ever unpickled: weights are safetensors files whose header records the baseline
name, and the training state (epoch, optimiser, scheduler, gradient scaler, random number
generators, best value, history) holds only tensors, numbers, strings, lists and dicts, so
``torch.load(path, weights_only=True)`` reads it. Every file is written atomically (temporary
file, then rename), so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cellbench.training.errors import CheckpointError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_weights(
    model: nn.Module, path: str | Path, baseline: str, extra: dict[str, str] | None = None
) -> Path:
    """Write a model's state dict as safetensors (atomically).

    Args:
        model: The model (unwrapped, not DDP).
        path: Destination ``.safetensors`` file.
        baseline: Baseline name recorded in the header (checked when loading).
        extra: More header metadata (strings), e.g. the epoch.
    """
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "baseline": baseline, **dict(extra or {})}
    return _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def weights_header(path: str | Path) -> dict[str, str]:
    """Metadata of a safetensors file.

    Raises:
        CheckpointError: If the file is missing or not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or not a safetensors checkpoint ({err})") from None


def load_weights(model: nn.Module, path: str | Path, baseline: str) -> None:
    """Load safetensors weights into ``model``, checking they were made for it.

    Raises:
        CheckpointError: One line for a corrupt file, a checkpoint of another baseline, or a
            state dict whose keys or shapes do not match the model (another configuration).
    """
    path = Path(path)
    meta = weights_header(path)
    saved = meta.get("baseline")
    if saved and saved != baseline:
        raise CheckpointError(f"{path}: checkpoint is for baseline {saved!r}, not {baseline!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint ({err})") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {shapes[0]})")
        raise CheckpointError(
            f"{path}: checkpoint does not fit this {baseline!r} model (another architecture "
            f"or model config): {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=True)


def save_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write the training state with ``torch.save`` (atomically); see the module docstring."""
    return _atomic(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: If the file is missing, corrupt or holds anything but plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: training state not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe pickles
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: corrupt or unsafe training state ({first})") from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path}: not a cellbench training state")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) random states, as plain data."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def write_json(data: Any, path: str | Path) -> Path:
    """Write JSON atomically."""
    text = json.dumps(data, indent=2, sort_keys=False)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n", encoding="utf-8")

    return _atomic(Path(path), write)


def write_text(text: str, path: str | Path) -> Path:
    """Write text atomically."""
    return _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
