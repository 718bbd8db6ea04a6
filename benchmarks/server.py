"""Challenge server under bounded load on loopback (not a test; numbers for benchmarks/README).

Three measurements, each against a real ``cellbench serve`` on 127.0.0.1 with SQLite (or
``--db postgresql://...``), on the catalog's synthetic-nuclei (16 hidden test images):

1. latency of ``GET /api/challenges/ID/leaderboard`` and ``GET /api/submissions/ID`` (with a
   token) under 50 concurrent clients: p50 and p95 over every request (goal p95 < 50 ms);
2. submissions scored per minute with 1 and with 2 workers (a batch of predictions uploads);
3. time from the start of an upload to its score being readable, against ``cellbench score``
   of the same predictions file in the same run (goal: within 1.5x).

Every request loop is bounded in count; the server and its workers are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CELLBENCH_TOKEN", None)
    env.update(
        CELLBENCH_HOME=str(home),
        CELLBENCH_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def _challenge(path: Path, n_bootstrap: int) -> Path:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "id": "bench",
                "title": "Benchmark",
                "dataset": "synthetic-nuclei@1.0",
                "task": "instance-segmentation",
                "limits": {"submissions_per_day": 100000, "max_upload": "64MB"},
                "partition": {"public_fraction": 0.5, "group_by": "well", "seed": 0},
                "public_metadata": ["plate", "well"],
                "scoring": {"n_bootstrap": n_bootstrap},
                "phases": [{"name": "open", "deadline": "2099-01-01T00:00:00Z"}],
            }
        )
    )
    return path


class Server:
    def __init__(self, home: Path, challenge: Path, db: str, workers: int) -> None:
        ready = home / f"ready-{workers}-{time.monotonic_ns()}.json"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cellbench",
                "serve",
                str(challenge),
                "--db",
                db,
                "--port",
                "0",
                "--workers",
                str(workers),
                "--ready-file",
                str(ready),
            ],
            env=_env(home),
            stdout=subprocess.DEVNULL,
            stderr=(home / "server.log").open("ab"),
        )
        deadline = time.monotonic() + 300
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"server did not start: {(home / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        self.url = json.loads(ready.read_text())["url"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _predictions(home: Path, out: Path) -> tuple[Path, Path]:
    code = (
        "import numpy as np\n"
        "from cellbench.registry import load\n"
        "from cellbench.predictions import Prediction, PredictionWriter\n"
        "s = load('synthetic-nuclei@1.0')\n"
        f"out = {str(out)!r}\n"
        "with PredictionWriter(out, 'instance-segmentation', s.id, s.version, 'test') as w:\n"
        "    for i, sid in enumerate(s.sample_ids('test')):\n"
        "        m = np.asarray(s.labels(sid)[...]).astype(np.int32)\n"
        "        m[m == (i % 5) + 1] = 0\n"
        "        w.add(Prediction(sid, mask=m))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(home), check=True)
    archive = out.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                zf.write(p, f"{out.name}/{p.relative_to(out).as_posix()}")
    return out, archive


MANIFEST = """name: bench
authors: [Bench]
contact: bench@example.org
code: {url: https://example.org/bench, commit: abcdef0}
training_data: none
n_parameters: 0
seed: 0
hardware: cpu
license: MIT
kind: predictions
"""


def _upload(client, url: str, token: str, archive: bytes) -> str:
    r = client.post(
        f"{url}/api/challenges/bench/submissions",
        headers={"Authorization": f"Bearer {token}"},
        data={"manifest": MANIFEST, "kind": "predictions"},
        files={"file": ("p.zip", archive)},
    )
    r.raise_for_status()
    return r.json()["id"]


def _wait(client, url: str, token: str, ids: list[str], poll: float = 0.05) -> None:
    pending = set(ids)
    while pending:
        for sid in list(pending):
            v = client.get(
                f"{url}/api/submissions/{sid}", headers={"Authorization": f"Bearer {token}"}
            ).json()
            if v["final"]:
                if v["state"] != "scored":
                    raise SystemExit(f"{sid}: {v['state']} {v['reasons']}")
                pending.discard(sid)
        time.sleep(poll)


async def _latency(
    url: str, path: str, token: str | None, clients: int, per_client: int
) -> list[float]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    times: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:

        async def one() -> None:
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = await c.get(path)
                times.append(time.perf_counter() - t0)
                r.raise_for_status()

        await asyncio.gather(*(one() for _ in range(clients)))
    return times


_WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %f %f %d %d\\n", latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, summary.requests, summary.errors.status))
end
"""


def _wrk(url: str, path: str, token: str | None, clients: int, seconds: int) -> dict[str, float]:
    """Latency with wrk (a C load generator: the client costs next to nothing)."""
    import shutil

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_WRK_SCRIPT)
    cmd = [shutil.which("wrk") or "wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "-s", fh.name]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url + path], capture_output=True, text=True, check=True).stdout
    os.unlink(fh.name)
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    p50, p95, n, errors = line.split()[1:]
    if int(errors):
        raise SystemExit(f"wrk saw {errors} error responses for {path}")
    return {"p50_ms": float(p50), "p95_ms": float(p95), "n": int(n)}


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--requests", type=int, default=20, help="requests per client (httpx fallback)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the Python client even if wrk is installed"
    )
    parser.add_argument("--batch", type=int, default=12, help="submissions per throughput run")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    import shutil

    use_wrk = shutil.which("wrk") is not None and not args.no_wrk

    load_before = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory(prefix="cellbench-bench-server-") as tmp:
        home = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "cellbench", "datasets", "pull", "synthetic-nuclei", "-q"],
            env=_env(home),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        challenge = _challenge(home / "challenge.yaml", args.bootstrap)
        preds, archive_path = _predictions(home, home / "preds.zarr")
        archive = archive_path.read_bytes()
        rows: list[tuple[str, str]] = []
        results: dict[str, float] = {}
        for workers in (1, 2):
            db = args.db or f"sqlite:///{home / f'bench-{workers}.db'}"
            server = Server(home, challenge, db, workers)
            try:
                from cellbench.server.accounts import add_team
                from cellbench.server.db import make_engine

                engine = make_engine(db)
                token = add_team(engine, f"bench-{workers}")
                engine.dispose()
                with httpx.Client(timeout=120) as client:
                    # warm up: every worker started and has scored one submission
                    warm = [_upload(client, server.url, token, archive) for _ in range(workers)]
                    _wait(client, server.url, token, warm, poll=0.1)
                    if workers == 1:
                        # upload -> score, one at a time, against `cellbench score`
                        spans = []
                        for _ in range(3):
                            t0 = time.perf_counter()
                            sid = _upload(client, server.url, token, archive)
                            _wait(client, server.url, token, [sid], poll=0.02)
                            spans.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        subprocess.run(
                            [
                                sys.executable,
                                "-m",
                                "cellbench",
                                "score",
                                str(preds),
                                "--task",
                                "instance-segmentation",
                                "--dataset",
                                "synthetic-nuclei@1.0",
                                "--bootstrap",
                                str(args.bootstrap),
                            ],
                            env=_env(home),
                            check=True,
                            stdout=subprocess.DEVNULL,
                        )
                        results["score_cli_s"] = time.perf_counter() - t0
                        results["upload_to_score_s"] = statistics.median(spans)
                        sid_for_status = sid
                        for path, tok, name in (
                            ("/api/challenges/bench/leaderboard", None, "leaderboard"),
                            (f"/api/submissions/{sid_for_status}", token, "status"),
                        ):
                            if use_wrk:
                                got = _wrk(server.url, path, tok, args.clients, args.seconds)
                            else:
                                lat = asyncio.run(
                                    _latency(server.url, path, tok, args.clients, args.requests)
                                )
                                got = {
                                    "p50_ms": 1000 * _pct(lat, 50),
                                    "p95_ms": 1000 * _pct(lat, 95),
                                    "n": len(lat),
                                }
                            results.update({f"{name}_{k}": v for k, v in got.items()})
                    t0 = time.perf_counter()
                    ids = [_upload(client, server.url, token, archive) for _ in range(args.batch)]
                    _wait(client, server.url, token, ids, poll=0.1)
                    results[f"per_minute_{workers}"] = args.batch / (
                        (time.perf_counter() - t0) / 60
                    )
            finally:
                server.stop()
        n = int(results["leaderboard_n"])
        tool = "wrk" if use_wrk else "httpx"
        rows = [
            (
                f"leaderboard GET, {args.clients} clients ({tool}), {n} requests",
                f"p50 {results['leaderboard_p50_ms']:.1f} ms, "
                f"p95 {results['leaderboard_p95_ms']:.1f} ms",
            ),
            (
                f"status GET, {args.clients} clients ({tool}), {int(results['status_n'])} requests",
                f"p50 {results['status_p50_ms']:.1f} ms, p95 {results['status_p95_ms']:.1f} ms",
            ),
            ("submissions scored per minute, 1 worker", f"{results['per_minute_1']:.1f}"),
            ("submissions scored per minute, 2 workers", f"{results['per_minute_2']:.1f}"),
            ("upload -> score readable (median of 3)", f"{results['upload_to_score_s']:.2f} s"),
            ("`cellbench score` of the same file (process)", f"{results['score_cli_s']:.2f} s"),
            ("ratio (goal <= 1.5)", f"{results['upload_to_score_s'] / results['score_cli_s']:.2f}"),
        ]
        width = max(len(a) for a, _ in rows)
        print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.1f}")
        print(
            f"challenge server on loopback ({os.cpu_count()} CPUs, {args.db or 'SQLite'}, "
            f"synthetic-nuclei test split, {args.bootstrap} bootstrap resamples)"
        )
        for a, b in rows:
            print(f"  {a:<{width}}  {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
