"""The sandbox a submitted model runs in: what it may touch, and how each limit stops it.

The child runs real probe code (tests/submissions/sandbox_probe.py) that tries what a hostile
model would: read the cache, write outside its scratch folder, open sockets, signal its
parent, and exhaust memory, CPU time, wall-clock time, open files and threads.
"""

import os
import socket
from pathlib import Path

import pytest

from cellbench.submissions.sandbox import (
    SandboxLimitError,
    SandboxLimits,
    capabilities,
    raise_for,
    run_folder,
    run_in_sandbox,
)

CAPS = capabilities()
LANDLOCK = CAPS["landlock_abi"]
needs_landlock = pytest.mark.skipif(
    LANDLOCK == 0, reason="kernel without Landlock: the sandbox cannot confine the filesystem"
)
PROBE = "tests.submissions.sandbox_probe"


def _run(entry: str, probe, limits: SandboxLimits, protected=None):
    with run_folder() as run:
        (run / "inputs" / "store.zarr").mkdir(parents=True)
        (run / "inputs" / "store.zarr" / "zarr.json").write_text("{}")
        (run / "model").mkdir()
        job = {"entry": f"{PROBE}:{entry}", "probe": probe}
        result = run_in_sandbox(job, run, limits, plugins=(PROBE,), protected=protected)
        folder = run
    assert not folder.exists()  # the run folder goes, whatever happened
    return result


@pytest.fixture
def listeners(tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    path = tmp_path / "s.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    unix.listen()
    yield tcp.getsockname()[1], str(path)
    tcp.close()
    unix.close()


def test_child_cannot_read_write_connect_or_signal_outside(tmp_path, listeners, monkeypatch):
    home = Path(os.environ["CELLBENCH_HOME"])
    secret = home / "stores" / "labels.bin"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"hidden labels")
    outside = tmp_path / "pwned.txt"
    port, unix_path = listeners
    probe = {
        "protected_file": str(secret),
        "protected_dir": str(home),
        "outside_file": str(outside),
        "port": port,
        "unix_socket": unix_path,
    }
    result = _run("probe", probe, SandboxLimits(max_runtime_s=60))
    assert result.outcome == "ok", result.message + result.log_tail
    got = result.extra["probe"]
    assert got["read_inputs"] == "ok" and got["write_work"] == "ok"
    # network: no socket at all where seccomp runs, else no route out of the namespace
    assert got["tcp_connect"] != "ok" and got["unix_connect"] != "ok"
    if CAPS["seccomp"]:
        assert got["tcp_connect"] == got["unix_connect"] == "PermissionError:1"
        assert result.protections["syscalls"].startswith("19 system calls refused")
    assert not outside.exists()
    if LANDLOCK:
        denied = "PermissionError:13"
        for key in (
            "write_inputs",
            "read_protected",
            "list_protected",
            "write_outside",
            "read_etc_hostname",
            "list_root",
            "symlink_in_work",
        ):
            assert got[key] == denied, key
        assert result.protections["filesystem"].startswith(f"Landlock ABI {LANDLOCK}")
    if LANDLOCK >= 6:
        assert got["signal_parent"] == "PermissionError:1"
    assert result.protections["capabilities"] == "all dropped"
    assert result.protections["limits"]["open_files"] == 256


@pytest.mark.parametrize(
    "limit,limits",
    [
        ("memory", SandboxLimits(max_runtime_s=60, max_memory_bytes=256 << 20)),
        ("cpu-time", SandboxLimits(max_runtime_s=60, max_cpu_s=2)),
        ("wall-clock", SandboxLimits(max_runtime_s=3)),
        ("open-files", SandboxLimits(max_runtime_s=60, max_open_files=64)),
        ("processes", SandboxLimits(max_runtime_s=60, max_processes=32)),
    ],
)
def test_each_limit_stops_the_run_with_a_message(limit, limits):
    result = _run("hog", limit, limits)
    assert result.outcome == "limit" and result.limit == limit, (result, result.log_tail)
    assert result.done == 1 and result.total == 3 and result.last_sample == "first"
    with pytest.raises(SandboxLimitError) as err:
        raise_for(result, limits, "model.pt")
    words = {
        "memory": "memory limit of 256 MB",
        "cpu-time": "CPU-time limit of 2 s",
        "wall-clock": "wall-clock limit of 3 s",
        "open-files": "open-file limit of 64",
        "processes": "process/thread limit of 32",
    }[limit]
    assert str(err.value).startswith(f"model.pt: model run stopped at the {words} after 1 of 3")
    assert "(last: first)" in str(err.value) and "peak memory" in str(err.value)
    if limit == "wall-clock":
        assert 3 <= result.model_runtime_s < 10


def test_protected_path_inside_a_readable_root_is_refused(tmp_path):
    from cellbench.submissions.sandbox import SandboxError

    with pytest.raises(SandboxError, match="would be able to read protected data"):
        _run("probe", {}, SandboxLimits(), protected=[Path("/usr/lib")])
