"""Real servers for the server tests: a toy dataset, a challenge file, processes, uploads."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import yaml

from cellbench.predictions import Prediction, PredictionWriter

REPO = Path(__file__).resolve().parents[2]
DATASET = "toy-nuclei@1.0"
CHALLENGE = "toy-challenge"


def build_dataset(home: Path) -> None:
    """Build and import the toy dataset (24 samples, 6 in the hidden test split) into ``home``."""
    code = (
        "from cellbench.registry import import_store\n"
        "from cellbench.store.zarr_store import build_store\n"
        "from tests.factories import toy_samples\n"
        "card = {'id': 'toy-nuclei', 'version': '1.0', 'tasks': ['instance-segmentation'],"
        " 'title': 'Toy nuclei'}\n"
        f"s = build_store(toy_samples('instance-segmentation', n=24), {str(home / 'toy.zarr')!r},"
        " card)\n"
        "import_store(s.path)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env(home), check=True, timeout=300)


def env(home: Path, **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out.pop("CELLBENCH_TOKEN", None)
    out.update(
        CELLBENCH_HOME=str(home),
        CELLBENCH_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(REPO), out.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **extra,
    )
    return out


def write_challenge(path: Path, **over) -> Path:
    data = {
        "id": CHALLENGE,
        "title": "Toy challenge",
        "description": "Segment toy nuclei.",
        "dataset": DATASET,
        "task": "instance-segmentation",
        "hidden_split": "test",
        "limits": {
            "submissions_per_day": 50,
            "max_upload": "2MB",
            "max_model_runtime_s": 60,
            "max_model_memory": "2GB",
        },
        "partition": {"public_fraction": 0.5, "seed": 0},
        "public_metadata": ["plate"],
        "scoring": {"n_bootstrap": 50},
        "phases": [{"name": "open", "deadline": "2099-01-01T00:00:00Z"}],
    }
    data.update(over)
    path.write_text(yaml.safe_dump(data))
    return path


class ServerProcess:
    """``cellbench serve`` in a subprocess on 127.0.0.1 (a random free port)."""

    def __init__(self, home: Path, challenge: Path, db: str, workers: int = 1, lease: float = 3):
        self.home, self.challenge, self.db = home, challenge, db
        self.workers, self.lease = workers, lease
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 180) -> ServerProcess:
        ready = self.home / f"ready-{time.monotonic_ns()}.json"
        log = (self.home / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cellbench",
                "serve",
                str(self.challenge),
                "--db",
                self.db,
                "--port",
                "0",
                "--workers",
                str(self.workers),
                "--lease-seconds",
                str(self.lease),
                "--ready-file",
                str(ready),
            ],
            env=env(self.home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {(self.home / 'server.log').read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start in time")
            time.sleep(0.1)
        self.url = json.loads(ready.read_text())["url"]
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_worker(home: Path, db: str, lease: float = 3) -> subprocess.Popen:
    log = (home / "worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "cellbench", "worker", "--lease-seconds", str(lease)],
        env=env(home, CELLBENCH_DB=db),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def ground_truth(home: Path) -> dict[str, np.ndarray]:
    from cellbench.store.zarr_store import DatasetStore

    store = DatasetStore.open(home / "toy.zarr")
    return {s: np.asarray(store.labels(s)[...]).astype(np.int32) for s in store.sample_ids("test")}


def predictions_zip(masks: dict[str, np.ndarray], folder: Path, name: str = "preds") -> bytes:
    """A zipped canonical prediction store of the given masks."""
    store = folder / f"{name}.zarr"
    with PredictionWriter(store, "instance-segmentation", "toy-nuclei", "1.0", "test") as w:
        for sid, mask in masks.items():
            w.add(Prediction(sid, mask=mask))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(store.rglob("*")):
            if p.is_file():
                zf.write(p, f"{store.name}/{p.relative_to(store).as_posix()}")
    return buf.getvalue()


def manifest(**over) -> str:
    data = {
        "name": "entry",
        "authors": ["A. Author"],
        "contact": "a@example.org",
        "code": {"url": "https://example.org/code", "commit": "abcdef0"},
        "training_data": "toy train split",
        "n_parameters": 0,
        "seed": 0,
        "hardware": "cpu",
        "license": "MIT",
        "kind": "predictions",
    }
    data.update(over)
    return yaml.safe_dump(data)


def upload(
    url: str, token: str | None, data: bytes, *, filename: str = "preds.zip", **over
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    kind = over.get("kind", "predictions")
    return httpx.post(
        f"{url}/api/challenges/{CHALLENGE}/submissions",
        headers=headers,
        data={"manifest": manifest(**over), "kind": kind},
        files={"file": (filename, data, "application/octet-stream")},
        timeout=60,
    )


def wait_final(url: str, token: str, sid: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = httpx.get(
            f"{url}/api/submissions/{sid}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()
        if view.get("final"):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"submission {sid} still {view.get('state')}")
        time.sleep(0.3)


def leaderboard_when(url: str, ready, timeout: float = 10) -> dict:
    """The leaderboard once ``ready(board)`` holds (boards are cached for up to a second)."""
    deadline = time.monotonic() + timeout
    while True:
        board = httpx.get(f"{url}/api/challenges/{CHALLENGE}/leaderboard", timeout=30).json()
        if ready(board) or time.monotonic() > deadline:
            return board
        time.sleep(0.2)
