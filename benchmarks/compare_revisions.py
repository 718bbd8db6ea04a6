"""Scoring speed and values of this checkout against an earlier revision, in one run.

The task-plugin refactor promised "behaviour unchanged, instance and tracking scoring within 10%
of before". This benchmark checks both claims side by side: it generates one instance
segmentation set (dense label images, as ``bench_instance.py``) and one CTC tracking sequence
(as ``bench_tracking.py``), extracts the ``cellbench`` package of ``--base`` with ``git archive``
into a temporary folder, and scores the same files with each revision in fresh interpreters,
alternating the order round by round (A B, B A, ...) so that load on the machine falls on both
alike. Only the scoring call is timed (imports excluded); each timing is the best of
``--repeat`` calls in one process. It prints the metric values of both revisions (they must be
identical), the median of the per-round times, and the ratio this/base.

    python benchmarks/compare_revisions.py                 # against ffeb683 (before the refactor)
    python benchmarks/compare_revisions.py --base HEAD~1 --rounds 5

Needs the git history of ``--base`` (a shallow clone has none: ``git fetch --unshallow``).
Run from anywhere; ``cellbench`` of this checkout is the one beside this folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

#: The last commit before the task-plugin refactor (issue "the task is the plugin").
DEFAULT_BASE = "ffeb683"

_INSTANCE = """
import time
import numpy as np
from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP
data = np.load(DATA)
n = int(data["n"])
gts = [data[f"gt{k}"] for k in range(n)]
preds = [data[f"pred{k}"] for k in range(n)]
scores = [dict(zip(data[f"sid{k}"].tolist(), data[f"sc{k}"].tolist())) for k in range(n)]
best = float("inf")
for _ in range(REPEAT):
    t0 = time.perf_counter()
    metric = CocoAP(max_dets=2000, area_ranges=LIVECELL_AREA_RANGES)
    values = metric.aggregate(metric.sample_stats(gts, preds, scores))
    best = min(best, time.perf_counter() - t0)
OUT = {"seconds": best, "values": {k: float(v) for k, v in values.items()}}
"""

_TRACKING = """
import time
from cellbench.metrics.tracking import CTCMeasures, DivisionMetrics
try:
    from cellbench.tasks.tracking.ctc import score_ctc_folders
except ImportError:  # before the refactor, CTC folder I/O lived in metrics.tracking
    from cellbench.metrics.tracking import score_ctc_folders
best = float("inf")
for _ in range(REPEAT):
    t0 = time.perf_counter()
    r = score_ctc_folders(GT, RES, [CTCMeasures(), DivisionMetrics()])
    best = min(best, time.perf_counter() - t0)
values = {f"ctc/{k}": float(v) for k, v in r["ctc"].values.items()}
values.update({f"divisions/{k}": float(v) for k, v in r["divisions"].values.items()})
OUT = {"seconds": best, "values": values}
"""


def _run(code: str, root: Path, **consts: object) -> dict:
    header = "".join(f"{k} = {v!r}\n" for k, v in consts.items())
    footer = '\nimport json\nprint("@@RESULT@@" + json.dumps(OUT))\n'
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", header + textwrap.dedent(code) + footer],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(root),
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"scoring with {root} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("@@RESULT@@") :])


def _same(a: float, b: float) -> bool:
    """Identical values, NaN equal to NaN (a metric undefined in both revisions)."""
    return a == b or (a != a and b != b)


def _extract(rev: str, dest: Path) -> str:
    """Put ``rev``'s ``cellbench`` package into ``dest``; return the full commit id."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError:
        raise SystemExit(
            f"revision {rev!r} is not in this clone's history (a shallow clone? run "
            "`git fetch --unshallow`, or pass --base)"
        ) from None
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", sha, "cellbench"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return sha


def _instance_data(path: Path, images: int, cells: int, seed: int) -> None:
    from bench_instance import make_ground_truth, make_prediction

    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"n": np.array(images)}
    for k in range(images):
        gt = make_ground_truth(rng, cells)
        pred, scores = make_prediction(rng, gt)
        arrays[f"gt{k}"], arrays[f"pred{k}"] = gt, pred
        arrays[f"sid{k}"] = np.array(list(scores), dtype=np.int64)
        arrays[f"sc{k}"] = np.array(list(scores.values()), dtype=np.float64)
    np.savez(path, **arrays)


def _tracking_data(root: Path, frames: int, size: int, seed: int) -> tuple[Path, Path]:
    from bench_tracking import make_data

    ns = argparse.Namespace(
        frames=frames,
        size=size,
        cells=max(size * size // 2600, 4),
        divisions=max(frames // 3, 1),
        radius=10.0,
        seg_every=10,
        seed=seed,
        no_merges=False,
    )
    gt, res, _ = make_data(ns, root)
    return gt, res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default=DEFAULT_BASE, help=f"revision to compare ({DEFAULT_BASE})")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    p.add_argument("--repeat", type=int, default=3, help="best of N calls per process")
    p.add_argument("--images", type=int, default=20, help="instance images (512x512)")
    p.add_argument("--cells", type=int, default=300, help="cells per instance image")
    p.add_argument("--frames", type=int, default=100, help="tracking frames")
    p.add_argument("--size", type=int, default=256, help="tracking frame size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.10, help="allowed slowdown (0.10 = 10%%)")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="cellbench-compare-") as tmp:
        tmp_path = Path(tmp)
        base_root = tmp_path / "base"
        base_root.mkdir()
        base_sha = _extract(args.base, base_root)
        head = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        t0 = time.perf_counter()
        inst = tmp_path / "instance.npz"
        _instance_data(inst, args.images, args.cells, args.seed)
        gt, res = _tracking_data(tmp_path / "ctc", args.frames, args.size, args.seed)
        print("# Scoring: this checkout vs an earlier revision (same files, same process setup)")
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}; this = {head}, base = {base_sha[:10]} ({args.base})"
        )
        print(
            f"data: {args.images} instance images 512x512 with ~{args.cells} cells; CTC sequence "
            f"{args.frames} frames of {args.size}x{args.size}; generated in "
            f"{time.perf_counter() - t0:.1f} s; {args.rounds} alternating rounds, best of "
            f"{args.repeat} calls each"
        )
        roots = {"this": REPO, "base": base_root}
        jobs = {
            "instance (CocoAP)": (_INSTANCE, {"DATA": str(inst)}),
            "tracking (CTC + divisions)": (_TRACKING, {"GT": str(gt), "RES": str(res)}),
        }
        failed = False
        for name, (code, consts) in jobs.items():
            times: dict[str, list[float]] = {"this": [], "base": []}
            values: dict[str, dict[str, float]] = {}
            for r in range(args.rounds):
                order = ("this", "base") if r % 2 == 0 else ("base", "this")
                for who in order:
                    out = _run(code, roots[who], REPEAT=args.repeat, **consts)
                    times[who].append(out["seconds"])
                    values.setdefault(who, out["values"])
            this_t, base_t = statistics.median(times["this"]), statistics.median(times["base"])
            ratio = this_t / base_t
            same_keys = sorted(set(values["this"]) & set(values["base"]))
            diff = [k for k in same_keys if not _same(values["this"][k], values["base"][k])]
            new = sorted(set(values["this"]) - set(values["base"]))
            gone = sorted(set(values["base"]) - set(values["this"]))
            ok_time = ratio <= 1 + args.tolerance
            print(f"\n## {name}")
            print("| revision | median s | runs (s) |")
            print("|---|---:|---|")
            for who, t in (("this", this_t), ("base", base_t)):
                runs = ", ".join(f"{x:.3f}" for x in times[who])
                print(f"| {who} | {t:.3f} | {runs} |")
            print(
                f"ratio this/base = {ratio:.3f} "
                f"({'within' if ok_time else 'OUTSIDE'} {args.tolerance:.0%})"
            )
            print(
                f"values: {len(same_keys)} keys in both, "
                f"{'all identical' if not diff else 'DIFFERENT: ' + ', '.join(diff)}"
                + (f"; new keys: {', '.join(new)}" if new else "")
                + (f"; keys gone: {', '.join(gone)}" if gone else "")
            )
            for k in diff:
                print(f"  {k}: this {values['this'][k]!r} base {values['base'][k]!r}")
            failed = failed or bool(diff) or bool(gone) or not ok_time
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
