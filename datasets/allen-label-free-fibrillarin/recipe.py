"""Build allen-label-free-fibrillarin from the Allen archive and pytorch_fnet's file table.

``fibrillarin.tar.gz`` (downloads.allencell.org) holds the CZI z-stacks; pytorch_fnet's
``data/csvs/fibrillarin.csv`` (``release_1`` branch, pinned to a commit) lists them with the
bright-field and fibrillarin channel of each. The CZI members named in the table are extracted
one at a time by file name (whatever folder the archive puts them in; nothing else is written)
to where the table's ``path_czi`` points, and read with the ``fnet-czi`` format, which checks
every file before reading pixels and splits by plate (group-aware); see
:func:`cellbench.tasks.augmented_microscopy.fnet_czi.fnet_archive_samples`. Disk: the archive
plus its extracted files, in the work folder, removed after the build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cellbench.store.sample import Sample
from cellbench.tasks.augmented_microscopy.fnet_czi import fnet_archive_samples, require_czi_reader


def build(ctx: Any) -> Iterator[Sample]:
    """Yield one sample per z-stack: bright field in, fibrillarin out, split by plate."""
    require_czi_reader()  # before gigabytes of download, not after
    fetched = ctx.fetch_many(["table", "archive"])
    table, archive = fetched["table"], fetched["archive"]
    samples = fnet_archive_samples(
        table, archive, ctx.work_dir, input_name="bright field", progress=ctx.progress
    )
    for sample in samples:
        sample.target_channel_names = ["fibrillarin"]
        yield sample
