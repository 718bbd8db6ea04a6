"""Reading and writing the single image files community layouts are made of (TIFF, PNG, JPG, NPY).

One place for every format module (DSB2018, BBBC label images, Cellpose, StarDist, image
folders): ``tifffile`` for TIFF, ``imageio`` (Pillow plugin; a dependency of scikit-image) for
PNG and JPG, and ``numpy.load(allow_pickle=False)`` for NPY, so a ``.npy`` holding Python
objects is refused instead of unpickled. Wherever TIFF is accepted, PNG, JPG and NPY are too.

Also the ``cellbench.json`` sidecar the writers put beside the files: what the layouts have no
place for (split, channel names, pixel sizes, metadata), so a store -> layout -> store round
trip is exact. Other tools ignore it; without it the readers use their defaults.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.store.sample import Sample

#: Suffixes of the image files the readers accept (lower case).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
#: The sidecar file name (same name as the CTC sidecar; a different top-level key).
SIDECAR = "cellbench.json"


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_SUFFIXES` (and is not hidden)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: Path, *, labels: bool = False) -> np.ndarray:
    """Read one image file as stored (no axis reordering, no dtype change).

    Args:
        path: The file.
        labels: The file is a label image, mask or class map: a palette PNG gives its palette
            indices (the ids or classes its writer stored; VOC-style masks), not the colours
            of its palette, which is what an image file means; a JPEG is refused (lossy
            compression changes values near every edge: ids and classes that were never
            drawn, silently).

    Raises:
        ValueError: The file cannot be read as its suffix says (truncated, not an image, an
            NPY holding Python objects); the message says why.
    """
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return read_tiff(path)
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" not in str(err):  # truncated, bad header: numpy says what
                raise
            raise ValueError(
                f"{err} (NPY files holding Python objects are never unpickled; save a plain "
                "numeric array)"
            ) from None
    if labels and suffix in (".jpg", ".jpeg"):
        raise ValueError(
            "a JPEG label image: lossy compression changes ids and classes near every edge; "
            "save labels as PNG or TIFF"
        )
    if suffix == ".png":
        arr = decode_png(path, indices=labels)
        if arr is not None:
            return arr
    if suffix in (".png", ".jpg", ".jpeg"):
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    raise ValueError(f"unsupported suffix {suffix!r} (expected one of {', '.join(IMAGE_SUFFIXES)})")


#: The most decoded bytes one byte of a TIFF compression scheme's data can give, by TIFF
#: compression code: PackBits (32773) 128 from 2 bytes; Deflate (8, 32946) at most 1032:1 (its
#: longest match for 2 bits; 989:1 measured for zeros with zlib's framing); LZW (5) about
#: 1362:1 (one value repeated, 9- to 12-bit codes; 1312:1 measured); Zstandard (50000, 34926)
#: 128 KiB from a 4-byte RLE block (32768:1). A page that declares more pixels than its data
#: can hold is damaged or hostile, and is refused before anything is allocated. Schemes not
#: listed (LZMA, JPEG, ...) are not bounded here.
_MAX_EXPANSION = {32773: 64, 8: 1100, 32946: 1100, 5: 1500, 50000: 33000, 34926: 33000}


def _size(nbytes: int) -> str:
    """``nbytes`` for a message: bytes, KiB, MiB or GiB (one decimal)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate without swapping, or None if unknown.

    Linux: ``MemAvailable`` from ``/proc/meminfo``, lowered to what a cgroup v2 limit
    (``memory.max`` minus ``memory.current``: containers, CI runners) leaves; elsewhere
    ``psutil`` when it is installed.
    """
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(x.split()[1]) * 1024 for x in f if x.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        try:
            import psutil
        except ImportError:
            return None
        return int(psutil.virtual_memory().available)
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            avail = min(avail, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return avail


#: Decoded sizes :func:`memory_problem` takes as fitting without asking the system.
ALWAYS_FITS = 64 * 2**20


def memory_problem(nbytes: int, what: str) -> str | None:
    """Why decoding ``nbytes`` would not fit in the memory available now, or None.

    A reader that must hold a whole image refuses it in one line instead of being stopped by
    the out-of-memory killer (no message, perhaps other processes with it).
    """
    if nbytes < ALWAYS_FITS:  # (no /proc read per ordinary image)
        return None
    avail = available_memory()
    if avail is not None and nbytes > avail:
        need, have = _size(nbytes), _size(avail)
        if need == have:  # (equal once rounded: exact counts say which is larger)
            need, have = f"{nbytes} bytes", f"{avail} bytes"
        return f"{what} need {need} of memory to decode, more than the {have} available"
    return None


def array_memory_problem(array: Any, noun: str = "pixels") -> str | None:
    """:func:`memory_problem` of reading ``array`` whole, described by its shape and dtype.

    ``array``: anything with ``shape``, ``dtype`` and ``nbytes`` (a Zarr array, a tifffile
    series).
    """
    shape = " x ".join(str(n) for n in array.shape)
    return memory_problem(int(array.nbytes), f"its {shape} {np.dtype(array.dtype)} {noun}")


def tiff_series_problem(series: Any) -> str | None:
    """Why a TIFF series cannot hold the pixels its header declares, or None.

    Checked from the header alone, before anything is decoded (``tifffile`` allocates the
    declared shape first: a 300-byte file declaring 60000 x 60000 pixels took 7 GB of memory
    before it failed): every strip or tile the shape needs is listed, none is empty, all lie
    inside their file, uncompressed data covers the declared bytes, compressed data is not
    smaller than its scheme allows (:data:`_MAX_EXPANSION`), and the decoded series fits in
    the memory available (:func:`memory_problem`). ``series`` is a
    ``tifffile.TiffPageSeries``; its pages may lie in other files (OME-TIFF).
    """
    shape = " x ".join(str(n) for n in series.shape)
    declared = f"declares {shape} {np.dtype(series.dtype)} ({_size(int(series.nbytes))})"
    if series.dataoffset is not None:  # one contiguous block (ImageJ, tifffile's own stacks)
        size = int(series.parent.filehandle.size)
        bits = int(series.keyframe.bitspersample)  # (stored bits: see `stored` below)
        end = int(series.dataoffset) + int(series.nbytes) * bits // (8 * series.dtype.itemsize)
        if end > size:
            return (
                f"{declared} with data up to byte {end}, but the file has {size} bytes (truncated)"
            )
    # (a contiguous series is read as its one block above, not page by page)
    for index, page in enumerate(series.pages if series.dataoffset is None else ()):
        where = f"page {index}: " if len(series.pages) > 1 else ""
        if page is None:
            return f"{where}missing (its file or IFD is absent; {declared})"
        key = page.keyframe
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        wanted = int(np.prod(key.chunked))
        kind = "tiles" if key.is_tiled else "strips"
        page_bytes = int(key.nbytes)
        page_shape = " x ".join(str(n) for n in key.shape)
        what = f"{where}declares {page_shape} {np.dtype(key.dtype)} ({_size(page_bytes)})"
        if offsets.size < wanted or counts.size < wanted:
            held = min(offsets.size, counts.size)
            return f"{what} in {wanted} {kind}, but lists {held} (damaged)"
        offsets, counts = offsets[:wanted], counts[:wanted]
        empty = int(np.count_nonzero(counts <= 0))
        if empty:
            return f"{what}, but {empty} of its {wanted} {kind} hold no data (damaged)"
        size = int(page.parent.filehandle.size)
        ends = offsets + counts
        if int(ends.max(initial=0)) > size or int(offsets.min(initial=0)) < 0:
            return (
                f"{what} with data up to byte {int(ends.max())}, but the file has {size} bytes "
                "(truncated)"
            )
        data = int(counts.sum())
        code = int(key.compression)
        # the pixels as stored: 1-bit masks, 12-bit packed, ... take less than their decoded
        # dtype (rows padded to whole bytes only add to what a valid file holds)
        itemsize = np.dtype(key.dtype).itemsize
        stored = page_bytes * int(key.bitspersample) // (8 * itemsize)
        if code == 1 and data < stored:
            return f"{what}, but holds {data} bytes of uncompressed data (damaged)"
        limit = _MAX_EXPANSION.get(code)
        if limit is not None and stored > data * limit:
            return (
                f"{what} in {data} bytes of {key.compression.name} data, more than that scheme "
                f"can expand to (at most {limit}:1; damaged)"
            )
    return array_memory_problem(series)


def quiet_tifffile() -> None:
    """Keep ``tifffile``'s log records off stderr unless the application configured logging.

    ``tifffile`` logs what it finds wrong in a header ("incorrect StripByteCounts count") at
    WARNING/ERROR, which Python prints when no handler is configured: beside cellbench's one
    line per bad file, that is noise. A ``NullHandler`` on its logger stops only that fallback;
    records still reach the handlers of an application that configured logging.
    """
    logger = logging.getLogger("tifffile")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def read_tiff(path: Path) -> np.ndarray:
    """A TIFF file's first series, as ``tifffile.imread`` reads it.

    The header is checked before anything is decoded (:func:`tiff_series_problem`).

    Raises:
        ValueError: The file is not a TIFF, or its header declares pixels its data cannot hold
            (the message says what was declared and what the file holds).
    """
    import tifffile

    quiet_tifffile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            if not tif.series:  # no page at all: an empty array, which readers report
                return np.asarray(tif.asarray())
            problem = tiff_series_problem(tif.series[0])
            if problem:
                raise ValueError(problem)
            return np.asarray(tif.asarray())


#: Pillow modes :func:`decode_png` decodes: mode -> (dtype, channels; 0 = a 2D image).
_LEAN_PNG_MODES = {
    "L": (np.uint8, 0),
    "LA": (np.uint8, 2),
    "RGB": (np.uint8, 3),
    "RGBA": (np.uint8, 4),
    "I;16": (np.dtype("<u2"), 0),
}
#: Bytes of decoded pixels copied out of Pillow at a time.
_STRIP_BYTES = 1 << 20


def _single_png(path: Path, modes: Collection[str]) -> Any:
    """The decoded Pillow image of a single-frame PNG in one of ``modes``, or None.

    The caller closes it (``with``). Raises what Pillow raises for a damaged file.
    """
    from PIL import Image

    im = Image.open(path)
    try:
        if im.format != "PNG" or im.mode not in modes or getattr(im, "n_frames", 1) != 1:
            im.close()
            return None
        im.load()
    except BaseException:
        im.close()
        raise
    return im


def _row_strips(im: Any, row_bytes: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(y0, y1, rows)``: Pillow's pixels copied out :data:`_STRIP_BYTES` at a time.

    ``rows`` is ``(y1 - y0, row_bytes)`` uint8: only one strip's bytes exist besides Pillow's
    image (``np.asarray`` of a whole image holds a ``tobytes()`` copy of it).
    """
    width, height = im.size
    step = max(1, _STRIP_BYTES // max(1, row_bytes))
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        strip = im.crop((0, y0, width, y1)).tobytes()
        yield y0, y1, np.frombuffer(strip, np.uint8).reshape(y1 - y0, -1)


def decode_png(path: Path, *, indices: bool = False) -> np.ndarray | None:
    """A single-frame PNG decoded by Pillow straight into one NumPy array, or None.

    ``np.asarray`` of a Pillow image (what imageio does) goes through ``tobytes()``: Pillow's
    decoded image, a bytes copy of it and the array are alive at once (3x the image in RSS,
    ``benchmarks/ingest.py``). Here the pixels are copied out in strips of rows into the
    array, so the peak is Pillow's image plus the array (2x). The values are the same ones
    (same decoder, same bytes); modes other than :data:`_LEAN_PNG_MODES` (palette, 1-bit,
    32-bit, animated PNGs) return None and are read by imageio as before, except that with
    ``indices`` a palette PNG gives its indices (uint8, one per pixel; see :func:`read_image`).
    """
    try:
        modes = {**_LEAN_PNG_MODES, "P": (np.uint8, 0)} if indices else _LEAN_PNG_MODES
        im = _single_png(path, modes)
        if im is None:
            return None
        with im:
            dtype, channels = modes[im.mode]
            width, height = im.size
            out = np.empty((height, width, channels) if channels else (height, width), dtype)
            flat = out.reshape(height, -1).view(np.uint8)
            for y0, y1, rows in _row_strips(im, flat.shape[1]):
                flat[y0:y1] = rows
            return out
    except Exception:  # imageio reads it again below and reports its own error
        return None


def decode_png_cyx(path: Path, drop_opaque_alpha: bool = True) -> np.ndarray | None:
    """An RGB or RGBA PNG decoded straight into ``(c, y, x)`` uint8, or None.

    What :func:`read_image` followed by :func:`to_cyx` returns for such a file (with
    ``drop_opaque_alpha``, an alpha channel fully opaque everywhere is dropped, found from
    Pillow's per-band extrema before anything is copied), without the ``(y, x, 4)`` array in
    between: Pillow's decoded image is copied out in strips of rows, each transposed into the
    channel planes, so the peak is Pillow's image plus the planes (a 2048 x 2048 DSB image: 29 MB
    instead of 34), and the planes are contiguous (a store writes them without another copy).
    Other files return None.
    """
    try:
        im = _single_png(path, ("RGB", "RGBA"))
        if im is None:
            return None
        with im:
            width, height = im.size
            if width == 0 or height == 0:
                return None
            bands = keep = len(im.mode)
            if drop_opaque_alpha and bands == 4 and im.getextrema()[3] == (255, 255):
                keep = 3
            out = np.empty((keep, height, width), dtype=np.uint8)
            for y0, y1, rows in _row_strips(im, width * bands):
                pixels = rows.reshape(y1 - y0, width, bands)[..., :keep]
                out[:, y0:y1] = np.moveaxis(pixels, -1, 0)
            return out
    except Exception:  # read again by the general path, which reports its own error
        return None


def png_header(path: Path, *, indices: bool = False) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype a PNG reads as (:func:`read_image`), from its header alone."""
    if indices:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode == "P" and getattr(im, "n_frames", 1) == 1:
                return (im.size[1], im.size[0]), np.dtype(np.uint8)
    import imageio.v3 as iio

    props = iio.improps(path)
    return tuple(int(n) for n in props.shape), np.dtype(props.dtype)


def png_mask_box(
    path: Path,
) -> tuple[tuple[int, int], tuple[slice, slice] | None, np.ndarray] | None:
    """A grey (mode L) PNG mask cut to the bounding box of its non-zero pixels, or None.

    Returns ``(shape, box, pixels)``: the image's ``(height, width)``, the box as two slices
    (None when every pixel is zero) and the pixels inside it. Outside the box every pixel is
    0 (Pillow's ``getbbox``), so nothing of the mask is lost. A DSB2018 image has one such file
    per object: reading each whole held one full-size array and its foreground flags per
    object. Other files return None and are read whole.
    """
    try:
        im = _single_png(path, ("L",))
        if im is None:
            return None
        with im:
            width, height = im.size
            bbox = im.getbbox()
            if bbox is None:
                return (height, width), None, np.zeros((0, 0), np.uint8)
            x0, y0, x1, y1 = bbox
            pixels = np.frombuffer(im.crop(bbox).tobytes(), np.uint8).reshape(y1 - y0, x1 - x0)
            return (height, width), (slice(y0, y1), slice(x0, x1)), pixels
    except Exception:  # read again by the general path, which reports its own error
        return None


def write_image(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` in the format its suffix names (PNG: 2D or ``(y, x, 3|4)``)."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        # several channels or z slices are pages of one grey image, never "RGB"
        tifffile.imwrite(path, arr, photometric="minisblack" if arr.ndim > 2 else None)
    elif suffix == ".npy":
        np.save(path, arr, allow_pickle=False)
    elif suffix == ".png":
        import imageio.v3 as iio

        iio.imwrite(path, arr)
    else:
        raise ValueError(f"cannot write {suffix!r} files")


def short_error(err: BaseException) -> str:
    """One line of an exception, for a problem list."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def to_cyx(arr: np.ndarray, where: str) -> tuple[np.ndarray | None, list[str], str | None]:
    """An image file's array as ``(c, y, x)``.

    2D images get one channel; ``(y, x, 3|4)`` (RGB/RGBA, as PNG and JPG store colour) become
    3 or 4 channels, an alpha channel that is fully opaque everywhere is dropped (DSB2018 PNGs
    carry one); other 3D arrays are taken as already ``(c, y, x)``.

    Returns:
        The array (or ``None``), the problems, and ``"rgb"`` when the file was colour.
    """
    if arr.size == 0:
        return None, [f"{where}: no pixels (shape {arr.shape}; a truncated or empty file?)"], None
    if arr.dtype.kind not in "uif" or arr.dtype.kind == "b":
        return None, [f"{where}: dtype {arr.dtype}, expected a numeric image"], None
    if arr.ndim == 2:
        return arr[None], [], None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] not in (1, 3, 4):
        if arr.shape[-1] == 4:
            full = np.iinfo(arr.dtype).max if arr.dtype.kind in "ui" else 1.0
            if bool((arr[..., 3] == full).all()):
                arr = arr[..., :3]
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0)), [], "rgb"
    if arr.ndim == 3:
        return arr, [], None
    return None, [f"{where}: {arr.ndim} dims {arr.shape}, expected (y, x) or (y, x, 3|4)"], None


def channel_names_for(image: np.ndarray, colour: str | None) -> list[str]:
    """Default channel names: ``red, green, blue[, alpha]`` for colour files, else ``c0..``."""
    if colour == "rgb":
        return ["red", "green", "blue", "alpha"][: image.shape[0]]
    return [f"c{i}" for i in range(image.shape[0])]


def label_dtype(max_id: int) -> np.dtype:
    """The smallest unsigned dtype (uint16 or uint32) that holds ``max_id``."""
    return np.dtype(np.uint16) if max_id <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def as_labels(arr: np.ndarray, where: str) -> tuple[np.ndarray | None, list[str]]:
    """A label image file's array as integer ``(y, x)`` (or ``(z, y, x)``) ids.

    Float files whose values are all whole numbers are accepted (some tools save labels as
    float32); anything else non-integer is a problem, and so is a file without pixels (what
    tifffile returns for a truncated or corrupt TIFF).
    """
    if arr.size == 0:
        return None, [f"{where}: no pixels (shape {arr.shape}; a truncated or empty file?)"]
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            return None, [f"{where}: label image of dtype {arr.dtype} has non-integer values"]
        if arr.size and arr.min() < 0:
            return None, [f"{where}: label image has negative values"]
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        return None, [f"{where}: dtype {arr.dtype}, expected an integer label image"]
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        return None, [f"{where}: label image has negative values"]
    hi = int(arr.max(initial=0))
    if hi > np.iinfo(np.uint32).max:
        return None, [f"{where}: label id {hi} does not fit in uint32"]
    return arr.astype(label_dtype(hi), copy=False), []


def pieces_problem(labels: np.ndarray, where: str) -> str | None:
    """One line naming the labels made of more than one connected piece, or ``None``."""
    if not labels.any():
        return None
    from skimage.measure import label as cc_label

    comps = cc_label(labels, background=0, connectivity=labels.ndim)
    fg = comps > 0
    pairs = np.unique(np.stack([labels[fg].astype(np.int64), comps[fg]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    split = ids[counts > 1]
    if not split.size:
        return None
    shown = ", ".join(map(str, split.tolist()[:10])) + (", ..." if split.size > 10 else "")
    return f"{where}: object(s) {shown} in more than one piece (expected one connected object each)"


# ---------------------------------------------------------------------------- sidecar
def sample_record(sample: Sample) -> dict[str, Any]:
    """What the sidecar keeps of a sample."""
    return {
        "axes": sample.axes,
        "split": sample.split,
        "channel_names": list(sample.channel_names),
        "pixel_size": dict(sample.pixel_size),
        "metadata": {
            k: v.item() if isinstance(v, np.generic) else v for k, v in sample.metadata.items()
        },
    }


def write_sidecar(dest: Path, records: dict[str, dict[str, Any]], extra: Any = None) -> None:
    """Write ``cellbench.json`` (``{"samples": {id: record}}`` plus optional ``extra``)."""
    data: dict[str, Any] = {"samples": records}
    if extra:
        data.update(extra)
    (dest / SIDECAR).write_text(json.dumps(data, indent=1), encoding="utf-8")


def read_sidecar(src: Path) -> tuple[dict[str, Any], list[str]]:
    """The whole sidecar of ``src`` (``{}`` without one) and its problems."""
    path = src / SIDECAR
    if not path.is_file():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("samples", {}), dict):
            raise TypeError("'samples' is not an object")
    except (ValueError, TypeError) as err:
        return {}, [f"{SIDECAR}: unreadable ({err}); expected {{'samples': {{id: {{...}}}}}}"]
    return data, []


def apply_record(sample: Sample, record: dict[str, Any] | None) -> Sample:
    """Set what a sidecar record says on ``sample`` (split, names, pixel sizes, metadata)."""
    if not record:
        return sample
    if "split" in record:
        sample.split = str(record["split"])
    if record.get("channel_names"):
        sample.channel_names = [str(c) for c in record["channel_names"]]
    sample.pixel_size = {k: float(v) for k, v in record.get("pixel_size", {}).items()}
    sample.metadata = dict(record.get("metadata", {}))
    return sample
