"""Training throughput: images/s per baseline, Zarr loader vs data already on the device.

For every registered baseline the script trains a few steps (forward, backward, SGD step,
on-device augmentation, autocast as configured) twice, side by side:

* ``zarr``: batches from the real training loader (``cellbench.training.data``: random
  patches read chunk by chunk from a canonical Zarr store by DataLoader workers, normalised,
  host-to-device copy);
* ``on-device``: one batch made by the same loader, kept on the device and reused, so the
  number is the model's own speed and the gap is what the loader costs.

It also measures the loader alone: random 256 x 256 patches per second from a store of
2048 x 2048 uint16 images chunked 1 x 256 x 256 (zstd), read naively (one patch per read,
any origin), chunk-aligned, and chunk-batched (8 patches cut from each decoded 512 x 512
region).

Usage::

    python benchmarks/train_throughput.py --device cuda            # the sizes of the issue
    python benchmarks/train_throughput.py --device cpu --small     # small sizes, CPU

GPU sizes (``--device cuda``): Mask R-CNN 512 x 512 batch 8; U-Net 4 levels, 32 base channels,
256 x 256 batch 32, bf16, with and without ``torch.compile``; ResNet-18 128 x 128 batch 256;
the other baselines at moderate sizes. ``--small`` divides sizes for a CPU run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.training.augment import BatchAugmenter
from cellbench.training.baseline import baseline_names, get_baseline
from cellbench.training.config import DEFAULT_AUGMENT
from cellbench.training.data import LoaderOptions, PatchDataset, build_index, build_spec
from cellbench.training.data.datasets import concat_collate
from cellbench.training.data.loaders import train_source
from cellbench.training.data.sampling import EpochSampler
from cellbench.training.normalisation import Normaliser


@dataclass
class Case:
    """One benchmark row."""

    baseline: str
    task: str
    size: int
    batch: int
    model: dict = field(default_factory=dict)
    precision: str = "auto"
    compile: bool = False


def cases(small: bool) -> list[Case]:
    """The issue's sizes (or a CPU-sized version), then every other registered baseline."""
    s = 4 if small else 1
    b = 8 if small else 1
    unet = {"depth": 4, "base_channels": 32}
    listed = [
        Case(
            "maskrcnn",
            "instance-segmentation",
            512 // s,
            max(1, 8 // b),
            {"patch_size": [512 // s, 512 // s]},
        ),
        Case("unet", "semantic-segmentation", 256 // s, max(2, 32 // b), unet, "bf16"),
        Case("unet", "semantic-segmentation", 256 // s, max(2, 32 // b), unet, "bf16", True),
        Case(
            "resnet18",
            "classification",
            128 // (2 if small else 1),
            max(4, 256 // 16 if small else 256),
        ),
        Case("resnet50", "classification", 128 // (2 if small else 1), max(4, 64 // b)),
        Case("unet-regression", "augmented-microscopy", 256 // s, max(2, 16 // b), unet),
        Case("embedding-unet", "instance-segmentation", 256 // s, max(2, 16 // b), unet),
        Case("tracker", "tracking", 256 // s, max(2, 8 // b)),
    ]
    names = {c.baseline for c in listed}
    for name in sorted(baseline_names()):
        if name not in names and not name.startswith(("toy-", "test-")):
            listed.append(Case(name, get_baseline(name).tasks[0], 256 // s, max(2, 8 // b)))
    return listed


# ----------------------------------------------------------------------------- synthetic data
def _discs(shape: tuple[int, int], n: int, radius: int, rng: np.random.Generator) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint16)
    yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    disc = yy**2 + xx**2 <= radius**2
    for k in range(1, n + 1):
        cy = int(rng.integers(radius, shape[0] - radius))
        cx = int(rng.integers(radius, shape[1] - radius))
        win = labels[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
        win[disc & (win == 0)] = k
    return labels


def make_store(task: str, size: int, n: int, folder: Path, seed: int = 0) -> DatasetStore:
    """A synthetic canonical store for a task (images ``2 * size`` wide for patch tasks)."""
    path = folder / f"{task}-{size}-{n}.zarr"
    if path.exists():
        return DatasetStore.open(path)
    rng = np.random.default_rng(seed)
    samples = []
    classes: dict[str, list[str]] = {}
    for i in range(n):
        sid = f"s{i:05d}"
        if task == "classification":
            classes = {"label": [f"c{k}" for k in range(4)]}
            img = rng.integers(0, 4000, (1, size, size), dtype=np.uint16)
            samples.append(Sample(id=sid, image=img, label=i % 4, split="train"))
            continue
        side = 2 * size
        labels = _discs((side, side), max(4, side * side // 2000), max(3, size // 40), rng)
        img = (rng.normal(200, 20, (1, side, side)) + 800 * (labels > 0)).astype(np.uint16)
        if task == "semantic-segmentation":
            classes = {"semantic": ["bg", "fg", "edge"]}
            samples.append(
                Sample(id=sid, image=img, semantic=(labels > 0).astype(np.uint8), split="train")
            )
        elif task == "instance-segmentation":
            samples.append(Sample(id=sid, image=img, instances=labels, split="train"))
        elif task == "augmented-microscopy":
            target = (labels > 0).astype(np.float32)[None]
            samples.append(Sample(id=sid, image=img, target=target, split="train"))
        elif task == "tracking":
            frames = 4
            movie = np.stack([img] * frames)
            inst = np.stack([labels] * frames)
            tracks = np.array(
                [[k, 0, frames - 1, 0] for k in np.unique(labels) if k], dtype=np.int64
            ).reshape(-1, 4)
            samples.append(
                Sample(
                    id=sid, image=movie, axes="tcyx", instances=inst, tracks=tracks, split="train"
                )
            )
    card = {"id": f"bench-{task[:5]}", "version": "1", "tasks": [task]}
    return build_store(samples, path, card, classes)


# ----------------------------------------------------------------------------- model timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_case(
    case: Case, device: torch.device, steps: int, warmup: int, workers: int, folder: Path
) -> dict:
    """Images/s of one case with the Zarr loader and with a batch resident on the device."""
    if case.baseline not in baseline_names():
        return {"note": "not registered (models not merged yet)"}
    cls = get_baseline(case.baseline)
    try:
        config = cls.config_class.from_dict(case.model)
    except Exception as err:  # a config key this version of the model does not have
        print(f"  {case.baseline}: model config {case.model} rejected ({err}); using defaults")
        config = cls.config_class()
    n = 64 if case.task == "classification" else 4
    n = max(n, case.batch) if case.task == "classification" else n
    store = make_store(case.task, case.size, n, folder)
    norm = Normaliser()
    index = build_index(
        store,
        case.task,
        "train",
        norm,
        n_classes=len(store.class_names("label" if case.task == "classification" else "semantic")),
    )
    spec = build_spec(
        index, store.class_names("label" if case.task == "classification" else "semantic")
    )
    model = cls(config, spec).to(device)
    if case.compile:
        model.compile()
    precision = case.precision
    if device.type != "cuda":
        precision = "fp32"
    elif precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    amp = precision == "bf16"
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    aug = BatchAugmenter(DEFAULT_AUGMENT, 1.0, spec.ndim)
    gen = torch.Generator(device=device).manual_seed(0)
    options = LoaderOptions(
        sample_mode=cls.sample_mode,
        batch_size=case.batch,
        patch_size=(case.size, case.size),
        image_size=(case.size, case.size),
        samples_per_epoch=case.batch * (steps + warmup),
        workers=workers,
        preload="off",
        pin_memory=device.type == "cuda",
    )
    source = train_source(index, options, device)

    def step(batch: dict[str, torch.Tensor]) -> None:
        batch = aug(batch, gen)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
        with ctx:
            loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    results = {"precision": precision}
    # zarr loader
    it = iter(source)
    for _ in range(warmup):
        step({k: v.to(device, non_blocking=True) for k, v in next(it).items()})
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step({k: v.to(device, non_blocking=True) for k, v in next(it).items()})
    _sync(device)
    results["zarr"] = steps * case.batch / (time.perf_counter() - t)
    # on device
    resident = {k: v.to(device) for k, v in next(iter(source)).items()}
    for _ in range(warmup):
        step(resident)
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step(resident)
    _sync(device)
    results["device"] = steps * case.batch / (time.perf_counter() - t)
    source.close()
    return results


# ----------------------------------------------------------------------------- loader only
def loader_only(
    folder: Path, workers: int, batches: int, side: int, n_images: int, repeats: int = 3
) -> list:
    """Random 256 x 256 patches/s: naive, chunk-aligned and chunk-batched reads (best of 3)."""
    rng = np.random.default_rng(0)
    samples = [
        Sample(
            id=f"big{i}",
            image=rng.normal(1000, 100, (1, side, side)).astype(np.uint16),
            semantic=np.zeros((side, side), np.uint8),
            split="train",
        )
        for i in range(n_images)
    ]
    store = build_store(
        samples,
        folder / "loader.zarr",
        {"id": "loader", "version": "1", "tasks": ["semantic-segmentation"]},
        {"semantic": ["bg"]},
    )
    assert store.image("big0").chunks == (1, 256, 256)
    index = build_index(store, "semantic-segmentation", "train", Normaliser())
    rows = []
    batch = 32
    for name, k, aligned in (
        ("naive (1 patch/read, any origin)", 1, False),
        ("chunk-aligned (1 patch/read)", 1, True),
        ("chunk-batched (8 patches/512^2 read)", 8, True),
    ):
        for w in sorted({0, workers}):
            ds = PatchDataset(
                index, (256, 256), patches_per_read=k, aligned=aligned, keys=("image",)
            )
            draws = (batches + 1) * batch // k
            sampler = EpochSampler(len(index.items), draws, seed=1)
            loader = torch.utils.data.DataLoader(
                ds,
                batch_size=batch // k,
                sampler=sampler,
                num_workers=w,
                collate_fn=concat_collate,
                prefetch_factor=4 if w else None,
            )
            best = 0.0
            for repeat in range(repeats):  # best of a few: the machine may be shared
                sampler.set_epoch(repeat)
                it = iter(loader)
                next(it)
                t = time.perf_counter()
                count = 0
                for b in it:
                    count += b["image"].shape[0]
                best = max(best, count / (time.perf_counter() - t))
                del it
            rows.append((name, w, best))
    return rows


def main() -> None:
    """Parse arguments, run and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--small", action="store_true", help="small sizes (CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per case")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--only", choices=("models", "loader"), default=None)
    parser.add_argument("--baselines", default="", help="comma-separated subset")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    steps = args.steps or (5 if device.type == "cpu" else 30)
    warmup = args.warmup or (2 if device.type == "cpu" else 10)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}); torch {torch.__version__}; {os.cpu_count()} CPU cores; "
        f"loader workers {args.workers}; steps {steps} (warm-up {warmup})"
    )
    with tempfile.TemporaryDirectory(prefix="cellbench-bench-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "models"):
            wanted = set(filter(None, args.baselines.split(",")))
            print(
                f"\n{'baseline':<16} {'task':<22} {'size':>5} {'batch':>5} {'prec':>5} "
                f"{'compile':>7} {'zarr img/s':>11} {'on-device img/s':>16} {'zarr/dev':>8}"
            )
            for case in cases(args.small):
                if wanted and case.baseline not in wanted:
                    continue
                if case.compile and args.no_compile:
                    continue
                res = time_case(case, device, steps, warmup, args.workers, folder)
                head = (
                    f"{case.baseline:<16} {case.task:<22} {case.size:>5} {case.batch:>5} "
                    f"{res.get('precision', '-'):>5} {'yes' if case.compile else 'no':>7}"
                )
                if "note" in res:
                    print(f"{head} {res['note']}")
                    continue
                ratio = res["zarr"] / res["device"] if res["device"] else math.nan
                print(f"{head} {res['zarr']:>11.1f} {res['device']:>16.1f} {ratio:>8.2f}")
        if args.only in (None, "loader"):
            side = 1024 if args.small else 2048
            n_images = 4 if args.small else 8
            batches = 30 if args.small else 100
            print(
                f"\nloader only: random 256x256 patches/s from {n_images} images "
                f"{side}x{side} uint16, chunks 1x256x256 zstd, batch 32"
            )
            print(f"{'read strategy':<40} {'workers':>7} {'patches/s':>10}")
            for label, w, rate in loader_only(folder, args.workers, batches, side, n_images):
                print(f"{label:<40} {w:>7} {rate:>10.1f}")


if __name__ == "__main__":
    main()
