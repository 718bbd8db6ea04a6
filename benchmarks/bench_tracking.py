"""CTC tracking scoring speed: cellbench vs py-ctcmetrics vs traccuracy, as whole processes.

Generates a ground-truth sequence (moving cells with divisions, appearances, disappearances;
sparse SEG truth) and a perturbed result, writes both as CTC folders, then times each tool as a
fresh Python process (interpreter start, imports, reading the TIFFs, matching, counting):

* cellbench: ``score_ctc_folders`` with ``CTCMeasures`` and ``DivisionMetrics``;
* py-ctcmetrics: ``evaluate_sequence(res, gt, ["DET", "SEG", "TRA", "LNK"])`` (the function
  behind ``ctc_evaluate --det --seg --tra --lnk``; its default thread count);
* traccuracy: ``load_ctc_data`` x2, ``run_metrics`` with ``CTCMatcher``, ``CTCMetrics`` and
  ``DivisionMetrics`` (one call with 0.3.x; with 0.4.x one call per metric on freshly loaded
  graphs, see ``TRACCURACY``). The project's environment pins traccuracy 0.3.x;
  ``--traccuracy-python`` runs it from another interpreter, e.g. a venv with 0.4.1, the version
  whose division definition cellbench follows.

It prints wall times side by side (median of ``--repeat`` runs), the ratios, peak memory, the
time to only read the TIFFs, and the DET/SEG/TRA/LNK/AOGM counts of each tool.

Usage::

    python benchmarks/bench_tracking.py                       # 100 frames, 512 x 512, ~100 cells
    python benchmarks/bench_tracking.py --frames 20 --size 256 --cells 30 --divisions 8
    python3 -m venv /tmp/tr041 && /tmp/tr041/bin/pip install traccuracy==0.4.1
    python benchmarks/bench_tracking.py --no-merges --traccuracy-python /tmp/tr041/bin/python
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "tracking"))

# Peak memory: VmHWM of the process (ru_maxrss would include the benchmark parent's memory,
# inherited across exec on Linux) and ru_maxrss of its own children (py-ctcmetrics' pool).
_FOOTER = """
import resource, json
_hwm = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("@@RESULT@@" + json.dumps({"out": OUT, "rss_kb": _hwm, "kids_kb": _kids}, default=float))
"""

CELLBENCH = """
import time
t0 = time.perf_counter()
from cellbench.metrics.tracking import CTCMeasures, DivisionMetrics
from cellbench.tasks.tracking.ctc import score_ctc_folders
r = score_ctc_folders(GT, RES, [CTCMeasures(), DivisionMetrics()])
v, d = r["ctc"].values, r["divisions"].values
OUT = {k.upper(): v[k] for k in ("det", "seg", "tra", "lnk", "aogm", "aogm_0",
                                 "ns", "fn", "fp", "ed", "ea", "ec")}
OUT.update({"DIV_TP": d["tp"], "DIV_FP": d["fp"], "DIV_FN": d["fn"],
            "in_process_s": time.perf_counter() - t0})
"""

PY_CTCMETRICS = """
import contextlib, io
from ctc_metrics.scripts.evaluate import evaluate_sequence
with contextlib.redirect_stdout(io.StringIO()):
    r = evaluate_sequence(RES, GT, ["DET", "SEG", "TRA", "LNK"])
OUT = {"DET": r["DET"], "SEG": r["SEG"], "TRA": r["TRA"], "LNK": r["LNK"],
       "AOGM": r["AOGM"], "AOGM_0": r["AOGM_0"]}
OUT.update({k: r["AOGM_" + k] for k in ("NS", "FN", "FP", "ED", "EA", "EC")})
"""

TRACCURACY = """
import os, logging, warnings, contextlib, io
os.environ["NO_JIT_WARNING"] = "1"
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
from traccuracy import run_metrics
from traccuracy.loaders import load_ctc_data
from traccuracy.matchers import CTCMatcher
from traccuracy.metrics import CTCMetrics, DivisionMetrics
import traccuracy
# traccuracy 0.4.x: a metric run after another in the same run_metrics call sees the graphs
# the first one annotated (measured with 0.4.1: divisions after CTCMetrics give TP 0; CTC
# measures after DivisionMetrics give DET 1.0), so each metric gets its own freshly loaded
# graphs there, as a user of that version must do (traccuracy issue #321, partly fixed by
# PR #324 after 0.4.2: shared error flags). 0.3.x runs both in one call.
SEPARATE = tuple(int(x) for x in traccuracy.__version__.split(".")[:2]) >= (0, 4)
with contextlib.redirect_stderr(io.StringIO()):
    metrics = [CTCMetrics()] + ([DivisionMetrics()] if DIVISIONS else [])
    out = []
    for group in ([[m] for m in metrics] if SEPARATE else [metrics]):
        gt = load_ctc_data(GT + "/TRA")
        res = load_ctc_data(RES)
        out += run_metrics(gt, res, CTCMatcher(), group)[0]
t = out[0]["results"]
OUT = {"DET": t["DET"], "TRA": t["TRA"], "LNK": t["LNK"], "AOGM": t["AOGM"],
       "NS": t["ns_nodes"], "FN": t["fn_nodes"], "FP": t["fp_nodes"], "ED": t["fp_edges"],
       "EA": t["fn_edges"], "EC": t["ws_edges"]}
if DIVISIONS:
    d = out[1]["results"]["Frame Buffer 0"]
    OUT.update({"DIV_TP": d["True Positive Divisions"], "DIV_FP": d["False Positive Divisions"],
                "DIV_FN": d["False Negative Divisions"]})
"""

READ_ONLY = """
import glob, time
t0 = time.perf_counter()
import numpy as np, tifffile
t1 = time.perf_counter()
files = sorted(glob.glob(GT + "/TRA/*.tif")) + sorted(glob.glob(RES + "/*.tif"))
arrays = [tifffile.imread(f) for f in files]
OUT = {"files": len(files), "import_s": t1 - t0, "read_s": time.perf_counter() - t1,
       "bytes": int(sum(a.nbytes for a in arrays))}
"""


def run_snippet(
    code: str, gt: Path, res: Path, divisions: bool = True, python: str | None = None
) -> tuple[float, dict]:
    """Run ``code`` in a fresh interpreter (``python``, default this one); return its wall
    time and its OUT dictionary."""
    header = f"GT = {str(gt)!r}\nRES = {str(res)!r}\nDIVISIONS = {divisions!r}\n"
    env = dict(
        os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python or sys.executable, "-c", header + textwrap.dedent(code) + _FOOTER],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    wall = time.perf_counter() - t0
    line = [x for x in proc.stdout.splitlines() if x.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"snippet failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(line[-1][len("@@RESULT@@") :])
    return wall, data


def make_data(args: argparse.Namespace, root: Path) -> tuple[Path, Path, dict]:
    from tracking_synth import perturb, simulate

    from cellbench.tasks.tracking.ctc import write_ctc_ground_truth, write_ctc_result

    t0 = time.perf_counter()
    gt = simulate(
        n_frames=args.frames,
        shape=(args.size, args.size),
        n_cells=args.cells,
        n_divisions=args.divisions,
        n_appear=max(args.cells // 10, 1),
        n_disappear=max(args.cells // 5, 1),
        radius=args.radius,
        speed=2.0,
        seed=args.seed,
        seg_every=args.seg_every,
    )
    res, counts = perturb(gt, seed=args.seed + 1, merges=not args.no_merges)
    gt_dir, res_dir = root / "01_GT", root / "01_RES"
    write_ctc_ground_truth(gt, gt_dir)
    write_ctc_result(res, res_dir)
    n_div = int((gt.graph().out_degree >= 2).sum())
    info = {
        "frames": gt.n_frames,
        "shape": gt.spatial_shape,
        "gt_tracks": int(gt.tracks.shape[0]),
        "res_tracks": int(res.tracks.shape[0]),
        "gt_nodes": gt.graph().n_nodes,
        "mean_cells": gt.graph().n_nodes / gt.n_frames,
        "gt_divisions": n_div,
        "seg_frames": len(gt.seg),
        "label_mb": gt.labels.nbytes / 2**20,
        "perturbations": counts,
        "gen_s": time.perf_counter() - t0,
    }
    return gt_dir, res_dir, info


def _versions(traccuracy_python: str | None = None) -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("numpy", "tifffile", "py-ctcmetrics", "traccuracy", "scikit-learn", "numba"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = "n/a"
    if traccuracy_python:  # the version the traccuracy process really runs
        probe = "from importlib.metadata import version; print(version('traccuracy'))"
        got = subprocess.run(
            [traccuracy_python, "-c", probe], capture_output=True, text=True, check=True
        )
        out["traccuracy"] = f"{got.stdout.strip()} (in {traccuracy_python})"
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--cells", type=int, default=100)
    p.add_argument("--divisions", type=int, default=40)
    p.add_argument("--radius", type=float, default=10.0)
    p.add_argument("--seg-every", type=int, default=10, help="SEG truth every N frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="runs per tool (median reported)")
    p.add_argument("--no-merges", action="store_true", help="no merges in the result")
    p.add_argument("--skip", default="", help="comma list: py-ctcmetrics,traccuracy")
    p.add_argument("--workdir", default=None, help="where to write the CTC folders")
    p.add_argument(
        "--traccuracy-python",
        default=None,
        help="interpreter that runs traccuracy (e.g. a venv with traccuracy==0.4.1, the\n"
        "version whose division definition cellbench follows; cellbench's own\n"
        "environment pins 0.3.x, see pyproject.toml)",
    )
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        gt_dir, res_dir, info = make_data(args, Path(tmp))
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
        versions = _versions(args.traccuracy_python)
        print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
        print(
            f"data: {info['frames']} frames {info['shape']}, {info['mean_cells']:.0f} cells/frame, "
            f"{info['gt_tracks']} GT tracks, {info['gt_divisions']} divisions, "
            f"{info['res_tracks']} result tracks, {info['seg_frames']} SEG frames, "
            f"label stack {info['label_mb']:.0f} MiB per sequence (uint16); "
            f"generated in {info['gen_s']:.1f} s"
        )
        print(f"result perturbations: {info['perturbations']}")

        # traccuracy's DivisionMetrics refuses merged (many-to-one) matches.
        tools = {"cellbench": (CELLBENCH, True)}
        if "py-ctcmetrics" not in skip:
            tools["py-ctcmetrics"] = (PY_CTCMETRICS, True)
        if "traccuracy" not in skip:
            tools["traccuracy"] = (TRACCURACY, bool(args.no_merges))
        times: dict[str, list[float]] = {}
        outs: dict[str, dict] = {}
        rss: dict[str, int] = {}
        kids: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, (code, div) in tools.items():
                py = args.traccuracy_python if name == "traccuracy" else None
                wall, data = run_snippet(code, gt_dir, res_dir, divisions=div, python=py)
                times.setdefault(name, []).append(wall)
                outs[name] = data["out"]
                rss[name] = max(rss.get(name, 0), int(data["rss_kb"]))
                kids[name] = max(kids.get(name, 0), int(data["kids_kb"]))
        reads = [run_snippet(READ_ONLY, gt_dir, res_dir) for _ in range(args.repeat)]

        base = statistics.median(times["cellbench"])
        print()
        print(
            f"{'tool':<15}{'median s':>10}{'min s':>9}{'x cellbench':>13}{'peak RSS MiB':>14}"
            f"{'workers MiB':>13}"
        )
        for name, ts in times.items():
            med = statistics.median(ts)
            print(
                f"{name:<15}{med:>10.2f}{min(ts):>9.2f}{med / base:>13.1f}"
                f"{rss[name] / 1024:>14.0f}{kids[name] / 1024:>13.0f}"
            )
        r_wall = statistics.median(w for w, _ in reads)
        r_data = reads[-1][1]
        print(
            f"{'read TIFFs':<15}{r_wall:>10.2f}{'':>9}{r_wall / base:>13.2f}"
            f"{max(int(d['rss_kb']) for _, d in reads) / 1024:>14.0f}"
            f"   ({r_data['out']['files']} files, {r_data['out']['bytes'] / 2**20:.0f} MiB; "
            f"in-process read {r_data['out']['read_s']:.2f} s)"
        )
        print(
            f"cellbench in-process time (imports + read + validate + match + count): "
            f"{outs['cellbench']['in_process_s']:.2f} s; peak RSS / label images (GT + result) "
            f"= {rss['cellbench'] / 1024 / (2 * info['label_mb']):.2f}"
        )
        print()
        keys = ["DET", "SEG", "TRA", "LNK", "AOGM", "NS", "FN", "FP", "ED", "EA", "EC"]
        keys += ["DIV_TP", "DIV_FP", "DIV_FN"]
        print(f"{'':<8}" + "".join(f"{n:>16}" for n in outs))
        for k in keys:
            row = []
            for n in outs:
                x = outs[n].get(k)
                row.append(
                    "-"
                    if x is None
                    else (f"{x:.6f}" if isinstance(x, float) and x % 1 else f"{x:g}")
                )
            print(f"{k:<8}" + "".join(f"{c:>16}" for c in row))
        if "py-ctcmetrics" in outs:
            same = all(
                abs(float(outs["cellbench"][k]) - float(outs["py-ctcmetrics"][k])) < 1e-9
                for k in keys[:11]
            )
            print(f"\ncellbench == py-ctcmetrics on DET/SEG/TRA/LNK/AOGM and all counts: {same}")
        if "traccuracy" in outs:
            same = [
                k
                for k in ("FN", "FP", "ED", "EA")
                if float(outs["cellbench"][k]) == float(outs["traccuracy"][k])
            ]
            print(
                f"cellbench == traccuracy on {', '.join(same)}; NS and EC differ by definition "
                "(traccuracy counts merged nodes, and gives single-daughter parent links "
                "track-link semantics)"
            )


if __name__ == "__main__":
    main()
