"""OME-TIFF files (format ``ome-tiff``), read and written with ``tifffile``.

Reading: one ``.ome.tif(f)`` file, or a folder of them, one sample per file (or per time point
with ``time=samples``). From the OME-XML: the axes (``T``, ``C``, ``Z``, ``Y``, ``X``; RGB
samples ``S`` become channels), the channel names, the physical pixel sizes with their units
(converted to micrometres; time increments to seconds). A size that is absent, or in a unit not
listed in :data:`LENGTH_UNITS` / :data:`TIME_UNITS`, stays unknown: nothing is guessed. Sizes are
kept only for axes the image has (a 2D image's ``PhysicalSizeZ`` is ignored).

Labels: OME-TIFF has no standard place for label images. Two are read: a second image (series)
named ``instances`` or ``labels`` in the same file (what :func:`write_ome_tiff` writes), or the
channels named by the ``labels`` option (e.g. ``labels=nuclei`` for a file that stores a label
channel beside the images, as ndev-sampledata's scratch assay does). ``channels`` keeps only the
named channels as the image.

Memory: each file's image series is read whole (``series.asarray()``): peak memory is one file.

Per item (``Format.items`` / ``read_item``, used by ``convert --scheduler``): one item per file,
or with ``time=samples`` one per time point (``<file>:<t>``, the count taken from the series
shape without reading pixels). A time point's task reads and checks its whole file (tifffile
reads a series in one piece; the file's problems are reported by its first time point only);
each process keeps the last file it read until its last time point is taken, so consecutive
time points on one worker cost one read of the file.

Writing: ``<id>.ome.tif`` per sample, the image as series ``image`` with axes, channel names,
physical sizes (``um``, ``s``) and, when the sample has instances, a second series
``instances``; plus the ``cellbench.json`` sidecar (split, metadata).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import (
    apply_record,
    as_labels,
    quiet_tifffile,
    read_sidecar,
    sample_record,
    short_error,
    tiff_series_problem,
    write_sidecar,
)
from cellbench.formats.registry import Format, ItemList
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample

#: Length units to micrometres (OME UnitsLength symbols).
LENGTH_UNITS = {
    "µm": 1.0,
    "um": 1.0,
    "\u03bcm": 1.0,
    "nm": 1e-3,
    "Å": 1e-4,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}
#: Time units to seconds (OME UnitsTime symbols).
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "min": 60.0, "h": 3600.0}
LABEL_SERIES = ("instances", "labels")
_TIME_CHOICES = ("axis", "samples")


def _names(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _files(src: Path) -> tuple[list[Path], list[str]]:
    if src.is_file():
        return [src], []
    if not src.is_dir():
        return [], [f"{src}: no such file or folder (expected an .ome.tif file or a folder)"]
    files = sorted(p for p in src.iterdir() if p.name.lower().endswith((".ome.tif", ".ome.tiff")))
    if not files:
        return [], [f"{src}: no .ome.tif / .ome.tiff files"]
    return files, []


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _to_tczyx(arr: np.ndarray, axes: str, where: str) -> tuple[np.ndarray | None, str, list[str]]:
    """Reorder to the ``t c z y x`` axes present (``c`` always); ``S`` becomes ``c``."""
    axes = axes.upper()
    if "S" in axes:
        if "C" in axes:
            return None, "", [f"{where}: both C and S (RGB) axes; expected one channel axis"]
        axes = axes.replace("S", "C")
    bad = [a for a in axes if a not in "TCZYX"]
    if bad:
        return None, "", [f"{where}: axes {axes!r} include {''.join(bad)}; expected T, C, Z, Y, X"]
    if "Y" not in axes or "X" not in axes:
        return None, "", [f"{where}: axes {axes!r} have no Y and X"]
    if "C" not in axes:
        arr = arr[np.newaxis]
        axes = "C" + axes
    order = [axes.index(a) for a in "TCZYX" if a in axes]
    out_axes = "".join(a for a in "TCZYX" if a in axes).lower()
    return np.transpose(arr, order), out_axes, []


def _pixels(image_meta: dict[str, Any]) -> dict[str, Any]:
    pixels = image_meta.get("Pixels", {})
    return pixels if isinstance(pixels, dict) else {}


def _physical(pixels: dict[str, Any], axes: str) -> tuple[dict[str, float], list[str]]:
    """Known sizes in um / s for the axes present; notes on unknown units."""
    out: dict[str, float] = {}
    notes: list[str] = []
    for axis in "xyz":
        if axis not in axes:
            continue
        value = pixels.get(f"PhysicalSize{axis.upper()}")
        unit = str(pixels.get(f"PhysicalSize{axis.upper()}Unit", "µm"))
        if value is None:
            continue
        if unit not in LENGTH_UNITS:
            notes.append(f"PhysicalSize{axis.upper()} unit {unit!r} unknown: size left unknown")
            continue
        out[axis] = float(value) * LENGTH_UNITS[unit]
    if "t" in axes and pixels.get("TimeIncrement") is not None:
        unit = str(pixels.get("TimeIncrementUnit", "s"))
        if unit in TIME_UNITS:
            out["t"] = float(pixels["TimeIncrement"]) * TIME_UNITS[unit]
        else:
            notes.append(f"TimeIncrement unit {unit!r} unknown: left unknown")
    return out, notes


def _read_file(
    path: Path,
    labels: list[str],
    channels: list[str],
    time: str,
    split: str,
    record: dict[str, Any] | None,
) -> tuple[list[Sample], list[str]]:
    import tifffile

    name = path.name
    quiet_tifffile()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(path) as tif:
                if not tif.is_ome or not tif.ome_metadata:
                    return [], [f"{name}: no OME-XML metadata (expected an OME-TIFF)"]
                meta = tifffile.xml2dict(tif.ome_metadata).get("OME", {})
                images = _as_list(meta.get("Image"))
                series = list(tif.series)
                main = [i for i, s in enumerate(series) if s.name not in LABEL_SERIES]
                lab = [i for i, s in enumerate(series) if s.name in LABEL_SERIES]
                if not main:
                    return [], [f"{name}: no image series (only {LABEL_SERIES})"]
                k = main[0]
                for i in (k, *lab[:1]):  # headers checked before anything is decoded
                    problem = tiff_series_problem(series[i])
                    if problem:
                        return [], [f"{name}: series {series[i].name or i!r}: {problem}"]
                data = series[k].asarray()
                axes = series[k].axes
                lab_data = series[lab[0]].asarray() if lab else None
                lab_axes = series[lab[0]].axes if lab else ""
    except Exception as err:  # truncated, not a TIFF, bad XML
        return [], [f"{name}: cannot be read as OME-TIFF ({short_error(err)})"]
    problems: list[str] = []
    image, out_axes, more = _to_tczyx(data, axes, name)
    if image is None:
        return [], more
    pixels = _pixels(images[k]) if k < len(images) and isinstance(images[k], dict) else {}
    names = [
        str(c.get("Name", f"c{i}")) if isinstance(c, dict) else f"c{i}"
        for i, c in enumerate(_as_list(pixels.get("Channel")))
    ]
    n_c = image.shape[out_axes.index("c")]
    if len(names) != n_c:
        names = ["red", "green", "blue", "alpha"][:n_c] if "S" in axes else []
        names = names or [f"c{i}" for i in range(n_c)]
    c_axis = out_axes.index("c")
    instances: np.ndarray | None = None
    for wanted in (*labels, *channels):
        if wanted not in names:
            problems.append(f"{name}: no channel {wanted!r} (channels: {', '.join(names)})")
    if len(labels) > 1:
        problems.append(f"{name}: labels names {len(labels)} channels; expected one")
    if problems:
        return [], problems
    if labels:
        raw = np.take(image, names.index(labels[0]), axis=c_axis)
        instances, more = as_labels(raw, f"{name} channel {labels[0]!r}")
        problems += more
    elif lab_data is not None:
        raw, lab_out, more = _to_tczyx(lab_data, lab_axes, f"{name} series instances")
        problems += more
        if raw is not None:
            raw = raw[:, 0] if "t" in lab_out else raw[0]
            instances, more = as_labels(raw, f"{name} series instances")
            problems += more
    keep = (
        [names.index(c) for c in channels]
        if channels
        else [i for i, n in enumerate(names) if n not in labels]
    )
    image = np.take(image, keep, axis=c_axis)
    names = [names[i] for i in keep]
    size, notes = _physical(pixels, out_axes)
    expected = tuple(n for a, n in zip(out_axes, image.shape, strict=True) if a != "c")
    if instances is not None and instances.shape != expected:
        problems.append(f"{name}: labels have shape {instances.shape}, expected {expected}")
    if problems:
        return [], problems
    stem = _stem(path)
    metadata: dict[str, Any] = {"source_file": name}
    if notes:
        metadata["ome_notes"] = "; ".join(notes)
    if time == "samples" and "t" in out_axes:
        out = []
        width = max(3, len(str(image.shape[0] - 1)))
        for t in range(image.shape[0]):
            out.append(
                Sample(
                    id=f"{stem}-t{t:0{width}d}",
                    image=np.ascontiguousarray(image[t]),
                    axes=out_axes[1:],
                    channel_names=names,
                    split=split,
                    pixel_size={k: v for k, v in size.items() if k != "t"},
                    metadata={**metadata, "frame": t},
                    instances=None if instances is None else np.ascontiguousarray(instances[t]),
                )
            )
    else:
        sample = Sample(
            id=stem,
            image=np.ascontiguousarray(image),
            axes=out_axes,
            channel_names=names,
            split=split,
            pixel_size=size,
            metadata=metadata,
            instances=instances,
        )
        out = [apply_record(sample, record)]
    for s in out:
        if not SAMPLE_ID_PATTERN.fullmatch(s.id):
            problems.append(f"{name}: {s.id!r} is not a valid sample id (rename the file)")
            break
        problems += [f"{name}: {p}" for p in s.problems()]
    return (out, []) if not problems else ([], problems)


def _check(time: str, split: str) -> list[str]:
    out = []
    if time not in _TIME_CHOICES:
        out.append(f"time={time!r}: expected one of {', '.join(_TIME_CHOICES)}")
    if split not in SPLITS:
        out.append(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    return out


def read_ome_tiff(
    src: str | Path,
    *,
    labels: str | Iterable[str] | None = None,
    channels: str | Iterable[str] | None = None,
    time: str = "axis",
    split: str = "train",
) -> Iterator[Sample]:
    """Stream OME-TIFF files as samples (see the module docstring).

    Args:
        src: One ``.ome.tif`` file or a folder of them.
        labels: The channel holding instance labels (default: a series named ``instances``).
        channels: The channels kept as the image (default: all but ``labels``).
        time: ``axis`` (one sample per file, ``t`` kept) or ``samples`` (one per time point).
        split: Split of every sample when no ``cellbench.json`` says.

    Raises:
        ValidationError: Bad options or paths at once, before any file is read; else every
            problem of every file together, after the last file (nothing is yielded after the
            first problem).

    Per item (``convert --scheduler``): :func:`ome_tiff_items` and :func:`read_ome_tiff_item`.
    """
    root = Path(src)
    problems = _check(time, split)
    files, more = _files(root)
    problems += more
    sidecar, more = read_sidecar(root if root.is_dir() else root.parent)
    problems += more
    if problems:
        raise ValidationError(problems, context=str(src))
    records = sidecar.get("samples", {})
    for f in files:  # once a problem is found nothing more is yielded; every file is checked
        samples, more = _read_file(
            f, _names(labels), _names(channels), time, split, records.get(_stem(f))
        )
        problems += more
        if not problems:
            yield from samples
    if problems:
        raise ValidationError(problems, context=str(src))


def _time_points(path: Path) -> int | None:
    """The main series' number of time points from the header (None: unreadable, or no T)."""
    import tifffile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(path) as tif:
                main = [s for s in tif.series if s.name not in LABEL_SERIES]
                if not tif.is_ome or not main or "T" not in main[0].axes.upper():
                    return None
                return int(main[0].shape[main[0].axes.upper().index("T")])
    except Exception:  # the file's problems are reported by reading its item
        return None


def ome_tiff_items(
    src: str | Path,
    *,
    labels: str | Iterable[str] | None = None,
    channels: str | Iterable[str] | None = None,
    time: str = "axis",
    split: str = "train",
) -> ItemList:
    """One item per file (its name), or with ``time=samples`` per time point (``<file>:<t>``).

    Raises:
        ValidationError: Bad options, paths or sidecar, as ``read`` does before any file.
    """
    root = Path(src)
    problems = _check(time, split)
    files, more = _files(root)
    problems += more
    problems += read_sidecar(root if root.is_dir() else root.parent)[1]
    if problems:
        raise ValidationError(problems, context=str(src))
    items: list[str] = []
    for f in files:
        n = _time_points(f) if time == "samples" else None
        items += [f.name] if n is None else [f"{f.name}:{t}" for t in range(n)]
    return ItemList(items, [], str(src))


#: The last file read by read_ome_tiff_item in this process: {"file": (key, samples, problems)}
#: (one tuple, replaced or popped whole, so threads see a consistent entry).
_LAST_FILE: dict[str, tuple[Any, list[Sample], list[str]]] = {}


def read_ome_tiff_item(
    src: str | Path,
    item: str,
    *,
    labels: str | Iterable[str] | None = None,
    channels: str | Iterable[str] | None = None,
    time: str = "axis",
    split: str = "train",
) -> tuple[Sample | None, list[str]]:
    """One file's sample, or one time point's (``<file>:<t>``), with ``read``'s problems.

    A file's problems are reported by its whole-file item or its time point 0 only.
    """
    root = Path(src)
    problems = _check(time, split)
    sidecar, more = read_sidecar(root if root.is_dir() else root.parent)
    if problems or more:
        return None, problems + more
    name, t = item, None
    folder = root.parent if root.is_file() else root
    if not (folder / item).is_file():
        name, _, index = item.rpartition(":")
        t = int(index)
    path = folder / name
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(labels), str(channels), time, split)
    cached = _LAST_FILE.get("file")
    if cached is not None and cached[0] == key:
        samples, problems = cached[1], cached[2]
    else:
        records = sidecar.get("samples", {})
        samples, problems = _read_file(
            path, _names(labels), _names(channels), time, split, records.get(_stem(path))
        )
        if t is not None:  # kept for the file's other time points
            _LAST_FILE["file"] = (key, samples, problems)
    if t is None:
        return (samples[0] if samples else None), problems
    if problems:
        return None, problems if t == 0 else []
    if t == len(samples) - 1:
        _LAST_FILE.pop("file", None)  # the file's last time point: nothing to keep it for
    if t >= len(samples):
        return None, [f"{name}: no time point {t} (the file has {len(samples)})"]
    return dataclasses.replace(samples[t]), []


def ome_tiff_problems(
    src: str | Path,
    *,
    labels: str | Iterable[str] | None = None,
    channels: str | Iterable[str] | None = None,
    time: str = "axis",
    **_: Any,
) -> list[str]:
    """Every problem of OME-TIFF files (never raises)."""
    root = Path(src)
    problems = _check(time, "train")
    files, more = _files(root)
    problems += more
    for f in files:
        problems += _read_file(f, _names(labels), _names(channels), time, "train", None)[1]
    return problems


def write_ome_tiff(samples: Iterable[Sample], dest: str | Path) -> None:
    """Write each sample as ``<id>.ome.tif`` (image series, optional instances series).

    Raises:
        ValidationError: Every problem of a sample that cannot be written.
    """
    import tifffile

    out = Path(dest)
    out.mkdir(parents=True)
    records: dict[str, Any] = {}
    for sample in samples:
        problems = sample.problems()
        if problems:
            raise ValidationError(problems, context=str(out))
        meta: dict[str, Any] = {"axes": sample.axes.upper(), "Name": "image"}
        if sample.channel_names:
            meta["Channel"] = {"Name": list(sample.channel_names)}
        for axis, value in sample.pixel_size.items():
            if axis in "xyz" and axis in sample.axes:
                meta[f"PhysicalSize{axis.upper()}"] = float(value)
                meta[f"PhysicalSize{axis.upper()}Unit"] = "µm"
            elif axis == "t" and "t" in sample.axes:
                meta["TimeIncrement"] = float(value)
                meta["TimeIncrementUnit"] = "s"
        path = out / f"{sample.id}.ome.tif"
        with tifffile.TiffWriter(path, ome=True) as tw:
            tw.write(sample.image, photometric="minisblack", metadata=meta)
            if sample.instances is not None:
                tw.write(
                    sample.instances,
                    photometric="minisblack",
                    metadata={"axes": sample.label_axes.upper(), "Name": "instances"},
                )
        records[sample.id] = sample_record(sample)
    write_sidecar(out, records)


FORMAT = Format(
    name="ome-tiff",
    description="OME-TIFF files (axes, channel names, physical sizes; labels as a series "
    "named instances or as named channels)",
    tasks=("instance-segmentation",),
    read=read_ome_tiff,
    write=write_ome_tiff,
    validate=ome_tiff_problems,
    items=ome_tiff_items,
    read_item=read_ome_tiff_item,
    options={
        "labels": "read: the channel that holds instance labels (e.g. nuclei)",
        "channels": "read: the channels kept as the image, comma-separated (default: all but "
        "labels)",
        "time": "read: 'axis' (one sample per file, default) or 'samples' (one per time point)",
        "split": "read: split of every sample when no cellbench.json says (default train)",
    },
)
