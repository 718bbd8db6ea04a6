"""Run traccuracy's ``DivisionMetrics`` on CTC folders and print the counts as JSON.

Run in a subprocess with ``PYTHONPATH`` pointing at an unpacked traccuracy wheel (0.4.1 needs
``click<8.2``, which conflicts with the project's environment, so it is never installed); one
process scores every case (importing traccuracy takes seconds)::

    python traccuracy_divisions.py MAX_FRAME_BUFFER ROOT [ROOT ...]

where each ``ROOT`` holds ``01_GT/TRA`` and ``01_RES``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings


def main(max_buffer: int, roots: list[str]) -> None:
    """Print the version, file and ``{root: {"<fb>": {tp, fp, fn, wc, n_gt, n_pred}}}`` as JSON."""
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    import traccuracy
    from traccuracy import run_metrics
    from traccuracy.loaders import load_ctc_data
    from traccuracy.matchers import CTCMatcher
    from traccuracy.metrics import DivisionMetrics

    keys = {
        "tp": "True Positive Divisions",
        "fp": "False Positive Divisions",
        "fn": "False Negative Divisions",
        "wc": "Wrong Children Divisions",
        "n_gt": "Total GT Divisions",
        "n_pred": "Total Predicted Divisions",
    }
    results = {}
    for root in roots:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            gt = load_ctc_data(f"{root}/01_GT/TRA")
            res = load_ctc_data(f"{root}/01_RES")
            metric = DivisionMetrics(max_frame_buffer=max_buffer)
            out, _ = run_metrics(gt, res, CTCMatcher(), [metric])
        found = out[0]["results"]
        results[root] = {
            str(fb): {k: int(found[f"Frame Buffer {fb}"][v]) for k, v in keys.items()}
            for fb in range(max_buffer + 1)
        }
    table = {"version": traccuracy.__version__, "file": traccuracy.__file__, "results": results}
    print(json.dumps(table))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
