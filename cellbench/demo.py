"""The end-to-end demo behind ``make demo``: pull, train, submit, rank, publish.

On the embedded default dataset (``dsb2018-stardist``: one manually annotated DSB2018 nuclei
image shipped in a PyPI wheel, so nothing but the package registry is needed) it:

1. pulls the dataset (fetch from PyPI, verify sha256, build the Zarr store, check its digest);
2. trains a small U-Net for semantic segmentation (background / nucleus / boundary) with the
   training engine, on the GPU if there is one, else on the CPU in a few minutes;
3. submits the trained model package: cellbench runs it on the test split itself, scores it and
   records inference runtime and peak memory;
4. submits a classical reference, an Otsu threshold, as a prediction set;
5. prints the leaderboard and publishes it as Markdown, JSON and a static web page.

Everything lands in one output folder; rerunning replaces a previous demo folder.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from cellbench.errors import CellbenchError

DATASET = "dsb2018-stardist"
TASK = "semantic-segmentation"
_MARKER = ".cellbench-demo"


@dataclass
class DemoResult:
    """Where the demo wrote its outputs.

    Attributes:
        out: The demo folder.
        run_dir: The training run (model package, curves, metrics).
        leaderboard_root: The leaderboard entries.
        site: The published site (``index.html``).
        reports: Score report JSON per entry name.
    """

    out: Path
    run_dir: Path
    leaderboard_root: Path
    site: Path
    reports: dict[str, Path]


def _prepare(out: Path) -> None:
    if out.exists():
        if not (out / _MARKER).is_file():
            if any(out.iterdir()):
                raise CellbenchError(
                    f"{out} exists and is not a cellbench demo folder; choose another --out"
                )
        else:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).write_text("written by `cellbench demo`; safe to delete\n")


def otsu_predictions(store_ref: str, split: str, dest: Path) -> Path:
    """Classical reference: Otsu threshold, connected components, inner boundaries.

    Args:
        store_ref: Dataset ``id[@version]``.
        split: Split to predict.
        dest: Canonical prediction set to write.

    Returns:
        The written prediction set.
    """
    from scipy import ndimage
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import find_boundaries

    from cellbench.predictions import Prediction, PredictionWriter
    from cellbench.registry import load

    store = load(store_ref)
    with PredictionWriter(
        dest,
        TASK,
        store.id,
        store.version,
        split,
        producer={"method": "Otsu threshold + connected components (scikit-image)"},
    ) as writer:
        for sid in store.sample_ids(split):
            image = np.asarray(store.image(sid)[0], dtype=np.float64)
            smooth = gaussian(image, sigma=1.0)
            foreground = smooth > threshold_otsu(smooth)
            instances, _ = ndimage.label(foreground)
            mask = foreground.astype(np.uint8)
            mask[find_boundaries(instances, mode="inner") & foreground] = 2
            writer.add(Prediction(sid, mask=mask))
    return dest


def code_revision() -> str:
    """Git commit of the cellbench checkout, else a sha256 of the installed package sources.

    A submission manifest must pin the code that produced it; an installed (non-git) cellbench
    is pinned by the digest of its own source files instead.
    """
    import hashlib
    import subprocess

    package = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        if head:
            return head
    except (OSError, subprocess.SubprocessError):
        pass
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f.relative_to(package).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _manifest(path: Path, **fields: object) -> Path:
    base = {
        "authors": ["cellbench demo"],
        "contact": "https://github.com/cellbench/cellbench",
        "code": {"url": "https://github.com/cellbench/cellbench", "commit": code_revision()},
        "paper": "",
        "license": "BSD-3-Clause",
        "task": TASK,
        "split": "test",
        "notes": "Produced by `cellbench demo` on the embedded default dataset.",
    }
    path.write_text(yaml.safe_dump({**base, **fields}, sort_keys=False), encoding="utf-8")
    return path


def run_demo(
    out: str | Path = "demo-output",
    *,
    epochs: int = 40,
    device: str = "auto",
    progress: bool = True,
    n_bootstrap: int = 1000,
    offline: bool | None = None,
) -> DemoResult:
    """Run the whole demo (see the module docstring).

    Args:
        out: Output folder (replaced if it holds an earlier demo).
        epochs: Training epochs of the U-Net.
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        progress: Show progress bars and per-epoch lines.
        n_bootstrap: Bootstrap resamples for the headline intervals.
        offline: Never touch the network (default: :func:`cellbench.settings.offline`); the
            default dataset then has to be in the download cache already.

    Returns:
        The paths written.
    """
    from rich.console import Console

    from cellbench.envinfo import environment_report
    from cellbench.leaderboard import LeaderboardStore, publish
    from cellbench.leaderboard.terminal import print_board
    from cellbench.registry import pull
    from cellbench.submissions import submit
    from cellbench.training.config import TrainConfig
    from cellbench.training.engine import train
    from cellbench.training.package import count_parameters

    console = Console(highlight=False)
    out = Path(out).resolve()
    _prepare(out)
    started = time.perf_counter()

    console.rule(f"1. pull {DATASET}")
    store = pull(DATASET, progress=progress, offline=offline)
    console.print(
        f"{store.id}@{store.version}: {len(store)} samples {store.splits}, "
        f"digest {store.checksum[:16]}..."
    )

    console.rule("2. train a small U-Net")
    config = TrainConfig.from_dict(
        {
            "task": TASK,
            "dataset": f"{store.id}@{store.version}",
            "baseline": "unet",
            "model": {"depth": 3, "base_channels": 16, "patch_size": [96, 96]},
            "epochs": epochs,
            "batch_size": 8,
            "samples_per_epoch": 128,
            "patch_size": [96, 96],
            "lr": 0.05,
            "early_stopping": epochs,
            "workers": 0,
            "seed": 0,
            "device": device,
        },
        context="demo config",
    )
    run = train(config, out / "run", store=store, progress=progress)
    run_dir = Path(run.run_dir)
    env = environment_report(include_torch=True)
    hardware = env.get("cuda", "") if "not available" not in env.get("cuda", "") else "CPU"

    console.rule("3. submit the model and a classical reference")
    root = out / "leaderboards"
    sub = out / "submissions"
    sub.mkdir()
    n_params = count_parameters(run_dir)
    unet_manifest = _manifest(
        sub / "unet.yaml",
        name="U-Net (small, demo)",
        training_data=f"{store.id}@{store.version} train split (val split for model selection)",
        n_parameters=n_params,
        seed=0,
        hardware=f"{hardware}; cellbench {env['cellbench']}, torch {env['torch']}",
        dataset=f"{store.id}@{store.version}",
        kind="safetensors",
        submission=str(run_dir),
    )
    otsu_dir = otsu_predictions(f"{store.id}@{store.version}", "test", sub / "otsu.zarr")
    otsu_manifest = _manifest(
        sub / "otsu.yaml",
        name="Otsu threshold (classical reference)",
        training_data="none (no learning)",
        n_parameters=0,
        seed=0,
        hardware="CPU",
        dataset=f"{store.id}@{store.version}",
        kind="predictions",
        submission=str(otsu_dir),
    )
    reports = {}
    for name, manifest in (("unet", unet_manifest), ("otsu", otsu_manifest)):
        result = submit(
            manifest,
            root=root,
            device=device if device != "auto" else "cpu",
            n_bootstrap=n_bootstrap,
            predictions_dir=sub / f"{name}-predictions",
        )
        reports[name] = result.report.save(out / f"report-{name}.json")

    console.rule("4. leaderboard")
    lb_store = LeaderboardStore(root)
    print_board(lb_store, f"{store.id}@{store.version}", TASK, "test", console=console)
    site = publish(lb_store, out / "site")
    index = site.out / "index.html"
    console.rule("done")
    console.print(f"training run (model package, curves.png, metrics.csv): {run_dir}")
    console.print(f"score reports: {', '.join(str(p) for p in reports.values())}")
    console.print(f"leaderboard site: {index}  (open it in a browser)")
    console.print(f"total time {time.perf_counter() - started:.0f} s")
    return DemoResult(out=out, run_dir=run_dir, leaderboard_root=root, site=index, reports=reports)
