"""Build ctc-fluo-n2dh-gowt1 from the Cell Tracking Challenge training archive Fluo-N2DH-GOWT1.zip.

One sample per sequence (01 train, 02 test) with TRA markers, the track table and the sparse
gold SEG truth (or the silver truth with the option ``seg=silver``); see the card.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cellbench.store.sample import Sample
from cellbench.tasks.tracking.ctc import ctc_archive_samples

NAME = "Fluo-N2DH-GOWT1"
SPLITS = {"01": "train", "02": "test"}


def build(ctx: Any) -> Iterator[Sample]:
    """Yield sequences 01 and 02."""
    seg = str(ctx.options.get("seg", "gold"))
    yield from ctc_archive_samples(
        ctx.fetch("training"),
        ctx.work_dir,
        NAME,
        SPLITS,
        seg=seg,
        metadata={"dataset": NAME},
    )
