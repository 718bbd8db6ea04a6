"""Run a submitted model in a separate, locked-down process: the sandbox.

Every submitted model (TorchScript, ONNX, safetensors package) is loaded and run only here,
never in the calling process. :func:`run_model` lays out a private run folder::

    <run>/inputs/store.zarr   read-only: the split's images only (no labels, no other split)
    <run>/model/              read-only: a copy of the model file(s), nothing beside them
    <run>/pkgs/               read-only: links to the cellbench package (and local plugins)
    <run>/work/               the only writable place: HOME, TMPDIR, the predictions

and starts a fresh Python interpreter on this very file (``python -P sandbox.py --child``)
with a scrubbed environment (no credentials, no ``CELLBENCH_*`` paths). Before the child
imports anything heavy or touches the model it locks itself down, in this order:

1. **network**: a new user + network namespace (``unshare(CLONE_NEWUSER | CLONE_NEWNET)``;
   only a down loopback interface exists inside). Where the kernel refuses (user namespaces
   disabled, a container's seccomp profile), a network namespace alone is tried (needs
   ``CAP_SYS_ADMIN``); where that fails too there is no namespace, and the seccomp filter of
   step 4 is the network barrier. What was applied is reported in
   :attr:`SandboxResult.protections`.
2. **resource limits** (``setrlimit``): CPU seconds (``RLIMIT_CPU``), open files
   (``RLIMIT_NOFILE``), processes and threads (``RLIMIT_NPROC``, counted per sandbox inside
   its user namespace), file size (``RLIMIT_FSIZE``), no core dumps; the address-space limit
   (``RLIMIT_AS``) is set once the runtimes are imported, to the size reached then plus
   ``max_memory_bytes``, so the limit bounds what the model run adds, not the fixed cost of
   loading torch or onnxruntime.
3. **capabilities and privileges**: every capability is dropped from the bounding, permitted,
   effective and inheritable sets and ``no_new_privs`` is set.
4. **filesystem** (Landlock, Linux >= 5.13): read-only access to the Python installation, the
   site-packages folders, the cellbench package, a few system folders and files the runtimes
   read (``/usr``, ``/lib*``, ``/proc/self``, CPU topology, ``/etc/ld.so.cache``), the
   inputs and the model; read-write access to ``work/`` only. Everything else - the cache with
   the full stores and their labels, leaderboards, the home folder, server storage - cannot be
   opened, listed or written. Landlock ABI >= 4 also refuses every TCP bind/connect and
   ABI >= 6 confines abstract Unix sockets and signals to the sandbox.
5. **system calls** (seccomp, x86-64 and aarch64): ``socket`` (every family, Unix sockets
   included), ``io_uring``, ``ptrace``, ``process_vm_*``, ``bpf``, ``perf_event_open``,
   ``userfaultfd``, key-ring calls, ``unshare``/``setns``, ``mount`` and ``chroot`` fail with
   ``EPERM``; calls of another architecture's ABI (x32, i386) are refused.
6. **parent death**: the child is killed if its parent (a server worker) dies.

The parent keeps the wall-clock limit: at the deadline it kills the child's whole process
group. Breaches end with :class:`SandboxLimitError`, whose message names the limit and how far
the run got (samples predicted, runtime, CPU time, peak memory); runtime and peak memory of
every run are returned (:class:`SandboxResult`).

What this does not protect against: bugs in the kernel or in the native runtimes that let code
escape Landlock or seccomp; reading what the Python installation holds (it is readable); using
all the CPU time and memory it is granted; a model that answers with whatever it likes (its
predictions are validated and scored like any other). Where Landlock is unavailable (kernels
before 5.13, or disabled), the model can read every file the running user can read, including
the labels in the cache: run challenge workers only where :func:`capabilities` reports
Landlock, or under a dedicated user that cannot read them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cellbench.errors import CellbenchError

GiB = 1 << 30

#: Default limits of ``cellbench submit`` (also written in the README).
DEFAULT_MAX_RUNTIME_S = 1800.0
DEFAULT_MAX_MEMORY_BYTES = 8 * GiB


def parse_bytes(text: str | int) -> int:
    """``8GB``, ``512MB``, ``1.5GiB``, ``1000000`` -> bytes (units are powers of 1024).

    Raises:
        CellbenchError: For anything else.
    """
    raw = str(text).strip().upper().replace(" ", "")
    units = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number = raw.rstrip("IB").rstrip("KMGT") if raw[-1:].isalpha() else raw
    unit = raw[len(number) :].rstrip("B").rstrip("I")
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value <= 0 or len(raw) > 32:
        raise CellbenchError(f"memory size {text!r}: expected e.g. 8GB, 512MB or a byte count")
    return int(value * units[unit])


class SandboxError(CellbenchError):
    """A sandboxed model run failed (the model raised, or the sandbox could not start)."""


class SandboxUnavailableError(SandboxError):
    """The sandbox could not be set up as required (e.g. no Landlock where it is required)."""


class SandboxLimitError(SandboxError):
    """A sandboxed model run broke one of its limits and was stopped.

    Attributes:
        limit: ``wall-clock``, ``cpu-time``, ``memory``, ``open-files``, ``processes`` or
            ``output-size``.
        result: What was measured up to the breach.
    """

    def __init__(self, message: str, limit: str, result: SandboxResult) -> None:
        super().__init__(message)
        self.limit = limit
        self.result = result


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed model run.

    Attributes:
        max_runtime_s: Wall-clock seconds from start to exit (the parent kills the child).
        max_memory_bytes: Address space the run may add once its runtimes are loaded.
        max_cpu_s: CPU seconds (all threads); default ``max_runtime_s * threads + 60``.
        max_open_files: Open file descriptors.
        max_processes: Processes and threads of the sandbox.
        max_output_bytes: Largest file the child may write.
        threads: Intra-op threads of torch/onnxruntime/BLAS.
        max_startup_s: Wall-clock and CPU seconds allowed for starting the child and importing
            its runtimes (torch alone can take seconds on a busy machine); the runtime and
            CPU limits count from the moment the runtimes are loaded.
    """

    max_runtime_s: float = DEFAULT_MAX_RUNTIME_S
    max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES
    max_cpu_s: float | None = None
    max_open_files: int = 256
    max_processes: int = 64
    max_output_bytes: int = 16 * GiB
    threads: int = 1
    max_startup_s: float = 300.0

    @property
    def cpu_seconds(self) -> int:
        """The CPU-time limit in whole seconds."""
        if self.max_cpu_s is not None:
            return max(1, int(self.max_cpu_s + 0.999))
        return int(self.max_runtime_s * max(1, self.threads) + 30)


@dataclass
class SandboxResult:
    """What a sandboxed run produced and used.

    Attributes:
        outcome: ``ok``, ``problems`` (the model broke the output convention), ``error`` or
            ``limit``.
        limit: The limit broken (``outcome == "limit"``).
        message: One line describing a failure.
        problems: Output-convention problems reported by the run.
        done: Samples predicted.
        total: Samples to predict.
        last_sample: The last sample predicted.
        runtime_s: Wall time of the child process.
        model_runtime_s: Wall time from the runtimes being loaded to the end (what the
            runtime limit bounds).
        cpu_s: CPU seconds of the child (user + system).
        peak_memory_mb: Peak resident memory of the child (``ru_maxrss``).
        usage: Runtime and memory of the inference loop measured inside the child
            (:class:`cellbench.submissions.measure.ResourceUsage` as a dict).
        extra: Facts the run reported (runtime, parameter count, device).
        protections: What the child applied (network, filesystem, limits).
        log_tail: The end of the child's stdout/stderr.
    """

    outcome: str = "error"
    limit: str = ""
    message: str = ""
    problems: list[str] = field(default_factory=list)
    done: int = 0
    total: int = 0
    last_sample: str = ""
    runtime_s: float = 0.0
    model_runtime_s: float = 0.0
    cpu_s: float = 0.0
    peak_memory_mb: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    protections: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


# ------------------------------------------------------------------------------ kernel
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECCOMP = 1, 38, 24, 22
_SECCOMP_MODE_FILTER = 2

# Landlock access rights, by the ABI version that introduced them.
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_REMOVE_DIR, _FS_REMOVE_FILE, _FS_MAKE_CHAR, _FS_MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_FS_MAKE_REG, _FS_MAKE_SOCK, _FS_MAKE_FIFO, _FS_MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
_FS_MAKE_SYM, _FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_FS_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_FS_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
_FS_WRITE = (
    _FS_READ_FILE
    | _FS_READ_DIR
    | _FS_WRITE_FILE
    | _FS_REMOVE_DIR
    | _FS_REMOVE_FILE
    | _FS_MAKE_DIR
    | _FS_MAKE_REG
    | _FS_REFER
    | _FS_TRUNCATE
)
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1 << 0, 1 << 1

# seccomp: syscalls refused with EPERM, per architecture (numbers from the kernel's tables).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENIED_SYSCALLS = {
    "x86_64": {
        "socket": 41,
        "ptrace": 101,
        "mount": 165,
        "umount2": 166,
        "pivot_root": 155,
        "chroot": 161,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "unshare": 272,
        "perf_event_open": 298,
        "setns": 308,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "bpf": 321,
        "userfaultfd": 323,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
    },
    "aarch64": {
        "socket": 198,
        "ptrace": 117,
        "mount": 40,
        "umount2": 39,
        "pivot_root": 41,
        "chroot": 51,
        "add_key": 217,
        "request_key": 218,
        "keyctl": 219,
        "unshare": 97,
        "perf_event_open": 241,
        "setns": 268,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "bpf": 280,
        "userfaultfd": 282,
        "io_uring_setup": 425,
        "io_uring_enter": 426,
        "io_uring_register": 427,
    },
}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def landlock_abi() -> int:
    """Landlock ABI version of the running kernel (0 when unavailable)."""
    if sys.platform != "linux":
        return 0
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(
        ctypes.c_long(_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1)
    )
    return max(0, int(abi))


def capabilities() -> dict[str, Any]:
    """What the sandbox can use on this machine (checked without starting a child).

    Returns:
        ``{"platform", "landlock_abi", "seccomp", "namespaces"}``; ``namespaces`` is a
        best guess (the child tries and reports what it got).
    """
    machine = platform.machine()
    userns = Path("/proc/sys/user/max_user_namespaces")
    try:
        max_userns = int(userns.read_text().strip()) if userns.exists() else 0
    except (OSError, ValueError):
        max_userns = 0
    return {
        "platform": f"{sys.platform}/{machine}",
        "landlock_abi": landlock_abi(),
        "seccomp": sys.platform == "linux" and machine in _DENIED_SYSCALLS,
        "namespaces": sys.platform == "linux" and max_userns > 0,
    }


# ------------------------------------------------------------------------------ child side
class _Status:
    """The child's report channel to its parent: one JSON object per line on a pipe."""

    def __init__(self, fd: int) -> None:
        self.fh = os.fdopen(fd, "w", buffering=1, encoding="utf-8")

    def send(self, event: str, **data: Any) -> None:
        self.fh.write(json.dumps({"event": event, **data}, default=str) + "\n")
        self.fh.flush()


def _unshare_network() -> str:
    libc = _libc()
    uid, gid = os.geteuid(), os.getegid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0:
        # map our own ids, so files created in work/ have an owner (else EOVERFLOW)
        try:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
            Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        except OSError as err:
            return f"user+network namespace, id map failed ({err.strerror})"
        return "user+network namespace"
    first = ctypes.get_errno()
    if libc.unshare(_CLONE_NEWNET) == 0:
        return "network namespace"
    return (
        f"none (unshare refused: {os.strerror(first)}; {os.strerror(ctypes.get_errno())}); "
        "sockets refused by seccomp"
    )


def _drop_capabilities() -> str:
    libc = _libc()
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text().strip())
    except (OSError, ValueError):
        last = 40
    for cap in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = struct.pack("II", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = ctypes.create_string_buffer(24)  # two zeroed __user_cap_data_struct
    hdr = ctypes.create_string_buffer(header, len(header))
    if libc.capset(hdr, data) != 0:
        return f"capset failed ({os.strerror(ctypes.get_errno())})"
    return "all dropped"


def _set_limits(limits: dict[str, Any]) -> dict[str, Any]:
    applied: dict[str, Any] = {}
    cpu = int(limits["cpu_seconds"]) + int(limits["max_startup_s"])  # lowered after imports
    wanted = {
        "cpu_s": (resource.RLIMIT_CPU, (cpu, cpu + 5)),
        "open_files": (resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2),
        "processes": (resource.RLIMIT_NPROC, (limits["max_processes"],) * 2),
        "file_size_bytes": (resource.RLIMIT_FSIZE, (limits["max_output_bytes"],) * 2),
        "core_bytes": (resource.RLIMIT_CORE, (0, 0)),
    }
    for name, (which, value) in wanted.items():
        try:
            _soft, hard_now = resource.getrlimit(which)
            hard = value[1] if hard_now == resource.RLIM_INFINITY else min(value[1], hard_now)
            resource.setrlimit(which, (min(value[0], hard), hard))
            applied[name] = min(value[0], hard)
        except (OSError, ValueError) as err:
            applied[name] = f"not set ({err})"
    return applied


def _landlock(read: list[str], write: list[str], files_rw: list[str], abi: int) -> str:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    handled_fs = _FS_BY_ABI.get(abi, (1 << 16) - 1)
    handled_net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    buf = ctypes.create_string_buffer(attr[:size], size)
    fd = libc.syscall(
        ctypes.c_long(_LANDLOCK_CREATE_RULESET), buf, ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")

    def add(path: str, access: int) -> None:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # a path that does not exist needs no rule
        try:
            if not os.path.isdir(path):
                access &= _FS_FILE_RIGHTS
            rule = struct.pack("=Qi", access & handled_fs, pfd)
            rbuf = ctypes.create_string_buffer(rule, len(rule))
            if libc.syscall(ctypes.c_long(_LANDLOCK_ADD_RULE), fd, 1, rbuf, 0) != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule {path} failed")
        finally:
            os.close(pfd)

    try:
        for path in read:
            add(path, _FS_READ)
        for path in write:
            add(path, _FS_WRITE)
        for path in files_rw:
            add(path, _FS_READ_FILE | _FS_WRITE_FILE)
        if libc.syscall(ctypes.c_long(_LANDLOCK_RESTRICT_SELF), fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    parts = [f"Landlock ABI {abi}: read-only runtimes, inputs and model; writes to work/ only"]
    if handled_net:
        parts.append("no TCP bind/connect")
    if scoped:
        parts.append("abstract Unix sockets and signals scoped to the sandbox")
    return "; ".join(parts)


def _bpf(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _seccomp() -> str:
    machine = platform.machine()
    if machine not in _DENIED_SYSCALLS:
        return f"not available on {machine}"
    ld_w_abs, jeq_k, jge_k, ret_k = 0x20, 0x15, 0x35, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | errno.EPERM
    numbers = sorted(set(_DENIED_SYSCALLS[machine].values()))
    prog = [
        _bpf(ld_w_abs, 4),  # seccomp_data.arch
        _bpf(jeq_k, _AUDIT_ARCH[machine], 1, 0),
        _bpf(ret_k, eperm),
        _bpf(ld_w_abs, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [_bpf(jge_k, 0x40000000, 0, 1), _bpf(ret_k, eperm)]  # x32 ABI
    for i, nr in enumerate(numbers):
        remaining = len(numbers) - i - 1
        prog.append(_bpf(jeq_k, nr, remaining + 1, 0))
    prog.append(_bpf(ret_k, allow))
    prog.append(_bpf(ret_k, eperm))
    # every match jumps to the last instruction (EPERM); no match falls through to ALLOW
    filt = b"".join(prog)
    buf = ctypes.create_string_buffer(filt, len(filt))
    fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog, len(fprog))
    libc = _libc()
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, fbuf, 0, 0) != 0:
        return f"not applied ({os.strerror(ctypes.get_errno())})"
    return f"{len(numbers)} system calls refused (socket, io_uring, ptrace, unshare, mount, ...)"


def _lock_down(job: dict[str, Any], status: _Status) -> dict[str, Any]:
    """Apply every protection to this (still single-threaded) child; report what held."""
    libc = _libc()
    protections: dict[str, Any] = {}
    protections["network"] = _unshare_network() if job.get("namespaces", True) else "not asked"
    protections["limits"] = _set_limits(job["limits"])
    protections["capabilities"] = _drop_capabilities()
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    abi = landlock_abi()
    if abi > 0:
        try:
            protections["filesystem"] = _landlock(
                job["allow_read"], job["allow_write"], job["allow_rw_files"], abi
            )
        except OSError as err:
            protections["filesystem"] = f"Landlock failed ({err})"
    else:
        protections["filesystem"] = "Landlock unavailable: the run can read what the user can"
    protections["syscalls"] = _seccomp()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != job["parent_pid"]:
        os._exit(70)  # the parent is already gone
    if job.get("require_landlock") and not str(protections["filesystem"]).startswith("Landlock "):
        status.send("error", message=f"sandbox: {protections['filesystem']}")
        os._exit(71)
    return protections


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def resource_limit_of(err: BaseException) -> str | None:
    """The sandbox limit an exception shows was reached (``memory``, ``open-files``...) or None."""
    text = f"{type(err).__name__}: {err}".lower()
    if isinstance(err, MemoryError) or any(
        s in text
        for s in ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory")
    ):
        return "memory"
    if (isinstance(err, OSError) and err.errno == errno.EMFILE) or "too many open files" in text:
        return "open-files"
    if "can't start new thread" in text or "resource temporarily unavailable" in text:
        return "processes"
    if isinstance(err, OSError) and err.errno == errno.EFBIG:
        return "output-size"
    return None


def _child_main(job_file: str) -> None:
    """Entry point of the sandbox child (``python -P sandbox.py --child JOB``).

    Locks the process down, imports the job's runtimes (``preload``), any ``plugins`` and the
    ``entry`` function, sets the address-space limit, then calls ``entry(job, status)``.
    """
    import importlib

    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    status = _Status(int(job["status_fd"]))
    protections = _lock_down(job, status)
    status.send("ready", protections=protections)
    try:
        for module in [*job.get("preload", []), *job.get("plugins", [])]:
            importlib.import_module(module)
        module_name, _, func = str(job["entry"]).partition(":")
        entry = getattr(importlib.import_module(module_name), func)
        base = _vm_size()
        limit = base + int(job["limits"]["max_memory_bytes"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime) + 1 + int(job["limits"]["cpu_seconds"])
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        resource.setrlimit(resource.RLIMIT_CPU, (min(cpu, hard), min(cpu + 5, hard)))
        status.send("limits", address_space_bytes=limit, runtimes_bytes=base, cpu_limit_s=cpu)
        result = entry(job, status)
    except BaseException as err:  # report every failure to the parent, then exit
        from cellbench.errors import ValidationError

        if isinstance(err, ValidationError):
            status.send("problems", problems=err.problems, context=err.context)
            os._exit(3)
        message = f"{type(err).__name__}: {err}"
        limit_name = resource_limit_of(err)
        if limit_name:
            status.send("limit", limit=limit_name, message=message[:2000])
            os._exit(4)
        status.send("error", message=message[:2000])
        os._exit(2)
    status.send("done", **result)
    status.fh.close()
    os._exit(0)


# ------------------------------------------------------------------------------ parent side
def _package_root(module: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(module.split(".", 1)[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _runtime_read_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    base = Path(sys.base_prefix).resolve()
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        packages = "site-packages" in p.parts or "dist-packages" in p.parts
        if packages or p.suffix == ".zip" or _inside(p, base):
            paths.add(str(p))
    system = [
        "/usr",
        "/lib",
        "/lib64",
        "/bin",
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/sys/kernel",
        "/proc/sys/vm/overcommit_memory",
        "/sys/devices/system/cpu",
        "/sys/fs/cgroup",
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/etc/passwd",
        "/etc/group",
        "/etc/nsswitch.conf",
        "/dev/urandom",
        "/dev/random",
        "/dev/zero",
    ]
    resolved = {str(Path(p).resolve()) for p in paths if p}
    return sorted(resolved) + system


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _protected_default() -> list[Path]:
    from cellbench.store.cache import cellbench_home

    out = [cellbench_home(), Path.home()]
    for var in ("CELLBENCH_LEADERBOARDS", "CELLBENCH_SERVER_STORAGE"):
        if os.environ.get(var):
            out.append(Path(os.environ[var]))
    return out


def _reader(fd: int, events: list[dict[str, Any]], lock: threading.Lock) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if len(line) > 1 << 20:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                with lock:
                    events.append(event)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


_LIMIT_TEXT = {
    "wall-clock": "wall-clock limit of {max_runtime_s:g} s",
    "cpu-time": "CPU-time limit of {cpu_seconds} s",
    "memory": "memory limit of {max_memory_mb:.0f} MB",
    "open-files": "open-file limit of {max_open_files}",
    "processes": "process/thread limit of {max_processes}",
    "output-size": "output-size limit of {max_output_mb:.0f} MB",
}


def describe_limit(limit: str, limits: SandboxLimits) -> str:
    """Human words for a broken limit (``wall-clock`` -> ``wall-clock limit of 60 s``)."""
    return _LIMIT_TEXT.get(limit, limit).format(
        max_runtime_s=limits.max_runtime_s,
        cpu_seconds=limits.cpu_seconds,
        max_memory_mb=limits.max_memory_bytes / (1 << 20),
        max_open_files=limits.max_open_files,
        max_processes=limits.max_processes,
        max_output_mb=limits.max_output_bytes / (1 << 20),
    )


def run_in_sandbox(
    job: dict[str, Any],
    run_dir: Path,
    limits: SandboxLimits,
    *,
    plugins: tuple[str, ...] = (),
    protected: list[Path] | None = None,
    require_landlock: bool = False,
    extra_read: tuple[Path, ...] = (),
    extra_rw_files: tuple[Path, ...] = (),
    on_progress: Any = None,
) -> SandboxResult:
    """Run one job in a sandboxed child and wait for it (at most the wall-clock limit).

    The job names its ``entry`` (``"module:function"``, called in the child as
    ``entry(job, status)`` once the child is locked down; it returns a JSON-able dict and may
    send ``start``/``progress`` events with ``status.send``) and ``preload`` (modules imported
    before the memory limit is set, e.g. ``torch``). Submitted models use
    :func:`cellbench.submissions.runners.sandbox_entry`. ``run_dir`` must hold ``inputs/`` and
    ``model/`` (read-only to the child); ``work/`` and ``pkgs/`` are created here.

    Args:
        job: What to run (entry, preload, and the entry's own fields); paths relative to
            ``run_dir``.
        run_dir: The private run folder.
        limits: Limits of the run.
        plugins: Modules to import in the child before the model is loaded (baselines
            registered by the caller's own code; local runs only).
        protected: Paths the child must not be able to read; a run whose read-only roots
            would contain one is refused before it starts (default: the cellbench cache,
            the home folder, leaderboard and server storage roots).
        require_landlock: Refuse to run where the filesystem cannot be confined.
        extra_read: More read-only paths (e.g. GPU device files).
        extra_rw_files: Device files the child may write (e.g. ``/dev/nvidia0``).
        on_progress: Called with ``(done, total, sample)`` as samples are predicted.

    Returns:
        The result (``outcome`` tells how it ended; see also :func:`raise_for`).
    """
    run_dir = run_dir.resolve()
    work, pkgs = run_dir / "work", run_dir / "pkgs"
    work.mkdir(exist_ok=True)
    pkgs.mkdir(exist_ok=True)
    for module in ("cellbench", *plugins):
        root = _package_root(module)
        link = pkgs / module.split(".", 1)[0]
        if root is not None and not link.exists():
            link.symlink_to(root, target_is_directory=True)
    read = [
        *_runtime_read_paths(),
        str(pkgs),
        *(str(pkgs / p.name) for p in pkgs.iterdir()),
        *(str(Path(os.path.realpath(pkgs / p.name))) for p in pkgs.iterdir()),
        str(run_dir / "inputs"),
        str(run_dir / "model"),
        *(str(p) for p in extra_read),
    ]
    bad = []
    for guarded in protected if protected is not None else _protected_default():
        for root in read:
            if (
                Path(root).exists()
                and _inside(guarded, Path(root))
                and not _inside(Path(root), run_dir)
            ):
                bad.append(f"{guarded} lies inside {root}")
    if bad:
        raise SandboxUnavailableError(
            "sandbox: the model run would be able to read protected data ("
            + "; ".join(sorted(set(bad)))
            + "); move the cache or storage out of the Python installation"
        )
    status_r, status_w = os.pipe()
    full = {
        **job,
        "status_fd": status_w,
        "parent_pid": os.getpid(),
        "run_dir": str(run_dir),
        "plugins": list(plugins),
        "allow_read": read,
        "allow_write": [str(work)],
        "allow_rw_files": ["/dev/null", *(str(p) for p in extra_rw_files)],
        "require_landlock": require_landlock,
        "limits": {**asdict(limits), "cpu_seconds": limits.cpu_seconds},
    }
    job_file = run_dir / "job.json"
    job_file.write_text(json.dumps(full), encoding="utf-8")
    threads = str(max(1, limits.threads))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONPATH": str(pkgs),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "LANG": "C.UTF-8",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MALLOC_ARENA_MAX": "2",
        "MPLBACKEND": "Agg",
        "CELLBENCH_OFFLINE": "1",
        "CELLBENCH_HOME": str(work / "cellbench"),
        "HF_HUB_OFFLINE": "1",
    }
    log = run_dir / "child.log"
    cmd = [sys.executable, "-P", "-s", str(Path(__file__).resolve()), "--child", str(job_file)]
    events: list[dict[str, Any]] = []
    lock = threading.Lock()
    result = SandboxResult()
    started = time.perf_counter()
    with log.open("wb") as log_fh:
        try:
            proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=str(work),
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                pass_fds=(status_w,),
                start_new_session=True,
            )
        finally:
            os.close(status_w)
    reader = threading.Thread(target=_reader, args=(status_r, events, lock), daemon=True)
    reader.start()
    # the runtime limit counts from the moment the runtimes are loaded ("limits" event)
    deadline = started + limits.max_startup_s + limits.max_runtime_s
    loaded_at: float | None = None
    cpu_limit = float(limits.cpu_seconds + limits.max_startup_s)
    killed_at_deadline = False
    seen = 0
    rusage: Any = None
    wait_status = 0
    try:
        while True:
            pid, wait_status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            with lock:
                fresh = events[seen:]
                seen = len(events)
            for event in fresh:
                if event.get("event") == "limits":
                    loaded_at = time.perf_counter()
                    deadline = loaded_at + limits.max_runtime_s
                    cpu_limit = float(event.get("cpu_limit_s") or cpu_limit)
                elif event.get("event") == "progress" and on_progress is not None:
                    on_progress(event.get("done", 0), event.get("total", 0), event.get("sample"))
            if time.perf_counter() >= deadline:
                killed_at_deadline = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, wait_status, rusage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    ended = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(wait_status)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # nothing of the sandbox outlives it
    reader.join(timeout=5)
    result.runtime_s = ended - started
    result.model_runtime_s = ended - loaded_at if loaded_at is not None else 0.0
    result.cpu_s = float(rusage.ru_utime + rusage.ru_stime) if rusage else 0.0
    result.peak_memory_mb = float(rusage.ru_maxrss) / 1024.0 if rusage else 0.0
    result.log_tail = _tail(log)
    with lock:
        all_events = list(events)
    _apply_events(result, all_events)
    code = proc.returncode
    if killed_at_deadline:
        result.outcome, result.limit = "limit", "wall-clock"
        if loaded_at is None:
            result.outcome = "error"
            result.message = f"the sandbox did not start within {limits.max_startup_s:g} s"
    elif code < 0 and result.outcome in ("error", "ok"):
        sig = -code
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and result.cpu_s >= cpu_limit):
            result.outcome, result.limit = "limit", "cpu-time"
        elif sig == signal.SIGXFSZ:
            result.outcome, result.limit = "limit", "output-size"
        elif sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS) and any(
            word in result.log_tail.lower() for word in ("alloc", "memory")
        ):
            result.outcome, result.limit = "limit", "memory"
        else:
            name = signal.Signals(sig).name if sig in signal.Signals.__members__.values() else sig
            result.outcome = "error"
            result.message = f"the model run died with signal {name}"
    elif code != 0 and result.outcome == "ok":
        result.outcome, result.message = "error", f"the model run exited with status {code}"
    elif code != 0 and result.outcome == "error" and not result.message:
        last = result.log_tail.strip().splitlines()[-1:] or ["no output"]
        result.message = f"the model run exited with status {code}: {last[0][:300]}"
    return result


def _apply_events(result: SandboxResult, events: list[dict[str, Any]]) -> None:
    for event in events:
        kind = event.get("event")
        if kind == "ready":
            result.protections = dict(event.get("protections") or {})
        elif kind == "limits":
            result.protections["address_space_bytes"] = event.get("address_space_bytes")
        elif kind == "progress":
            result.done = int(event.get("done", 0))
            result.total = int(event.get("total", 0))
            result.last_sample = str(event.get("sample") or "")
        elif kind == "start":
            result.total = int(event.get("total", 0))
        elif kind == "done":
            result.outcome = "ok"
            result.usage = dict(event.get("usage") or {})
            result.extra = dict(event.get("extra") or {})
        elif kind == "problems":
            result.outcome = "problems"
            result.problems = [str(p) for p in event.get("problems") or []]
            result.message = str(event.get("context") or "")
        elif kind == "limit":
            result.outcome, result.limit = "limit", str(event.get("limit"))
            result.message = str(event.get("message") or "")
        elif kind == "error":
            result.outcome, result.message = "error", str(event.get("message") or "")


def raise_for(result: SandboxResult, limits: SandboxLimits, context: str) -> None:
    """Raise the error a finished run calls for (nothing when it succeeded).

    Raises:
        ValidationError: The model's outputs broke the I/O convention (every problem).
        SandboxLimitError: A limit was broken; the message says which and how far it got.
        SandboxError: The model failed to load or raised.
    """
    from cellbench.errors import ValidationError

    if result.outcome == "ok":
        return
    if result.outcome == "problems":
        raise ValidationError(result.problems, context=result.message or context)
    if result.outcome == "limit":
        where = (
            f"after {result.done} of {result.total} samples"
            + (f" (last: {result.last_sample})" if result.last_sample else "")
            if result.total
            else "before the first sample"
        )
        message = (
            f"{context}: model run stopped at the {describe_limit(result.limit, limits)} "
            f"{where}; ran {result.model_runtime_s:.1f} s, CPU {result.cpu_s:.1f} s, "
            f"peak memory {result.peak_memory_mb:.0f} MB"
        )
        raise SandboxLimitError(message, result.limit, result)
    first = (result.message.splitlines() or ["no message"])[0][:500]
    if first.startswith("sandbox:"):
        raise SandboxUnavailableError(f"{context}: {first}")
    raise SandboxError(f"{context}: model run failed: {first}")


@contextlib.contextmanager
def run_folder(parent: str | os.PathLike[str] | None = None) -> Any:
    """A fresh private run folder (mode 0700), removed with everything in it afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cellbench-sandbox-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":  # the sandbox child: python -P sandbox.py --child JOB
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        sys.exit("usage: sandbox.py --child JOB")
