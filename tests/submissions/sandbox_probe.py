"""Code run inside the sandbox child by tests: tries what a hostile model would, reports back."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _attempt(fn) -> str:
    try:
        fn()
        return "ok"
    except OSError as err:
        return f"{type(err).__name__}:{err.errno}"


def probe(job: dict[str, Any], status: Any) -> dict[str, Any]:
    """Try to read, write, connect and signal outside the sandbox; return what happened."""
    run = Path(job["run_dir"])
    targets = job["probe"]
    results: dict[str, str] = {}
    inputs = run / "inputs" / "store.zarr"
    results["read_inputs"] = _attempt(lambda: (inputs / "zarr.json").read_bytes())
    results["write_work"] = _attempt(lambda: (run / "work" / "ok.txt").write_text("fine"))
    results["write_inputs"] = _attempt(lambda: (run / "inputs" / "x").write_text("no"))
    results["read_protected"] = _attempt(lambda: Path(targets["protected_file"]).read_bytes())
    results["list_protected"] = _attempt(lambda: os.listdir(targets["protected_dir"]))
    results["write_outside"] = _attempt(lambda: Path(targets["outside_file"]).write_text("pwned"))
    results["read_etc_hostname"] = _attempt(lambda: Path("/etc/hostname").read_bytes())
    results["list_root"] = _attempt(lambda: os.listdir("/"))
    results["symlink_in_work"] = _attempt(lambda: os.symlink("/etc", run / "work" / "link"))

    def connect() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(("127.0.0.1", int(targets["port"])))

    def unix() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(targets["unix_socket"])

    results["tcp_connect"] = _attempt(connect)
    results["unix_connect"] = _attempt(unix)
    results["signal_parent"] = _attempt(lambda: os.kill(int(job["parent_pid"]), 0))
    return {"usage": {}, "extra": {"probe": results, "uid": os.getuid()}}


def hog(job: dict[str, Any], status: Any) -> dict[str, Any]:
    """Break the limit named in the job: memory, cpu-time, wall-clock, open-files, processes."""
    import threading
    import time

    what = job["probe"]
    status.send("start", total=3)
    status.send("progress", done=1, total=3, sample="first")
    if what == "memory":
        blocks = []
        while True:
            blocks.append(bytearray(64 << 20))
    elif what == "cpu-time":
        while True:
            sum(range(10_000))
    elif what == "wall-clock":
        time.sleep(3600)
    elif what == "open-files":
        handles = [open(os.devnull) for _ in range(100_000)]  # noqa: SIM115
        del handles
    elif what == "processes":
        threads = []
        for _ in range(10_000):
            t = threading.Thread(target=time.sleep, args=(30,), daemon=True)
            t.start()
            threads.append(t)
    return {"usage": {}, "extra": {}}
