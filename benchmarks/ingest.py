"""Ingest speed and memory: converting community formats into a store vs reading the same files.

Generates (seed 0) a Cell Tracking Challenge dataset folder (sequences of uint16 frames with
TRA masks and a track table) and a DSB2018 folder (RGBA PNG images with one binary PNG mask
per nucleus), then, each in a fresh Python process:

* **raw read**: every file of the input read once with tifffile / imageio (the floor any
  converter pays), nothing else;
* **read**: ``cellbench.formats.read_samples(FORMAT, SRC)`` streamed to the end (parsing,
  validation, assembling samples);
* **convert**: ``build_store(read_samples(...))``, i.e. what ``cellbench convert --to zarr``
  does: read, validate and write the canonical Zarr store (compressed chunks, checksums).

Throughput is megabytes of input files per second (the same files for the three steps, so the
columns compare directly; the decoded sizes are printed too). Peak memory is the process's
peak RSS (VmHWM) minus its RSS just before the timed work, against the largest single frame or
image (the goal's unit) and the largest sample a converter must hold: one CTC *sequence* is
one sample (``(T, 1, Y, X)`` image + labels), one DSB image is one sample. Goals (issue 10):
convert within 2x of the raw read, peak under 3x the largest image or frame. The verdict lines
say met or NOT met; nothing is adjusted to meet them.

COCO: when a ``coco`` format is registered (``cellbench.formats.format_names()``) with a reader
and writer, the DSB samples are also written as COCO and timed the same way (raw read =
``json.loads`` of the annotation file, ``pycocotools.mask.decode`` of every annotation, and the
images).

Usage::

    python benchmarks/ingest.py                        # about 350 MB decoded, a few minutes
    python benchmarks/ingest.py --frames 20 --images 10  # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

_PRELUDE = """
import json, sys, time
sys.path.insert(0, REPO)
def _rss_kb():
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")][0]
def _hwm_kb():
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0]
"""

RAW = """
import numpy as np, tifffile, imageio.v3 as iio
from pathlib import Path
files = [p for p in sorted(Path(SRC).rglob("*")) if p.suffix in (".tif", ".png", ".json")]
base = _rss_kb(); t0 = time.perf_counter(); nbytes = 0
for p in files:
    if p.suffix == ".tif":
        nbytes += tifffile.imread(p).nbytes
    elif p.suffix == ".png":
        nbytes += iio.imread(p).nbytes
    else:  # COCO: parse, then decode every mask (RLE or polygons) with pycocotools
        data = json.loads(p.read_text())
        from pycocotools import mask as mask_utils
        sizes = {im["id"]: (im["height"], im["width"]) for im in data.get("images", [])}
        for a in data.get("annotations", []):
            seg, (h, w) = a["segmentation"], sizes[a["image_id"]]
            if isinstance(seg, list):
                seg = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                seg = mask_utils.frPyObjects(seg, h, w)
            nbytes += mask_utils.decode(seg).nbytes
elapsed = time.perf_counter() - t0
"""

READ = """
from cellbench.formats.registry import get_format, read_samples
from cellbench.store.frames import is_lazy
import skimage.measure, imageio.v3, tifffile  # imports are not timed
import numcodecs.blosc, cellbench.tracks, cellbench.store.chunk_writer  # (nor measured)
get_format(FORMAT)
base = _rss_kb(); t0 = time.perf_counter(); nbytes = 0
for s in read_samples(FORMAT, SRC):
    for a in s.arrays().values():
        if is_lazy(a):  # a sequence read frame by frame: read every frame, hold none
            for _ in a:
                pass
        nbytes += a.nbytes
    del s, a  # (hold no sample while the next is read, as CONVERT's loop)
elapsed = time.perf_counter() - t0
"""

CONVERT = """
from cellbench.formats.registry import get_format, read_samples
from cellbench.store.zarr_store import build_store
import skimage.measure, imageio.v3, tifffile  # imports are not timed
import numcodecs.blosc, cellbench.tracks, cellbench.store.chunk_writer  # (nor measured)
import zarr  # the store writer imports it on first use (reading a store does without it)
get_format(FORMAT)
card = {"id": "bench", "version": "1", "tasks": [TASK]}
base = _rss_kb(); t0 = time.perf_counter(); nbytes = 0
def counted():
    global nbytes
    for s in read_samples(FORMAT, SRC):
        nbytes += sum(a.nbytes for a in s.arrays().values())
        yield s
        del s  # (the harness must not hold a sample during the next read either)
from cellbench.store.format import FORMATS
build_store(counted(), DEST, card, threads=THREADS, fmt=FORMATS[STORE_FORMAT])
elapsed = time.perf_counter() - t0
"""

_FOOTER = """
print("@@" + json.dumps({"s": elapsed, "bytes": nbytes, "peak_kb": _hwm_kb() - base}))
"""


def _run(body: str, **values: object) -> dict[str, float]:
    head = "".join(f"{k} = {v!r}\n" for k, v in {"REPO": str(REPO), **values}.items())
    code = head + _PRELUDE + textwrap.dedent(body) + _FOOTER
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=3600
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-3000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("@@"))
    return json.loads(line[2:])


# ---------------------------------------------------------------------------- inputs
def make_ctc(root: Path, sequences: int, frames: int, size: int, cells: int) -> dict[str, int]:
    """A CTC dataset folder; returns the sizes of its largest frame and sequence (bytes)."""
    import tifffile

    rng = np.random.default_rng(0)
    for s in range(1, sequences + 1):
        name = f"{s:02d}"
        (root / name).mkdir(parents=True)
        tra = root / f"{name}_GT" / "TRA"
        tra.mkdir(parents=True)
        side = int(np.ceil(np.sqrt(cells)))
        step = size / side
        grid = np.array([((i // side + 0.5) * step, (i % side + 0.5) * step) for i in range(cells)])
        offset = np.zeros_like(grid)
        yy, xx = np.mgrid[:size, :size]
        for t in range(frames):  # cells wander around their grid point, never touching
            offset = np.clip(offset + rng.normal(0, 1.0, grid.shape), -2, 2)
            centres = grid + offset
            labels = np.zeros((size, size), np.uint16)
            for k, (cy, cx) in enumerate(centres, start=1):
                r0, r1 = int(cy) - 5, int(cy) + 6
                c0, c1 = int(cx) - 5, int(cx) + 6
                disk = (yy[r0:r1, c0:c1] - cy) ** 2 + (xx[r0:r1, c0:c1] - cx) ** 2 < 25
                labels[r0:r1, c0:c1][disk & (labels[r0:r1, c0:c1] == 0)] = k
            image = (rng.normal(300, 30, (size, size)) + 2000 * (labels > 0)).astype(np.uint16)
            tifffile.imwrite(root / name / f"t{t:03d}.tif", image)
            tifffile.imwrite(tra / f"man_track{t:03d}.tif", labels)
        text = "".join(f"{k} 0 {frames - 1} 0\n" for k in range(1, cells + 1))
        (tra / "man_track.txt").write_text(text)
    frame = size * size * 2
    return {"frame": frame, "sample": 2 * frames * frame}


def make_dsb(root: Path, images: int, size: int, nuclei: int) -> dict[str, int]:
    """A DSB2018 folder; returns the sizes of its largest image and sample (bytes)."""
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    for i in range(images):
        sid = f"{i:064x}"
        (root / sid / "images").mkdir(parents=True)
        (root / sid / "masks").mkdir()
        rgba = np.full((size, size, 4), 255, np.uint8)
        grey = rng.integers(0, 40, (size, size), dtype=np.uint8)
        occupied = np.zeros((size, size), bool)
        k = 0
        for _ in range(nuclei * 3):
            if k == nuclei:
                break
            cy, cx = rng.integers(8, size - 8, 2)
            mask = np.zeros((size, size), np.uint8)
            mask[cy - 6 : cy + 6, cx - 6 : cx + 6] = 255
            if (occupied & (mask > 0)).any():
                continue
            occupied |= mask > 0
            grey[mask > 0] = 200
            iio.imwrite(root / sid / "masks" / f"{k:08x}{'0' * 56}.png", mask)
            k += 1
        rgba[..., :3] = grey[..., None]
        iio.imwrite(root / sid / "images" / f"{sid}.png", rgba)
    image = size * size * 3  # decoded RGB (alpha dropped)
    return {"frame": image, "sample": image + size * size * 2}


# ---------------------------------------------------------------------------- report
def _measure(
    fmt: str, task: str, src: Path, work: Path, repeat: int, threads: int | None, store: str = "2"
) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for step, body in (("raw read", RAW), ("read", READ), ("convert", CONVERT)):
        runs = []
        for r in range(repeat):
            dest = work / f"{fmt}-{step.replace(' ', '_')}-{r}.zarr"
            values = {"SRC": str(src), "FORMAT": fmt, "TASK": task, "DEST": str(dest)}
            runs.append(_run(body, **values, THREADS=threads, STORE_FORMAT=store))
            if dest.is_dir():
                runs[-1]["files"] = sum(1 for p in dest.rglob("*") if p.is_file())
                shutil.rmtree(dest)
        best = min(runs, key=lambda x: x["s"])
        best["median_s"] = statistics.median(x["s"] for x in runs)
        out[step] = best
    return out


def _print(name: str, res: dict[str, dict], sizes: dict[str, int], on_disk: int) -> list[str]:
    mb = res["read"]["bytes"] / 1e6
    print(
        f"\n{name}: {on_disk / 1e6:.0f} MB of input files, {mb:.0f} MB of decoded samples "
        f"(the raw read decodes {res['raw read']['bytes'] / 1e6:.0f} MB: every file)"
    )
    print(f"  {'step':<10} {'best s':>8} {'input MB/s':>11} {'peak MB':>9} {'x largest frame':>16}")
    for step, r in res.items():
        peak = r["peak_kb"] * 1024
        print(
            f"  {step:<10} {r['s']:8.2f} {on_disk / 1e6 / r['s']:11.1f} {peak / 1e6:9.1f}"
            f" {peak / sizes['frame']:16.2f}"
        )
    if "files" in res["convert"]:
        print(f"  the store holds {res['convert']['files']} files")
    ratio = res["convert"]["s"] / res["raw read"]["s"]
    peak = res["convert"]["peak_kb"] * 1024
    verdicts = [
        f"{name}: convert/raw-read time {ratio:.2f}x (goal <= 2x): "
        + ("met" if ratio <= 2 else "NOT met"),
        f"{name}: convert peak {peak / 1e6:.1f} MB = {peak / sizes['frame']:.1f}x the largest "
        f"frame/image ({sizes['frame'] / 1e6:.2f} MB), {peak / sizes['sample']:.1f}x the "
        f"largest sample ({sizes['sample'] / 1e6:.1f} MB) (goal < 3x the largest frame): "
        + ("met" if peak < 3 * sizes["frame"] else "NOT met"),
    ]
    return verdicts


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", type=int, default=512, help="CTC frame and DSB image side")
    parser.add_argument("--cells", type=int, default=80)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--dsb-size", type=int, default=1024, help="DSB image side")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--only", choices=("ctc", "dsb"), help="run one input kind")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="the store writer's encoding threads (default: its default; 0: none, least memory)",
    )
    parser.add_argument(
        "--shard",
        action="store_true",
        help="convert into store format 4 (Zarr v3 shards: far fewer files) instead of 2",
    )
    args = parser.parse_args()
    store = "4" if args.shard else "2"
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.node()}")
    print(f"converting into store format {store}")
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cellbench-ingest-") as tmp:
        work = Path(tmp)
        if args.only in (None, "ctc"):
            ctc = work / "ctc"
            sizes = make_ctc(ctc, args.sequences, args.frames, args.size, args.cells)
            res = _measure("ctc", "tracking", ctc, work, args.repeat, args.threads, store)
            verdicts += _print("CTC", res, sizes, _disk(ctc))
        if args.only == "ctc":
            return _verdicts(verdicts)
        dsb = work / "dsb"
        sizes = make_dsb(dsb, args.images, args.dsb_size, args.cells)
        res = _measure("dsb", "instance-segmentation", dsb, work, args.repeat, args.threads, store)
        verdicts += _print("DSB", res, sizes, _disk(dsb))
        from cellbench.formats.registry import (
            format_names,
            get_format,
            read_samples,
            write_samples,
        )

        if "coco" in format_names():
            fmt = get_format("coco")
            if fmt.read is not None and fmt.write is not None:
                coco = work / "coco"
                write_samples("coco", read_samples("dsb", dsb), coco)
                res = _measure(
                    "coco", "instance-segmentation", coco, work, args.repeat, args.threads, store
                )
                verdicts += _print("COCO", res, sizes, _disk(coco))
        else:
            print("\nCOCO: no 'coco' format registered in this checkout; skipped")
    return _verdicts(verdicts)


def _verdicts(verdicts: list[str]) -> int:
    print("\nverdicts (measured, not adjusted):")
    for v in verdicts:
        print("  " + v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
