"""How long `cellbench leaderboard publish` takes on the repository's `leaderboards/` folder.

Runs the real command line in fresh processes (imports included), writing the site to a
temporary folder with a private figure cache, and prints wall-clock and CPU time:

* cold: an empty figure cache (every chart and picture is drawn);
* warm: the cache filled by the cold run, publishing again into the same folder (what
  re-publishing unchanged boards costs; the goal is under 3 s on a 2-core machine).

Pictures and dataset thumbnails need the datasets; ``--pull`` generates the synthetic ones
first (offline, a few seconds each). Usage::

    python benchmarks/bench_publish.py --pull            # cold once, warm 3 times
    python benchmarks/bench_publish.py --root leaderboards --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _datasets(root: Path) -> list[str]:
    return sorted({p.parts[-4] for p in root.glob("*/*/*/entries")})


def run_publish(root: Path, out: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Run the CLI once; return (wall s, CPU s of the child, its progress output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cellbench",
            "leaderboard",
            "publish",
            "--root",
            str(root),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", default=str(REPO / "leaderboards"))
    parser.add_argument("--repeat", type=int, default=3, help="warm runs")
    parser.add_argument("--pull", action="store_true", help="generate the datasets first")
    args = parser.parse_args()
    root = Path(args.root)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("CELLBENCH_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        tmp_path = Path(tmp)
        home = Path(env.get("CELLBENCH_HOME") or Path.home() / ".cache" / "cellbench")
        if args.pull:
            for ref in _datasets(root):
                subprocess.run(
                    [sys.executable, "-m", "cellbench", "datasets", "pull", ref],
                    env=env,
                    check=True,
                    capture_output=True,
                )
        # a private figure cache (the cold run really draws everything), the same datasets
        bench_home = tmp_path / "home"
        bench_home.mkdir()
        for name in ("stores", "registry"):
            if (home / name).is_dir():
                (bench_home / name).symlink_to(home / name, target_is_directory=True)
        env["CELLBENCH_HOME"] = str(bench_home)
        load = os.getloadavg()[0]
        cold = run_publish(root, tmp_path / "site-cold", env)
        # re-publishing into the same folder, as one does after adding an entry elsewhere
        warm = [run_publish(root, tmp_path / "site-cold", env) for _ in range(args.repeat)]
    boards = [line for line in cold[2].splitlines() if line.startswith("[")]
    result = {
        "root": str(root),
        "boards": len(boards),
        "load_average_1min": round(load, 2),
        "cold": {"wall_s": round(cold[0], 2), "cpu_s": round(cold[1], 2)},
        "warm": [{"wall_s": round(w, 2), "cpu_s": round(c, 2)} for w, c, _ in warm],
    }
    print(cold[2].strip())
    print(f"boards: {len(boards)}; 1-min load average at start: {load:.1f} (2-core machine)")
    print(f"cold (empty figure cache): {cold[0]:.2f} s wall, {cold[1]:.2f} s CPU")
    for i, (w, c, _) in enumerate(warm, 1):
        print(f"warm run {i}: {w:.2f} s wall, {c:.2f} s CPU")
    best = min(w for w, _, _ in warm)
    print(f"warm best: {best:.2f} s wall (goal < 3 s): {'met' if best < 3 else 'NOT met'}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
