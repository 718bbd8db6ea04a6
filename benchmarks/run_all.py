"""Run every benchmark in turn (``make bench``), each in its own process.

Scoring benchmarks run at the sizes quoted in ``benchmarks/README.md``; ``core_install.py``
prints the size of a core-only virtualenv and the import weight of the core paths. The training
throughput benchmark runs at its small CPU sizes unless a CUDA device is present, in which case
it runs the full GPU configuration. ``compare_revisions.py`` scores the same files with this
checkout and with the revision before the task-plugin refactor (``--base`` to choose another),
printing both revisions' metric values and the time ratio. Pass ``--quick`` for a smoke run with
small inputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, for a smoke run")
    parser.add_argument(
        "--base", default=None, help="revision compare_revisions.py measures against"
    )
    args = parser.parse_args()
    quick = args.quick
    runs = [
        ["bench_instance.py", *(["--images", "5", "--cells", "100"] if quick else [])],
        [
            "bench_tracking.py",
            *(["--frames", "10", "--size", "256", "--repeat", "1"] if quick else []),
        ],
        [
            "compare_revisions.py",
            *(["--images", "5", "--frames", "30", "--rounds", "3"] if quick else []),
            *(["--base", args.base] if args.base else []),
        ],
        ["core_install.py"],
        [
            "train_throughput.py",
            *(["--device", "cuda"] if _cuda() and not quick else ["--small", "--steps", "3"]),
        ],
        [
            "server.py",
            *(["--requests", "4", "--batch", "2", "--bootstrap", "100"] if quick else []),
        ],
    ]
    failed = []
    for script, *extra in runs:
        print(f"\n=== {script} {' '.join(extra)}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *extra])
        if code:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
