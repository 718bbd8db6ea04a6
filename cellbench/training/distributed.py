"""Device selection and multi-process training under ``torchrun`` (no code changes needed).

``torchrun --nproc_per_node=N -m cellbench train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`setup` sees them, initialises the process group (NCCL on CUDA, Gloo on
CPU) and pins each process to ``cuda:LOCAL_RANK``. Without them everything is a no-op and the
run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cellbench.training.errors import TrainingError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the process group.

    Attributes:
        rank: Global rank.
        world: Number of processes.
        local_rank: Rank on this node.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that writes logs and checkpoints)."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Read the ``torchrun`` environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def select_device(request: str = "auto", local_rank: int = 0) -> torch.device:
    """Pick the training device.

    Args:
        request: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        local_rank: Rank on this node (``cuda`` becomes ``cuda:local_rank``).

    Raises:
        TrainingError: If CUDA is requested but not available.
    """
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError(
                f"device {request!r} requested but CUDA is not available "
                f"(torch {torch.__version__}); use --device cpu"
            )
        if request == "cuda":
            request = f"cuda:{local_rank}"
        device = torch.device(request)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def setup(request: str = "auto") -> tuple[DistInfo, torch.device]:
    """Detect torchrun, initialise the process group if needed and choose the device."""
    info = env_info()
    device = select_device(request, info.local_rank)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info, device


def teardown() -> None:
    """Destroy the process group (if one was initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank."""
    if _active():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over ranks."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def gather_objects(obj: Any) -> list[Any] | None:
    """Gather a picklable object from every rank on rank 0 (others get None)."""
    if not _active():
        return [obj]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_object(obj: Any) -> Any:
    """Send rank 0's object to every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
