"""Build bbbc039 from the collection's three archives (images, masks, metadata).

``images.zip`` holds ``images/<name>.tif`` (16-bit Hoechst fields), ``masks.zip`` holds
``masks/<name>.png`` (label images) and ``metadata.zip`` holds ``metadata/training.txt``,
``validation.txt`` and ``test.txt`` (the official split, one mask file name per line). They
are extracted side by side and read with the ``bbbc-labels`` format, which pairs images and
masks by name, takes the split from the metadata files and lists every problem at once.
The well (``A02`` in ``IXMtest_A02_s1_w1...``) is recorded as metadata for group metrics.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.formats.registry import read_samples
from cellbench.store.sample import Sample

_WELL = re.compile(r"_([A-P]\d{2})_s(\d+)_")


def _extract(archive: Path, dest: Path, top: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        bad = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValidationError([f"unsafe path {b!r} in the archive" for b in bad[:5]])
        if not any(n.startswith(f"{top}/") for n in names):
            raise ValidationError(
                [f"{archive.name}: no {top}/ folder (expected {top}/<name> members)"]
            )
        zf.extractall(dest)


def build(ctx: Any) -> Iterator[Sample]:
    """Yield the 200 fields with their nuclei, split as the metadata files say."""
    root = Path(ctx.work_dir) / "bbbc039"
    fetched = ctx.fetch_many(["images", "masks", "metadata"])  # downloaded side by side
    for source, top in (("images", "images"), ("masks", "masks"), ("metadata", "metadata")):
        _extract(fetched[source], root, top)
    for sample in read_samples("bbbc-labels", root):
        m = _WELL.search(sample.id)
        sample.channel_names = ["Hoechst"]
        sample.metadata = {
            "source": "BBBC039v1",
            "well": m.group(1) if m else "unknown",
            "site": int(m.group(2)) if m else -1,
        }
        yield sample
