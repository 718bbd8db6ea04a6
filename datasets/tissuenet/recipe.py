"""Build tissuenet (v1.1) from the manually downloaded archive (format ``tissuenet``).

The zip's ``*_train.npz``, ``*_val.npz`` and ``*_test.npz`` members (wherever they sit in the
archive) are extracted to the work folder and streamed one image at a time (see
:mod:`cellbench.tasks.instance_segmentation.tissuenet` for memory). Option ``target``:
``whole-cell`` (default) or ``nuclear``.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.formats.registry import read_samples
from cellbench.store.sample import Sample

MEMBERS = ("tissuenet_v1.1_train.npz", "tissuenet_v1.1_val.npz", "tissuenet_v1.1_test.npz")


def build(ctx: Any) -> Iterator[Sample]:
    """Yield every image of the three official splits."""
    archive = ctx.fetch("archive")
    out = Path(ctx.work_dir) / "tissuenet"
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        found = {Path(n).name: n for n in zf.namelist() if Path(n).name in MEMBERS}
        missing = [m for m in MEMBERS if m not in found]
        if missing:
            raise ValidationError(
                [
                    f"{archive.name}: no member {m} (expected the TissueNet 1.1 archive)"
                    for m in missing
                ]
            )
        for name, member in found.items():
            with zf.open(member) as src, (out / name).open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    target = str(ctx.options.get("target", "whole-cell"))
    for sample in read_samples("tissuenet", out, target=target):
        sample.id = f"tissuenet-{sample.id}"
        sample.metadata = {**sample.metadata, "target": target}
        yield sample
