"""Runtime and peak memory of model inference.

What is measured, and how:

* **wall time**: ``time.perf_counter`` around the whole inference loop over the split (reading
  images, normalising, running the model, post-processing, writing predictions).
* **peak resident memory (CPU)**: the process's resident set size sampled every 5 ms from
  ``/proc/self/statm`` by a background thread while inference runs; the maximum is reported as
  ``peak_memory_mb`` (the whole process, so it includes cellbench and the loaded runtimes), and
  the increase over the resident size just before inference as ``peak_memory_increase_mb``.
  Where ``/proc`` is unavailable, ``resource.getrusage`` ``ru_maxrss`` (lifetime peak) is used
  and the method says so. ``tracemalloc`` is not used: it sees only Python allocations, not
  the native buffers of torch or onnxruntime, which dominate.
* **peak GPU memory (CUDA)**: ``torch.cuda.max_memory_allocated`` after resetting the peak
  statistics, for TorchScript and safetensors models run by torch (onnxruntime's CUDA arena is
  not visible to torch, so it is not reported for ONNX).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@dataclass
class ResourceUsage:
    """Measured resources of one inference run.

    Attributes:
        runtime_s: Wall time in seconds.
        peak_memory_mb: Peak resident memory of the process in MiB.
        peak_memory_increase_mb: Peak minus resident memory before inference, in MiB.
        peak_gpu_memory_mb: ``torch.cuda.max_memory_allocated`` in MiB, if measured.
        method: How memory was measured (stored in the report's provenance).
    """

    runtime_s: float = 0.0
    peak_memory_mb: float | None = None
    peak_memory_increase_mb: float | None = None
    peak_gpu_memory_mb: float | None = None
    method: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "runtime_s": self.runtime_s,
            "peak_memory_mb": self.peak_memory_mb,
            "peak_memory_increase_mb": self.peak_memory_increase_mb,
            "peak_gpu_memory_mb": self.peak_gpu_memory_mb,
            "method": dict(self.method),
        }


class ResourceMonitor:
    """Context manager measuring wall time and peak memory of the code it wraps.

    Args:
        cuda: Also record ``torch.cuda.max_memory_allocated`` (torch must be importable).
        interval_s: RSS sampling interval.
    """

    def __init__(self, cuda: bool = False, interval_s: float = 0.005) -> None:
        self.cuda = cuda
        self.interval_s = interval_s
        self.usage = ResourceUsage()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._start_rss: int | None = None
        self._t0 = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss
            self._stop.wait(self.interval_s)

    def __enter__(self) -> ResourceMonitor:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start_rss = _rss_bytes()
        self._peak = self._start_rss or 0
        if self._start_rss is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        self.usage.runtime_s = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        mib = float(1 << 20)
        if self._start_rss is not None:
            end = _rss_bytes() or 0
            self._peak = max(self._peak, end)
            self.usage.peak_memory_mb = self._peak / mib
            self.usage.peak_memory_increase_mb = (self._peak - self._start_rss) / mib
            self.usage.method["memory"] = (
                "peak resident set size of the process, sampled every "
                f"{self.interval_s * 1000:g} ms from /proc/self/statm during inference"
            )
        else:
            self.usage.peak_memory_mb = _maxrss_bytes() / mib
            self.usage.method["memory"] = (
                "lifetime peak resident set size of the process (getrusage ru_maxrss)"
            )
        self.usage.method["runtime"] = "wall time of the inference loop (time.perf_counter)"
        if self.cuda:
            import torch

            self.usage.peak_gpu_memory_mb = torch.cuda.max_memory_allocated() / mib
            self.usage.method["gpu_memory"] = "torch.cuda.max_memory_allocated"
