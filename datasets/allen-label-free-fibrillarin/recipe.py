"""Build allen-label-free-fibrillarin from the Allen archive and pytorch_fnet's file table.

``fibrillarin.tar.gz`` (downloads.allencell.org) holds the CZI z-stacks; pytorch_fnet's
``data/csvs/fibrillarin.csv`` (``release_1`` branch, pinned to a commit) lists them with the
bright-field and fibrillarin channel of each. The CZI members named in the table are extracted
one at a time by file name (whatever folder the archive puts them in; no other member is
written, so hostile paths cannot escape the work folder) to ``data/fibrillarin/``, where the
table's ``path_czi`` points, and read with the ``fnet-czi`` format, which checks every file
before reading pixels and splits by plate (group-aware). Files the table lists but the archive
lacks are reported together, with the archive members that were found.
"""

from __future__ import annotations

import csv
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from cellbench.errors import ValidationError
from cellbench.formats.registry import read_samples
from cellbench.store.sample import Sample
from cellbench.tasks.augmented_microscopy.fnet_czi import require_czi_reader

STRUCTURE = "fibrillarin"


def _listed(table: Path) -> set[str]:
    with open(table, newline="", encoding="utf-8") as fh:
        return {
            PurePosixPath((row.get("path_czi") or "").strip()).name for row in csv.DictReader(fh)
        } - {""}


def _extract_listed(archive: Path, names: set[str], dest: Path) -> list[str]:
    """Extract the members called ``names`` into ``dest``; the problems found."""
    dest.mkdir(parents=True, exist_ok=True)
    found: set[str] = set()
    problems: list[str] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in names:
                    continue
                if name in found:
                    problems.append(f"{archive.name}: {name} appears twice in the archive")
                    continue
                found.add(name)
                src = tar.extractfile(member)
                assert src is not None  # regular files always have content
                with src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (tarfile.TarError, EOFError, OSError) as err:
        return [f"{archive.name}: unreadable tar.gz archive ({type(err).__name__}: {err})"]
    problems += [
        f"{archive.name}: no member {n} (listed in the pytorch_fnet table; expected "
        f"{STRUCTURE}/{n})"
        for n in sorted(names - found)
    ]
    return problems


def build(ctx: Any) -> Iterator[Sample]:
    """Yield one sample per z-stack: bright field in, fibrillarin out, split by plate."""
    require_czi_reader()  # before gigabytes of download, not after
    table = ctx.fetch("table")
    archive = ctx.fetch("archive")
    work = Path(ctx.work_dir)
    local_table = work / f"{STRUCTURE}.csv"
    shutil.copyfile(table, local_table)
    names = _listed(local_table)
    if not names:
        raise ValidationError([f"{table.name}: lists no CZI files (expected path_czi rows)"])
    problems = _extract_listed(archive, names, work / "data" / STRUCTURE)
    if problems:
        raise ValidationError(problems, archive.name)
    for sample in read_samples("fnet-czi", local_table, root=work, split="plate"):
        sample.channel_names = ["bright field"]
        sample.target_channel_names = ["fibrillarin"]
        yield sample
