"""Allen Institute label-free z-stacks: Zeiss CZI files listed in a pytorch_fnet CSV (``fnet-czi``).

The label-free data of Ounkomol et al. 2018 (``<structure>.tar.gz`` on downloads.allencell.org)
are multichannel Zeiss CZI z-stacks of hiPS cells (bright field, a membrane dye, the tagged
structure, a DNA dye, ...). Which channel is which differs between acquisition batches, so the
authors' code (pytorch_fnet, ``data/csvs/<structure>.csv`` on its ``release_1`` branch) lists
every file with the channel of the transmitted-light input and of the fluorescence target:

``path_czi``        path of the CZI file (``data/<structure>/<name>.czi``, relative to ``root``)
``channel_signal``  0-based channel index of the input (bright field or DIC)
``channel_target``  0-based channel index of the fluorescence target
optional            ``structureProteinName`` (target channel name), ``colony_position``

This format reads such a CSV and its CZI files. ``src`` is the CSV, or a folder holding either
one CSV or pytorch_fnet's split files ``train.csv`` / ``val.csv`` / ``test.csv`` (then the split
is the file's). A path is resolved against ``root`` (default: the CSV's folder); a file missing
there is looked up by its name in ``root/<structure folder>`` and in ``root`` itself. One sample
per CZI: ``image`` is the input channel ``(1, z, y, x)``, ``target`` the fluorescence channel
``(1, z, y, x)``, both with the file's pixel type (uint16 for the Allen data), pixel sizes from
the CZI scaling metadata (micrometres). Metadata: plate barcode, well, scene, magnification and
acquisition date parsed from the Allen file name when it matches, the structure, and the colony
position when the CSV has one.

Splits for a single CSV: by plate (the barcode that starts the file name), group-aware with
:func:`cellbench.splits.split_ids` (``split=plate``, 70 / 10 / 20 %, seed 0), so fields of view
imaged on one plate never straddle train and test; ``split=train|val|test`` puts every file in
one split.

Every problem is listed before any pixel is read (the validator opens each file's subblock
directory only): missing or unreadable files, a channel index outside the file's channels, a
channel without pixels, input and target planes of different z depth or x/y extent, more than
one time point or scene, a non-grey pixel type, duplicate names. Reading needs Zeiss'
``pylibCZIrw`` (LGPL-3.0; ``pip install 'cellbench[czi]'``), the maintained reader that can also
write CZI (the tests write fake files in the real layout with it).
"""

from __future__ import annotations

import csv
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cellbench.errors import CellbenchError, ValidationError
from cellbench.formats.registry import Format, ItemList
from cellbench.splits import split_ids
from cellbench.store.sample import SPLITS, Sample

REQUIRED_COLUMNS = ("path_czi", "channel_signal", "channel_target")
#: Allen pipeline file names: ``<plate>_<mag>_<date>_<run>-Scene-<s>-P<pos>-<well>.czi`` (later
#: batches) or ``<plate>_<mag>_<date>_<well>_P<pos>.czi`` (earlier ones).
_NAME_SCENE = re.compile(
    r"^(?P<plate>[A-Za-z0-9]+)_(?P<mag>\d+[Xx])_(?P<date>\d{8})_.*?Scene-(?P<scene>\d+)-P(?P<pos>\d+)"
    r"-(?P<well>[A-P]\d{2})$"
)
_NAME_WELL = re.compile(
    r"^(?P<plate>[A-Za-z0-9]+)_(?P<mag>\d+[Xx])_(?P<date>\d{8})_(?P<well>[A-P]\d{2})_P(?P<pos>\d+)$"
)
SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
_GREY = {"Gray8": np.uint8, "Gray16": np.uint16, "Gray32Float": np.float32}
INPUT_NAME = "transmitted light"


def require_czi_reader() -> Any:
    """The ``czi`` module of pylibCZIrw, or one clear error naming the extra that installs it.

    Recipes call it before downloading anything, so a missing reader costs no download.

    Raises:
        CellbenchError: pylibCZIrw is not installed.
    """
    try:
        from pylibCZIrw import czi
    except ImportError as err:
        raise CellbenchError(
            "reading Zeiss CZI files needs pylibCZIrw, which the core install leaves out: "
            f"pip install 'cellbench[czi]' ({err})"
        ) from None
    return czi


@dataclass(frozen=True)
class Entry:
    """One CSV row: a CZI file and the channels to read from it."""

    csv: Path
    row: int
    path: Path
    signal: int
    target: int
    split: str
    structure: str
    colony_position: str

    @property
    def where(self) -> str:
        """The file and the CSV row, for messages."""
        return f"{self.path.name} ({self.csv.name} row {self.row})"


def _csv_files(src: Path) -> list[tuple[Path, str | None]]:
    """The CSVs of ``src`` with the split each one fixes (None: split by plate)."""
    if src.is_file():
        return [(src, None)]
    if not src.is_dir():
        raise ValidationError([f"{src}: no such file or folder (expected a pytorch_fnet CSV)"])
    named = [(src / f"{s}.csv", s) for s in SPLITS if (src / f"{s}.csv").is_file()]
    if named:
        return named
    found = sorted(src.glob("*.csv"))
    if len(found) != 1:
        raise ValidationError(
            [
                f"{src}: expected one pytorch_fnet CSV (path_czi, channel_signal, "
                f"channel_target) or train.csv/val.csv/test.csv, found {len(found)} .csv files"
            ]
        )
    return [(found[0], None)]


def _resolve(root: Path, path_czi: str) -> Path:
    given = Path(path_czi)
    if given.is_absolute():
        return given
    candidates = [root / given, root / given.parent.name / given.name, root / given.name]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _entries(src: Path, root: str | Path | None, split: str) -> tuple[list[Entry], list[str]]:
    """Parse the CSV(s): entries and every problem of the tables themselves."""
    problems: list[str] = []
    entries: list[Entry] = []
    for path, fixed in _csv_files(src):
        base = Path(root) if root is not None else path.parent
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
                header = rows[0].keys() if rows else []
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            problems.append(f"{path.name}: cannot read the CSV ({err})")
            continue
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if not rows:
            problems.append(f"{path.name}: no rows (expected {', '.join(REQUIRED_COLUMNS)})")
            continue
        if missing:
            problems.append(
                f"{path.name}: missing column(s) {', '.join(missing)} "
                f"(expected {', '.join(REQUIRED_COLUMNS)})"
            )
            continue
        for i, row in enumerate(rows, start=2):  # row 1 is the header
            channels = []
            for col in ("channel_signal", "channel_target"):
                text = (row[col] or "").strip()
                try:
                    value = int(float(text))
                    if value < 0 or value != float(text):
                        raise ValueError
                    channels.append(value)
                except (ValueError, OverflowError):
                    problems.append(
                        f"{path.name} row {i}: {col} {text!r} is not a channel index "
                        "(expected a non-negative integer)"
                    )
            path_czi = (row["path_czi"] or "").strip()
            if not path_czi:
                problems.append(f"{path.name} row {i}: empty path_czi (expected a CZI file path)")
            if len(channels) != 2 or not path_czi:
                continue
            if channels[0] == channels[1]:
                problems.append(
                    f"{path.name} row {i}: channel_signal and channel_target are both "
                    f"{channels[0]} (expected the input and the target to differ)"
                )
            entries.append(
                Entry(
                    csv=path,
                    row=i,
                    path=_resolve(base, path_czi),
                    signal=channels[0],
                    target=channels[1],
                    split=fixed or split,
                    structure=(row.get("structureProteinName") or "").strip(),
                    colony_position=(row.get("colony_position") or "").strip(),
                )
            )
    seen: dict[str, Entry] = {}
    for e in entries:
        other = seen.setdefault(e.path.stem, e)
        if other is not e:
            problems.append(
                f"{e.where}: sample {e.path.stem!r} is listed twice (also {other.where}); "
                "expected one row per CZI file"
            )
    return entries, problems


@dataclass(frozen=True)
class _Layout:
    """What a CZI's subblock directory says about one file (no pixels read)."""

    n_channels: int
    planes: dict[int, dict[int, tuple[int, int, int, int]]]  # channel -> z -> x0, y0, x1, y1
    n_times: int
    n_scenes: int
    pixel_types: dict[int, str]


def _layout(reader: Any) -> _Layout:
    planes: dict[int, dict[int, tuple[int, int, int, int]]] = {}
    times: set[int] = set()
    scenes: set[int] = set()

    def visit(_: int, info: Any) -> bool:
        coord = info.coordinate.to_dict()
        rect = info.logicalRect
        if info.get_zoom() < 0.999:  # pyramid levels are not planes of their own
            return True
        c, z = int(coord.get("C", 0)), int(coord.get("Z", 0))
        times.add(int(coord.get("T", 0)))
        scenes.add(int(coord.get("S", 0)))
        old = planes.setdefault(c, {}).get(z)
        box = (rect.x, rect.y, rect.x + rect.w, rect.y + rect.h)
        if old is not None:  # tiles of one plane: their union
            box = (
                min(old[0], box[0]),
                min(old[1], box[1]),
                max(old[2], box[2]),
                max(old[3], box[3]),
            )
        planes[c][z] = box
        return True

    reader.enumerate_subblocks(visit)
    bbox = reader.total_bounding_box
    return _Layout(
        n_channels=bbox.get("C", (0, 1))[1] - bbox.get("C", (0, 1))[0],
        planes=planes,
        n_times=len(times) or 1,
        n_scenes=len(scenes) or 1,
        pixel_types=dict(reader.pixel_types),
    )


def _file_problems(entry: Entry, layout: _Layout) -> list[str]:
    out: list[str] = []
    where = entry.where
    for role, c in (("channel_signal", entry.signal), ("channel_target", entry.target)):
        if c >= layout.n_channels:
            out.append(
                f"{where}: {role} {c} is outside the file's {layout.n_channels} channel(s) "
                f"(expected 0..{layout.n_channels - 1})"
            )
        elif not layout.planes.get(c):
            out.append(f"{where}: {role} {c} has no pixels in the file (missing channel)")
        elif layout.pixel_types.get(c) not in _GREY:
            out.append(
                f"{where}: {role} {c} has pixel type {layout.pixel_types.get(c)} "
                f"(expected one of {', '.join(_GREY)})"
            )
    if layout.n_times > 1:
        out.append(f"{where}: {layout.n_times} time points (expected one z-stack)")
    if layout.n_scenes > 1:
        out.append(f"{where}: {layout.n_scenes} scenes (expected one field of view per file)")
    if out:
        return out
    sig, tgt = layout.planes[entry.signal], layout.planes[entry.target]
    if sorted(sig) != sorted(tgt):
        out.append(
            f"{where}: input channel {entry.signal} has {len(sig)} z plane(s), target channel "
            f"{entry.target} has {len(tgt)} (expected the same z-stack)"
        )
    boxes = set(sig.values()) | set(tgt.values())
    if len(boxes) > 1:
        shapes = sorted({(b[3] - b[1], b[2] - b[0]) for b in boxes})
        out.append(
            f"{where}: planes of the input and target channels cover different x/y extents "
            f"{shapes} (y, x) (expected one extent for every plane)"
        )
    zs = sorted(sig)
    if zs and zs != list(range(zs[0], zs[0] + len(zs))):
        out.append(f"{where}: z planes {zs} are not contiguous (expected a complete z-stack)")
    return out


def _open_problems(entry: Entry) -> tuple[_Layout | None, list[str]]:
    if not entry.path.is_file():
        return None, [f"{entry.where}: file not found at {entry.path} (expected a CZI file)"]
    czi = require_czi_reader()
    try:
        with czi.open_czi(str(entry.path)) as reader:
            layout = _layout(reader)
    except Exception as err:  # libCZI raises RuntimeError, pylibCZIrw others
        return None, [f"{entry.where}: unreadable CZI file ({type(err).__name__}: {err})"]
    return layout, _file_problems(entry, layout)


def fnet_czi_problems(
    src: Path, *, root: str | Path | None = None, split: str = "plate", **_: Any
) -> list[str]:
    """Every problem of a pytorch_fnet CSV and its CZI files, one line each (empty: valid)."""
    if split not in (*SPLITS, "plate"):
        return [f"split {split!r}: expected plate, train, val or test"]
    try:
        entries, problems = _entries(Path(src), root, split)
    except ValidationError as err:
        return list(err.problems)
    for entry in entries:
        problems += _open_problems(entry)[1]
    return problems


def _scaling(reader: Any) -> dict[str, float]:
    """Pixel sizes in micrometres from the CZI metadata (metres there); 0 or absent is omitted."""
    try:
        items = reader.metadata["ImageDocument"]["Metadata"]["Scaling"]["Items"]["Distance"]
    except (KeyError, TypeError):
        return {}
    out: dict[str, float] = {}
    for item in items if isinstance(items, list) else [items]:
        axis = str(item.get("@Id", "")).lower()
        try:
            value = float(item.get("Value", 0)) * 1e6
        except (TypeError, ValueError):
            continue
        if axis in ("x", "y", "z") and value > 0:
            out[axis] = value
    return out


def _metadata(entry: Entry) -> dict[str, str | int]:
    stem = entry.path.stem
    meta: dict[str, str | int] = {"source": "Allen Institute label-free (Ounkomol et al. 2018)"}
    m = _NAME_SCENE.match(stem) or _NAME_WELL.match(stem)
    if m:
        meta.update(
            plate=m.group("plate"),
            magnification=m.group("mag").upper(),
            date=m.group("date"),
            well=m.group("well"),
            position=int(m.group("pos")),
        )
        if "scene" in m.groupdict():
            meta["scene"] = int(m.group("scene"))
    else:
        meta["plate"] = stem.split("_", 1)[0]
    if entry.structure:
        meta["structure"] = entry.structure
    meta["colony_position"] = entry.colony_position or "unspecified"
    return meta


def _stack(
    reader: Any, channel: int, planes: dict[int, tuple[int, int, int, int]], dtype: Any
) -> np.ndarray:
    """The channel's z-stack ``(1, z, y, x)``, read over its own planes' extent.

    The region is the planes' box, not the file's (another channel may cover more, and
    reading beyond a plane would pad it with background silently).
    """
    out = []
    for z in sorted(planes):
        x0, y0, x1, y1 = planes[z]
        plane = reader.read(roi=(x0, y0, x1 - x0, y1 - y0), plane={"C": channel, "Z": z})
        out.append(np.asarray(plane)[..., 0])
    return np.stack(out).astype(dtype, copy=False)[None]


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "plate"):
        raise ValidationError([f"split {split!r}: expected plate, train, val or test"])


def _plate_split(src: Path, entries: list[Entry]) -> dict[str, str]:
    """The group-aware split of the entries to be split by plate (from their names alone)."""
    by_plate = [e for e in entries if e.split == "plate"]
    if not by_plate:
        return {}
    ids = [e.path.stem for e in by_plate]
    plates = [str(_metadata(e)["plate"]) for e in by_plate]
    return split_ids(ids, SHARES, seed=0, groups=plates, context=str(src))


def _sample(entry: Entry, layout: _Layout, plate_split: dict[str, str]) -> Sample:
    """Read the entry's input and target z-stacks (the file is known to be valid)."""
    czi = require_czi_reader()
    with czi.open_czi(str(entry.path)) as reader:
        image, target = (
            _stack(reader, c, layout.planes[c], _GREY[layout.pixel_types[c]])
            for c in (entry.signal, entry.target)
        )
        pixel_size = _scaling(reader)
    return Sample(
        id=entry.path.stem,
        image=image,
        axes="czyx",
        channel_names=[INPUT_NAME],
        split=plate_split.get(entry.path.stem, entry.split),
        pixel_size=pixel_size,
        metadata=_metadata(entry),
        target=target,
        target_channel_names=[entry.structure or f"channel {entry.target}"],
    )


def read_fnet_czi(
    src: Path, *, root: str | Path | None = None, split: str = "plate", **_: Any
) -> Iterator[Sample]:
    """Stream one sample per CZI file listed in the CSV(s) of ``src`` (see the module docstring).

    Raises:
        ValidationError: Every problem of the tables and files, before any pixel is read.
    """
    _check_split(split)
    entries, problems = _entries(Path(src), root, split)
    layouts = []
    for entry in entries:
        layout, found = _open_problems(entry)
        problems += found
        layouts.append(layout)
    if problems:
        raise ValidationError(problems, str(src))
    plate_split = _plate_split(Path(src), entries)
    for entry, layout in zip(entries, layouts, strict=True):
        assert layout is not None
        yield _sample(entry, layout, plate_split)


def _item(entry: Entry) -> str:
    return f"{entry.csv.name}:{entry.row}"


def fnet_czi_items(
    src: Path, *, root: str | Path | None = None, split: str = "plate", **_: Any
) -> ItemList:
    """One item per table row, ``<csv>:<row>``; the tables' problems (no CZI file is opened).

    The split by plate needs only the files' names, so each item can be read alone.
    """
    _check_split(split)
    entries, problems = _entries(Path(src), root, split)
    return ItemList([_item(e) for e in entries], problems, str(src))


def read_fnet_czi_item(
    src: Path, item: str, *, root: str | Path | None = None, split: str = "plate", **_: Any
) -> tuple[Sample | None, list[str]]:
    """The sample of one table row, or every problem of its CZI file (checked before pixels)."""
    _check_split(split)
    entries, _problems = _entries(Path(src), root, split)  # the table's problems: the listing's
    entry = next((e for e in entries if _item(e) == item), None)
    if entry is None:
        return None, [f"{item}: no such row in the pytorch_fnet table"]
    layout, problems = _open_problems(entry)
    if problems:
        return None, problems
    assert layout is not None
    return _sample(entry, layout, _plate_split(Path(src), entries)), []


def _listed(table: Path) -> tuple[dict[str, PurePosixPath], list[str]]:
    """CZI file name -> its ``path_czi`` in the table, and the problems of unsafe paths."""
    wanted: dict[str, PurePosixPath] = {}
    problems: list[str] = []
    with open(table, newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            rel = PurePosixPath((row.get("path_czi") or "").strip())
            if not rel.name:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                problems.append(
                    f"{table.name} row {i}: path_czi {str(rel)!r} leaves the data folder "
                    "(expected a relative path such as data/<structure>/<name>.czi)"
                )
                continue
            wanted[rel.name] = rel
    return wanted, problems


def _extract_listed(
    archive: Path, wanted: dict[str, PurePosixPath], root: Path, progress: bool = False
) -> list[str]:
    """Extract the members named in ``wanted`` to ``root / path_czi``; the problems found.

    Members are matched by file name whatever their folder in the archive, read one at a time
    and written only to the table's path (never to a path taken from the archive). A bar
    counts the files extracted when ``progress`` (a multi-gigabyte archive takes minutes).
    """
    from tqdm.auto import tqdm

    found: set[str] = set()
    problems: list[str] = []
    try:
        with (
            tarfile.open(archive, "r:*") as tar,
            tqdm(total=len(wanted), desc=f"extract {archive.name}", disable=not progress) as bar,
        ):
            for member in tar:
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in wanted:
                    continue
                if name in found:
                    problems.append(f"{archive.name}: {name} appears twice in the archive")
                    continue
                found.add(name)
                dest = root / wanted[name]
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None  # regular files always have content
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                bar.update(1)
    except (tarfile.TarError, EOFError, OSError) as err:
        return [f"{archive.name}: unreadable tar archive ({type(err).__name__}: {err})"]
    problems += [
        f"{archive.name}: no member {n} (listed in the pytorch_fnet table as {wanted[n]})"
        for n in sorted(set(wanted) - found)
    ]
    return problems


def fnet_archive_samples(
    table: Path,
    archive: Path,
    work_dir: str | Path,
    *,
    input_name: str = INPUT_NAME,
    progress: bool = False,
) -> Iterator[Sample]:
    """Samples of an Allen label-free archive (``<structure>.tar.gz``) and its pytorch_fnet table.

    The CZI members the table lists are extracted to ``work_dir / path_czi`` and read as
    ``fnet-czi`` with ``split=plate``; the input channel is called ``input_name``. With
    ``progress``, a bar counts the extracted files (the samples are counted by the caller).

    Raises:
        CellbenchError: pylibCZIrw is not installed (call :func:`require_czi_reader` before
            downloading to fail earlier).
        ValidationError: Every problem at once: unsafe paths in the table, files it lists
            that the archive lacks, duplicate members, then every problem of the files.
    """
    require_czi_reader()
    work = Path(work_dir)
    local = work / table.name
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(table, local)
    wanted, problems = _listed(local)
    if not wanted and not problems:
        problems.append(f"{table.name}: lists no CZI files (expected path_czi rows)")
    if not problems:
        problems = _extract_listed(archive, wanted, work, progress)
    if problems:
        raise ValidationError(problems, archive.name)
    for sample in read_fnet_czi(local, root=work, split="plate"):
        sample.channel_names = [input_name]
        yield sample


FORMAT = Format(
    name="fnet-czi",
    description="Allen label-free CZI z-stacks listed in a pytorch_fnet CSV (path_czi, "
    "channel_signal, channel_target); input -> fluorescence target (needs cellbench[czi])",
    tasks=("augmented-microscopy",),
    read=read_fnet_czi,
    validate=fnet_czi_problems,
    items=fnet_czi_items,
    read_item=read_fnet_czi_item,
    options={
        "root": "folder the CSV's path_czi entries are relative to (default: the CSV's folder)",
        "split": "plate (default: group-aware by plate barcode, 70/10/20 %), or train, val or "
        "test for every file; train.csv/val.csv/test.csv in a folder fix the split themselves",
    },
)
