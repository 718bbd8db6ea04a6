"""The queue under stress, on SQLite and PostgreSQL: many clients at once, a worker killed with
SIGKILL in the middle of a job, and the server killed with jobs queued.

Every submission must end scored exactly once: one ``scored`` event, one finished job, one
leaderboard-eligible result, nothing lost and nothing duplicated.
"""

from __future__ import annotations

import signal
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import select
from torch import nn

from tests.server.helpers import (
    ServerProcess,
    build_dataset,
    ground_truth,
    leaderboard_when,
    predictions_zip,
    start_worker,
    upload,
    wait_final,
    write_challenge,
)


class Slow(nn.Module):
    """Thresholds the image after about a second of busy work per image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x[:, 0]
        for _ in range(150000):
            y = y * 1.0
        return (y > 0.5).to(torch.int64)


@pytest.fixture(scope="module")
def setup(db_url, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    build_dataset(home)
    path = write_challenge(home / "challenge.yaml")
    return {"home": home, "challenge": path, "db": db_url}


def _teams(db: str, names: list[str]) -> list[str]:
    from cellbench.server.accounts import add_team
    from cellbench.server.db import make_engine

    engine = make_engine(db)
    try:
        return [add_team(engine, n) for n in names]
    finally:
        engine.dispose()


def _history(db: str, sid: str) -> tuple[list[str], list]:
    from cellbench.server.db import Event, Job, make_engine, sessions

    engine = make_engine(db)
    try:
        with sessions(engine)() as s:
            events = s.scalars(
                select(Event.state).where(Event.submission_id == sid).order_by(Event.id)
            ).all()
            jobs = s.scalars(select(Job).where(Job.submission_id == sid)).all()
        return list(events), list(jobs)
    finally:
        engine.dispose()


def _children(pid: int) -> list[int]:
    from pathlib import Path

    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _variants(home, n):
    truth = ground_truth(home)
    ids = sorted(truth)
    out = []
    for i in range(n):
        masks = {k: v.copy() for k, v in truth.items()}
        sid = ids[i % len(ids)]
        labels = np.unique(masks[sid][masks[sid] > 0])
        masks[sid][masks[sid] == labels[i % len(labels)]] = 0  # drop one object
        out.append(masks)
    return out


def test_sixteen_clients_at_once_each_scored_exactly_once(setup, tmp_path):
    server = ServerProcess(setup["home"], setup["challenge"], setup["db"], workers=2).start()
    try:
        tokens = _teams(setup["db"], [f"crowd-{i}" for i in range(4)])
        payloads = [
            predictions_zip(m, tmp_path, f"p{i}")
            for i, m in enumerate(_variants(setup["home"], 16))
        ]
        barrier = threading.Barrier(16)

        def client(i: int) -> str:
            barrier.wait()
            r = upload(
                server.url,
                tokens[i % 4],
                payloads[i],
                filename=f"p{i}.zip",
                name=f"crowd entry {i}",
            )
            assert r.status_code == 202, r.text
            return r.json()["id"]

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(client, range(16)))
        assert len(set(ids)) == 16
        views = [
            wait_final(server.url, tokens[i % 4], sid, timeout=300) for i, sid in enumerate(ids)
        ]
        assert [v["state"] for v in views] == ["scored"] * 16
        for sid in ids:
            events, jobs = _history(setup["db"], sid)
            assert events == ["queued", "running", "scored"], (sid, events)
            assert len(jobs) == 1 and jobs[0].state == "done" and jobs[0].attempts == 1
        listed = []
        for token in tokens:
            team = httpx.get(
                f"{server.url}/api/team", headers={"Authorization": f"Bearer {token}"}
            ).json()
            listed += [s["id"] for s in team["submissions"]]
        assert sorted(listed) == sorted(ids)
        board = leaderboard_when(
            server.url,
            lambda b: sum(r["n_scored"] for r in b["rows"] if r["team"].startswith("crowd-")) == 16,
        )
        crowd = [r for r in board["rows"] if r["team"].startswith("crowd-")]
        assert len(crowd) == 4 and sum(r["n_scored"] for r in crowd) == 16
    finally:
        server.stop()


def test_worker_killed_mid_job_is_requeued_and_scored_once(setup, tmp_path):
    server = ServerProcess(setup["home"], setup["challenge"], setup["db"], workers=0).start()
    first = second = None
    try:
        (token,) = _teams(setup["db"], ["killed"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.script(Slow()), str(tmp_path / "slow.pt"))
        r = upload(
            server.url,
            token,
            (tmp_path / "slow.pt").read_bytes(),
            filename="slow.pt",
            kind="torchscript",
        )
        sid = r.json()["id"]
        first = start_worker(setup["home"], setup["db"])
        deadline = time.monotonic() + 180
        while True:  # wait until the first worker runs the job's model in its sandbox child
            # /proc first, often: the sandbox lives from the model's loading to its last image
            # (a few seconds); the API, read through the worker and the database, can lag by
            # as much (in a CI run and a fresh-clone run the whole job ran between two looks
            # at both together)
            if _children(first.pid):
                view = httpx.get(
                    f"{server.url}/api/submissions/{sid}",
                    headers={"Authorization": f"Bearer {token}"},
                ).json()
                children = _children(first.pid)  # (still there after the API answered)
                if view["state"] == "running" and children:
                    break
                assert view["state"] in ("queued", "running"), view
            assert time.monotonic() < deadline, "the worker never ran the model in a child"
            assert first.poll() is None, "the worker exited"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children):  # it dies with its worker
            assert time.monotonic() < deadline, "the sandbox outlived its worker"
            time.sleep(0.1)
        second = start_worker(setup["home"], setup["db"])
        view = wait_final(server.url, token, sid, timeout=300)
        assert view["state"] == "scored", view
        events, jobs = _history(setup["db"], sid)
        assert events == ["queued", "running", "queued", "running", "scored"], events
        assert len(jobs) == 1 and jobs[0].attempts == 2 and jobs[0].state == "done"
        details = [e["detail"] for e in view["events"]]
        assert "stopped heartbeating" in details[2] and f"{first.pid}" in details[2]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(60)
        server.stop()


def test_server_killed_with_jobs_queued_loses_nothing(setup, tmp_path):
    server = ServerProcess(setup["home"], setup["challenge"], setup["db"], workers=0).start()
    (token,) = _teams(setup["db"], ["restart"])
    payloads = [
        predictions_zip(m, tmp_path, f"r{i}") for i, m in enumerate(_variants(setup["home"], 5))
    ]
    ids = [upload(server.url, token, p, filename="r.zip").json()["id"] for p in payloads]
    server.stop(signal.SIGKILL)
    restarted = ServerProcess(setup["home"], setup["challenge"], setup["db"], workers=2).start()
    try:
        views = [wait_final(restarted.url, token, sid, timeout=300) for sid in ids]
        assert [v["state"] for v in views] == ["scored"] * 5
        for sid in ids:
            assert _history(setup["db"], sid)[0] == ["queued", "running", "scored"]
        team = httpx.get(
            f"{restarted.url}/api/team", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert sorted(s["id"] for s in team["submissions"]) == sorted(ids)
    finally:
        restarted.stop()


def test_deadline_reveals_private_scores_and_closes_submissions(setup, tmp_path):
    import json
    import subprocess
    import sys

    from cellbench.challenge.receipts import verify_receipt
    from tests.server.helpers import CHALLENGE, env

    server = ServerProcess(setup["home"], setup["challenge"], setup["db"], workers=1).start()
    (token,) = _teams(setup["db"], ["deadline"])
    try:
        data = predictions_zip(ground_truth(setup["home"]), tmp_path, "d")
        sid = upload(server.url, token, data, filename="d.zip").json()["id"]
        before = wait_final(server.url, token, sid)
        assert before["state"] == "scored" and before["private"] is None
        info = httpx.get(f"{server.url}/api/challenges/{CHALLENGE}").json()
        assert info["commitment_salt"] is None
        published = info["label_commitment"]
    finally:
        server.stop()
    closed = write_challenge(
        tmp_path / "closed.yaml", phases=[{"name": "open", "deadline": "2020-01-01T00:00:00Z"}]
    )
    server = ServerProcess(setup["home"], closed, setup["db"], workers=0).start()
    try:
        view = httpx.get(
            f"{server.url}/api/submissions/{sid}", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert view["private"]["headline"]["value"] == 1.0 and view["private"]["n_samples"] == 3
        board = httpx.get(f"{server.url}/api/challenges/{CHALLENGE}/leaderboard").json()
        assert board["revealed"] and board["ranked_on"] == "private"
        row = next(r for r in board["rows"] if r["submission"] == sid)
        assert row["private"]["value"] == 1.0
        info = httpx.get(f"{server.url}/api/challenges/{CHALLENGE}").json()
        assert info["label_commitment"] == published  # deadlines are not committed to
        assert len(info["commitment_salt"]) == 64
        doc = httpx.get(f"{server.url}/receipts/{sid}.json").json()
        keys = httpx.get(f"{server.url}/api/keys").json()["keys"]
        body = verify_receipt(doc, keys[doc["signature"]["key_id"]].encode())
        assert body["kind"] == "final" and body["private"]["headline"]["value"] == 1.0
        assert body["issued_at"] == "2020-01-01T00:00:00Z"
        late = upload(server.url, token, data, filename="late.zip")
        assert late.status_code == 403 and "closed" in late.json()["detail"]
        # the commitment opens: recompute it from the labels and the revealed salt
        code = (
            "import json, sys\n"
            "from cellbench.challenge.prepare import label_commitment\n"
            "from cellbench.store.zarr_store import DatasetStore\n"
            "from cellbench.store.variants import hidden_label_manifest\n"
            f"s = DatasetStore.open({str(setup['home'] / 'toy.zarr')!r})\n"
            "info = json.loads(sys.stdin.read())\n"
            "print(label_commitment(hidden_label_manifest(s, 'test'), info['metric_parameters'],"
            " info['commitment_salt']))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(info),
            capture_output=True,
            text=True,
            env=env(setup["home"]),
            check=True,
        )
        assert out.stdout.strip() == info["label_commitment"]
    finally:
        server.stop()
