"""Helpers shared by the built-in baselines: config checks, input checks, devices, padding."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from cellbench.errors import CellbenchError, ValidationError
from cellbench.training.baseline import DataSpec

#: Prefix a weights field gets once its file has been loaded (see :func:`mark_loaded`).
LOADED_PREFIX = "loaded:"


def needs_loading(source: str) -> bool:
    """Whether a ``pretrained``-style field still names weights to read from a file."""
    return source != "none" and not source.startswith(LOADED_PREFIX)


def mark_loaded(source: str) -> str:
    """Record that the weights named by ``source`` are now part of the model's own weights.

    A model built from a config whose weights field reads ``loaded:<source>`` gets the same
    architecture as with those weights but reads no file: its weights come from the checkpoint
    or model package it is restored from. This keeps saved models portable to machines that
    lack the original file, and keeps the provenance in the saved config.
    """
    return source if source.startswith(LOADED_PREFIX) else LOADED_PREFIX + source


def check_choice(problems: list[str], name: str, value: Any, choices: Sequence[Any]) -> None:
    """Append a problem line when ``value`` is not one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        problems.append(f"{name} = {value!r} is not one of {allowed}")


def check_range(
    problems: list[str],
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    high_open: bool = False,
) -> None:
    """Append a problem line when ``value`` is outside ``[low, high]`` (or ``[low, high)``)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        problems.append(f"{name} = {value!r} must be a number")
        return
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        problems.append(f"{name} = {value!r} must be in [{lo}, {hi}{')' if high_open else ']'}")


def raise_problems(problems: list[str], context: str) -> None:
    """Raise :class:`ValidationError` with every problem found, if any."""
    if problems:
        raise ValidationError(problems, context=context)


def resolve_size(
    value: Sequence[int],
    ndim: int,
    default_2d: Sequence[int],
    default_3d: Sequence[int],
    name: str = "patch_size",
) -> list[int]:
    """Return a per-axis size for ``ndim`` spatial dims (an empty value picks the default).

    Raises:
        CellbenchError: If the size has the wrong length or non-positive entries.
    """
    if not value:
        return [int(s) for s in (default_2d if ndim == 2 else default_3d)]
    size = [int(s) for s in value]
    if len(size) != ndim or min(size) < 1:
        raise CellbenchError(
            f"{name} {list(value)} must have {ndim} positive entries "
            f"({'y, x' if ndim == 2 else 'z, y, x'}) for {ndim}D data"
        )
    return size


def round_up(size: Sequence[int], multiple: Sequence[int]) -> list[int]:
    """Round each size up to a multiple of the matching entry of ``multiple``."""
    return [int(math.ceil(s / m) * m) for s, m in zip(size, multiple, strict=True)]


def check_input(image: torch.Tensor, spec: DataSpec, name: str, leading: str = "1") -> None:
    """Check a ``predict`` input against the data spec.

    Args:
        image: The input tensor.
        spec: The model's data spec.
        name: Baseline name, for the message.
        leading: ``"1"`` when the leading axis must be 1, ``"T"`` for any length (sequences).

    Raises:
        CellbenchError: Naming the expected and the actual shape.
    """
    axes = ("Z, " if spec.ndim == 3 else "") + "Y, X"
    expected = f"({leading}, {spec.in_channels}, {axes})"
    ok = (
        isinstance(image, torch.Tensor)
        and image.ndim == spec.ndim + 2
        and image.shape[1] == spec.in_channels
        and (leading != "1" or image.shape[0] == 1)
        and image.shape[0] >= 1
        and min(image.shape[2:]) >= 1
    )
    if not ok:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise CellbenchError(f"{name}.predict expects a tensor of shape {expected}, got {got}")


def module_device(module: nn.Module) -> torch.device:
    """Device of a module's first parameter (CPU for a module without parameters)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put a module in eval mode for the block and restore its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def adapt_first_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer convolution weight trained on RGB to ``in_channels`` inputs.

    3 channels keep the weight unchanged. Any other count gives every input channel the mean of
    the three RGB filters scaled by ``3 / in_channels`` (for 1 channel: the sum of the RGB
    filters). The filters summed over the input channels then equal the RGB filters summed, so
    an input whose channels all carry the same image gets exactly the response the RGB network
    gives to that grey image; training breaks the symmetry between channels.

    Args:
        weight: ``(out, 3, *kernel)`` weight.
        in_channels: Input channels wanted.

    Returns:
        ``(out, in_channels, *kernel)`` weight (a new tensor).
    """
    if weight.shape[1] != 3:
        raise CellbenchError(
            f"cannot adapt a first convolution with {weight.shape[1]} input channels "
            "(expected an RGB, 3-channel one)"
        )
    if in_channels == 3:
        return weight.clone()
    mean = weight.mean(dim=1, keepdim=True) * (3.0 / in_channels)
    return mean.repeat(1, in_channels, *([1] * (weight.ndim - 2)))
