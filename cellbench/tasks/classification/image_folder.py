"""Image folders for classification (format ``image-folder``), as torchvision's ImageFolder.

Layout::

    <root>/<class>/<name>.tif|png|jpg|npy      one image per file, the folder is the class
    <root>/metadata.csv                        optional: a ``file`` or ``sample`` column joined
                                               to the images, every other column is metadata
    (or <root>/train/<class>/..., val/, test/: the top folder gives the split)

The class table is the sorted class-folder names (``classes=a,b,c`` fixes another order or
adds classes without images; a ``cellbench.json`` written by cellbench keeps the store's
table); each sample's ``label`` indexes it and its metadata records
``class_name``. :func:`class_table` returns the table for the store's ``class_names``
(``cellbench convert --from image-folder --to zarr`` stores it; ``datasets export --to
image-folder`` writes the store's table).
Sample ids are file stems (two files with one stem are a problem). In the metadata CSV a
``split`` column sets the split; ``file`` values are paths relative to the root (``a/x.png``)
or bare file names when those are unique.

Writing makes ``<class>/<id>.tif`` (``c, y, x``; ``y, x`` for one channel) and the
``cellbench.json`` sidecar; class names come from the ``class_names`` option
(comma-separated, the store's table), else from each sample's ``class_name`` metadata.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.formats.images import (
    SIDECAR,
    apply_record,
    channel_names_for,
    is_image_file,
    read_image,
    read_sidecar,
    sample_record,
    short_error,
    to_cyx,
    write_image,
    write_sidecar,
)
from cellbench.formats.registry import Format, ItemList, kept_per_process
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample

METADATA_CSV = "metadata.csv"


def _names(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(map(is_image_file, p.iterdir()))
    )


def _layout(root: Path) -> list[tuple[str | None, Path]]:
    """``[(split or None, folder holding class folders)]``."""
    split_dirs = [(s, root / s) for s in SPLITS if (root / s).is_dir()]
    if split_dirs and all(_class_dirs(d) for _, d in split_dirs):
        others = [p for p in _class_dirs(root) if p.name not in SPLITS]
        if not others:
            return [(s, d) for s, d in split_dirs]
    return [(None, root)]


def class_table(src: str | Path, classes: str | Iterable[str] | None = None) -> list[str]:
    """The class table of an image folder: ``classes`` if given, else sorted folder names."""
    given = _names(classes)
    if given:
        return given
    root = Path(src)
    sidecar, _ = read_sidecar(root)  # written by write_image_folder: the store's whole table
    if isinstance(sidecar.get("classes"), list):
        return [str(c) for c in sidecar["classes"]]
    return sorted({p.name for _, d in _layout(root) for p in _class_dirs(d)})


def _metadata_rows(
    path: Path, root: Path
) -> tuple[dict[str, dict[str, str]], str | None, list[str]]:
    """Rows of the metadata CSV keyed by its ``file`` or ``sample`` column."""
    problems: list[str] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            key = "file" if "file" in header else "sample" if "sample" in header else None
            if key is None:
                return (
                    {},
                    None,
                    [f"{path.name}: no 'file' or 'sample' column (found {', '.join(header)})"],
                )
            rows: dict[str, dict[str, str]] = {}
            for i, row in enumerate(reader, start=2):
                k = (row.get(key) or "").strip()
                if not k:
                    problems.append(f"{path.name} line {i}: empty {key!r}")
                elif k in rows:
                    problems.append(f"{path.name} line {i}: {key} {k!r} listed twice")
                else:
                    rows[k] = {c: (v or "").strip() for c, v in row.items() if c and c != key}
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        return {}, None, [f"{path.name}: unreadable CSV ({short_error(err)})"]
    return rows, key, problems


def _value(text: str) -> str | int | float:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _scan(
    root: Path, classes: list[str] | None, metadata: str | None, split: str
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Entries ``{id, path, class, split, metadata}``, the class table and the problems."""
    if not root.is_dir():
        return [], [], [f"{root}: not a folder (expected <root>/<class>/<image files>)"]
    problems: list[str] = []
    table = class_table(root, classes)
    index = {c: i for i, c in enumerate(table)}
    entries: list[dict[str, Any]] = []
    by_id: dict[str, str] = {}
    for top_split, folder in _layout(root):
        for cdir in _class_dirs(folder):
            if cdir.name not in index:
                problems.append(
                    f"{cdir.relative_to(root)}/: class {cdir.name!r} is not in classes="
                    f"{','.join(table)}"
                )
                continue
            for f in sorted(cdir.iterdir()):
                if not f.is_file() or not is_image_file(f):
                    continue
                rel = str(f.relative_to(root))
                sid = f.stem
                if not SAMPLE_ID_PATTERN.fullmatch(sid):
                    problems.append(f"{rel}: name {sid!r} is not a valid sample id")
                    continue
                if sid in by_id:
                    problems.append(f"{rel}: sample id {sid!r} also names {by_id[sid]}")
                    continue
                by_id[sid] = rel
                entries.append(
                    {
                        "id": sid,
                        "path": f,
                        "rel": rel,
                        "class": cdir.name,
                        "split": top_split or split,
                        "metadata": {},
                    }
                )
    if not entries and not problems:
        problems.append(f"{root}: no <class>/<image> files (.tif, .png, .jpg, .npy)")
    csv_path = Path(metadata) if metadata else root / METADATA_CSV
    if metadata and not csv_path.is_file():
        problems.append(f"{csv_path}: metadata CSV not found")
    elif csv_path.is_file():
        rows, key, more = _metadata_rows(csv_path, root)
        problems += more
        names = [e["path"].name for e in entries]
        lookup: dict[str, dict[str, Any]] = {}
        for e in entries:
            lookup[e["id"] if key == "sample" else e["rel"]] = e
            if key == "file" and names.count(e["path"].name) == 1:
                lookup.setdefault(e["path"].name, e)
        for k, row in rows.items():
            entry = lookup.get(k)
            if entry is None:
                problems.append(f"{csv_path.name}: {key} {k!r} matches no image")
                continue
            for col, val in row.items():
                if col == "split":
                    if val and val not in SPLITS:
                        problems.append(
                            f"{csv_path.name}: {key} {k!r}: split {val!r}, expected one of "
                            f"{', '.join(SPLITS)}"
                        )
                    elif val:
                        entry["split"] = val
                elif val != "":
                    entry["metadata"][col] = _value(val)
    return entries, table, problems


def _load(entry: dict[str, Any], index: dict[str, int]) -> tuple[Sample | None, list[str]]:
    try:
        raw = read_image(entry["path"])
    except Exception as err:  # truncated, pickled NPY, not an image
        return None, [f"{entry['rel']}: cannot be read ({short_error(err)})"]
    image, problems, colour = to_cyx(raw, entry["rel"])
    if image is None:
        return None, problems
    sample = Sample(
        id=entry["id"],
        image=image,
        channel_names=channel_names_for(image, colour),
        split=entry["split"],
        metadata={"class_name": entry["class"], **entry["metadata"]},
        label=index[entry["class"]],
    )
    return sample, [f"{entry['rel']}: {p}" for p in sample.problems()]


def read_image_folder(
    src: str | Path,
    *,
    split: str = "train",
    classes: str | Iterable[str] | None = None,
    metadata: str | None = None,
) -> Iterator[Sample]:
    """Stream a classification image folder (see the module docstring).

    Args:
        src: The root folder.
        split: Split of every sample unless split folders or a ``split`` column say.
        classes: The class table (comma-separated); default the sorted class-folder names.
        metadata: A metadata CSV (default ``<root>/metadata.csv`` when present).

    Raises:
        ValidationError: Every layout and CSV problem at once (before any sample); else every
            bad image at once, at the end (nothing more is yielded once one is found).
    """
    scanned = _scan_all(src, split, classes, metadata)
    problems: list[str] = []
    for item in scanned[0]:
        sample, more = _item_sample(scanned, src, item)
        problems += more
        if not problems and sample is not None:
            yield sample
    if problems:
        raise ValidationError(problems, context=str(Path(src)))


_SCANS: dict[Any, Any] = {}


def _scan_all(
    src: str | Path, split: str, classes: str | Iterable[str] | None, metadata: str | None
) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict]:
    """Entries by id, class index and sidecar records; raises every layout problem at once."""
    root = Path(src)
    problems = [] if split in SPLITS else [f"split={split!r}: expected one of {SPLITS}"]
    entries, table, more = _scan(root, _names(classes), metadata, split)
    sidecar, more2 = read_sidecar(root)
    problems += more + more2
    if problems:
        raise ValidationError(problems, context=str(root))
    return (
        {e["id"]: e for e in entries},
        {c: i for i, c in enumerate(table)},
        sidecar.get("samples", {}),
    )


def _scanned(
    src: str | Path, split: str, classes: str | Iterable[str] | None, metadata: str | None
) -> tuple[dict[str, dict[str, Any]], dict[str, int], dict]:
    """:func:`_scan_all`, kept per process while the folders are unchanged.

    One scan per worker rather than one per image; the stamp covers the root, split and class
    folders (two levels), the metadata CSV and the sidecar.
    """
    root = Path(src)
    dirs = [root, *(d for d in root.iterdir() if d.is_dir())] if root.is_dir() else [root]
    dirs += [d for top in dirs[1:] for d in top.iterdir() if d.is_dir()]
    files = [root / SIDECAR, Path(metadata) if metadata else root / "metadata.csv"]
    names = _names(classes)
    key = (str(root.absolute()), split, tuple(names or ()), metadata)
    return kept_per_process(
        _SCANS, key, [*dirs, *files], lambda: _scan_all(src, split, classes, metadata)
    )


def _item_sample(
    scanned: tuple[dict[str, dict[str, Any]], dict[str, int], dict], src: str | Path, item: str
) -> tuple[Sample | None, list[str]]:
    entries, index, records = scanned
    entry = entries.get(item)
    if entry is None:
        return None, [f"{item}: not an image of {src}"]
    sample, problems = _load(entry, index)
    if problems or sample is None:
        return None, problems
    apply_record(sample, records.get(sample.id))  # the sidecar's metadata replaces ours
    return sample, []


def image_folder_items(
    src: str | Path,
    *,
    split: str = "train",
    classes: str | Iterable[str] | None = None,
    metadata: str | None = None,
) -> ItemList:
    """The sample ids of an image folder, in read order (the per-item listing).

    Raises:
        ValidationError: Every layout and CSV problem at once.
    """
    entries, _, _ = _scanned(src, split, classes, metadata)
    return ItemList(list(entries), [], str(Path(src)))


def read_image_folder_item(
    src: str | Path,
    item: str,
    *,
    split: str = "train",
    classes: str | Iterable[str] | None = None,
    metadata: str | None = None,
) -> tuple[Sample | None, list[str]]:
    """Sample ``item`` of an image folder and its problems (see :func:`read_image_folder`)."""
    return _item_sample(_scanned(src, split, classes, metadata), src, item)


def image_folder_problems(
    src: str | Path,
    *,
    classes: str | Iterable[str] | None = None,
    metadata: str | None = None,
    **_: Any,
) -> list[str]:
    """Every problem of a classification image folder (never raises)."""
    root = Path(src)
    entries, table, problems = _scan(root, _names(classes), metadata, "train")
    problems += read_sidecar(root)[1]
    index = {c: i for i, c in enumerate(table)}
    for entry in entries:
        problems += _load(entry, index)[1]
    return problems


def write_image_folder(
    samples: Iterable[Sample], dest: str | Path, *, class_names: str | Iterable[str] | None = None
) -> None:
    """Write classification samples as ``<class>/<id>.tif`` plus the sidecar.

    Raises:
        ValidationError: A sample without a label, a label outside the class table, or a
            layout the folder cannot hold (every problem of the sample listed).
    """
    out = Path(dest)
    out.mkdir(parents=True)
    table = _names(class_names)
    records: dict[str, Any] = {}
    by_label: dict[int, str] = {}
    for sample in samples:
        where = f"sample {sample.id!r}"
        problems = list(sample.problems())
        if sample.label is None:
            problems.append(f"{where}: no class label to write")
        name = None
        if table is not None and sample.label is not None:
            if 0 <= sample.label < len(table):
                name = table[sample.label]
            else:
                problems.append(f"{where}: label {sample.label} outside the {len(table)} classes")
        elif sample.label is not None:
            name = str(sample.metadata.get("class_name", f"class_{sample.label}"))
            if by_label.setdefault(int(sample.label), name) != name:
                problems.append(
                    f"{where}: label {sample.label} is class {name!r} here and "
                    f"{by_label[int(sample.label)]!r} before (give class_names)"
                )
            elif sum(v == name for v in by_label.values()) > 1:
                problems.append(f"{where}: class {name!r} has two labels (give class_names)")
        if name is not None and (name in ("", ".", "..") or "/" in name or name == SIDECAR):
            problems.append(f"{where}: class name {name!r} cannot be a folder name")
        if problems:
            raise ValidationError(problems, context=str(out))
        (out / str(name)).mkdir(exist_ok=True)
        image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
        write_image(out / str(name) / f"{sample.id}.tif", image)
        records[sample.id] = sample_record(sample)
    if table is None:  # the table the labels index, gaps named class_<i>
        table = [by_label.get(i, f"class_{i}") for i in range(max(by_label, default=-1) + 1)]
    write_sidecar(out, records, extra={"classes": table})


def class_tables(
    src: str | Path, *, classes: str | Iterable[str] | None = None, **_: Any
) -> dict[str, list[str]]:
    """The source's class table as the store keeps it (``{"label": [...]}``)."""
    return {"label": class_table(src, classes)}


FORMAT = Format(
    name="image-folder",
    description="Classification image folders (<root>/<class>/*.tif|png|jpg|npy, optional "
    "metadata.csv with a file or sample column)",
    tasks=("classification",),
    read=read_image_folder,
    write=write_image_folder,
    validate=image_folder_problems,
    options={
        "split": "read: split of every sample unless train/val/test folders or a split "
        "column say (default train)",
        "classes": "read: the class table, comma-separated (default: sorted folder names)",
        "metadata": "read: a metadata CSV (default <root>/metadata.csv when present)",
        "class_names": "write: the class table, comma-separated (default: each sample's "
        "class_name metadata)",
    },
    class_names=class_tables,
    items=image_folder_items,
    read_item=read_image_folder_item,
)
