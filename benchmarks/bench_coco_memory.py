"""Memory of exact pooled COCO AP: the per-image records kept, and the peak at aggregation.

Builds ``--images`` records of ``--dets`` detections each (random distinct scores, random
outcomes; LIVECell's area ranges, 10 thresholds) without any image work, then pools them with
``CocoAP.aggregate``. Prints the RSS the records hold, the process peak (VmHWM) and the time of
the aggregation. Run it at two image counts and compare: the growth per image is what exact AP
costs. Works on commits before the records were packed too (then it builds the plain records).

Usage::

    python benchmarks/bench_coco_memory.py --images 391
    python benchmarks/bench_coco_memory.py --images 1564
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status(key: str) -> float:
    """A ``/proc/self/status`` memory line in MiB."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key))
    return int(line.split()[1]) / 1024


def main() -> None:
    from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP, CocoImageStats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=391)
    parser.add_argument("--dets", type=int, default=1076, help="detections per image")
    args = parser.parse_args()
    per = args.dets
    rng = np.random.default_rng(0)
    metric = CocoAP(max_dets=2000, area_ranges=LIVECELL_AREA_RANGES)
    n_gt = np.array([per, per // 3, per // 3, per // 3])
    base = _status("VmRSS")
    stats = []
    for _ in range(args.images):
        scores = -np.sort(-rng.random(per))
        outcome = rng.choice(3, (4, 10, per), p=[0.4, 0.5, 0.1]).astype(np.uint8)
        fields = (scores, outcome, n_gt, per, per, 2000, True, 2)
        if hasattr(CocoImageStats, "from_outcome"):
            stats.append(CocoImageStats.from_outcome(*fields))
        else:  # the plain records of earlier commits
            stats.append(CocoImageStats(*fields))
    kept = _status("VmRSS") - base
    t0 = time.perf_counter()
    values = metric.aggregate(stats)
    took = time.perf_counter() - t0
    print(
        f"| {args.images} | {args.images * per} | {kept:.0f} | {_status('VmHWM'):.0f} | "
        f"{took:.2f} | {values['ap']!r} |"
    )


if __name__ == "__main__":
    main()
