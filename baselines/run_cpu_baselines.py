"""Train every baseline on a CPU with small settings, score it and seed the leaderboards.

One command reproduces every CPU number in ``baselines/*/*/README.md``::

    python baselines/run_cpu_baselines.py                  # all baselines, ~30-60 min on 2 cores
    python baselines/run_cpu_baselines.py --only unet      # one of them

For each baseline it takes the GPU config in ``baselines/<task>/<model>/config.yaml``, applies
the small CPU overrides listed in :data:`RUNS` (smaller network, patches and epochs, no
data-loader workers), trains on the catalog dataset's train split (model selection on val),
predicts and scores the train, val and test splits (bootstrap interval on test), writes
``baselines/<task>/<model>/results-cpu.json`` and enters the test score as a leaderboard entry
(``leaderboards/``). These are CPU sanity numbers for small models, not the published GPU
results, and every file says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cellbench.envinfo import environment_report  # noqa: E402
from cellbench.predictions import write_predictions  # noqa: E402
from cellbench.registry import pull  # noqa: E402
from cellbench.scoring import score  # noqa: E402
from cellbench.submissions import add_report, load_manifest  # noqa: E402
from cellbench.tasks import get_task  # noqa: E402
from cellbench.training.config import TrainConfig  # noqa: E402
from cellbench.training.engine import train  # noqa: E402
from cellbench.training.inference import predict_split  # noqa: E402
from cellbench.training.package import count_parameters  # noqa: E402

SMALL_UNET = {"depth": 3, "base_channels": 16, "patch_size": [64, 64]}

#: (task, baseline folder, dataset, overrides of the GPU config for a 2-core CPU)
RUNS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "classification",
        "resnet18",
        "synthetic-protein-localisation",
        {
            "model": {"pretrained": "none"},
            "epochs": 30,
            "batch_size": 32,
            "optimizer": "sgd",
            "lr": 0.05,
            "early_stopping": 30,
        },
    ),
    (
        "semantic-segmentation",
        "unet",
        "synthetic-nuclei",
        {
            "model": SMALL_UNET,
            "epochs": 30,
            "batch_size": 8,
            "patch_size": [64, 64],
            "samples_per_epoch": 128,
            "early_stopping": 30,
        },
    ),
    (
        "instance-segmentation",
        "embedding-unet",
        "synthetic-nuclei",
        {
            "model": {**SMALL_UNET, "embedding_dim": 8},
            "epochs": 40,
            "batch_size": 8,
            "patch_size": [64, 64],
            "samples_per_epoch": 128,
            "early_stopping": 40,
        },
    ),
    (
        "instance-segmentation",
        "maskrcnn",
        "synthetic-nuclei",
        {
            "model": {
                "backbone": "resnet18",
                "backbone_weights": "none",
                "patch_size": [128, 128],
                "rpn_post_nms_top_n_train": 1000,
                "box_batch_size_per_image": 256,
            },
            "epochs": 24,
            "batch_size": 4,
            "patch_size": [128, 128],
            "samples_per_epoch": 32,
            "early_stopping": 24,
        },
    ),
    (
        "augmented-microscopy",
        "unet-regression",
        "synthetic-label-free",
        {
            "model": SMALL_UNET,
            "epochs": 30,
            "batch_size": 8,
            "patch_size": [64, 64],
            "samples_per_epoch": 128,
            "early_stopping": 30,
        },
    ),
    (
        "tracking",
        "tracker",
        "synthetic-timelapse",
        {
            "model": {"detector_config": {**SMALL_UNET, "embedding_dim": 8}},
            "epochs": 30,
            "batch_size": 8,
            "patch_size": [64, 64],
            "samples_per_epoch": 128,
            "early_stopping": 30,
        },
    ),
]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _scrub(value: Any, absolute: str, relative: str) -> Any:
    """Replace machine-specific absolute paths by repository-relative ones."""
    if isinstance(value, str):
        return value.replace(absolute, relative)
    if isinstance(value, dict):
        return {k: _scrub(v, absolute, relative) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, absolute, relative) for v in value]
    return value


def run_one(
    task: str, model: str, dataset: str, overrides: dict[str, Any], out: Path, leaderboards: Path
) -> dict[str, Any]:
    """Train, score (train/val/test), record and enter one baseline; return its record."""
    folder = REPO / "baselines" / task / model
    gpu_config = yaml.safe_load((folder / "config.yaml").read_text())
    cfg = _merge(
        gpu_config,
        {
            **overrides,
            "workers": 0,
            "device": "cpu",
            "precision": "fp32",
            "dataset": dataset,
            "seed": 0,
        },
    )
    store = pull(dataset, progress=False)
    run_dir = out / task / model
    if run_dir.exists():  # an earlier run of this script: start afresh
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    result = train(
        TrainConfig.from_dict(cfg, context=f"{model} CPU config"),
        run_dir,
        store=store,
        progress=False,
    )
    train_s = time.perf_counter() - started
    headline = get_task(task).headline
    splits: dict[str, Any] = {}
    test_report = None
    test_preds = None
    for split in ("train", "val", "test"):
        preds = predict_split(run_dir, store, split)
        if split == "test":
            test_preds = preds
        report = score(task, store, split, preds, n_bootstrap=1000 if split == "test" else 0)
        splits[split] = {
            "n": len(store.sample_ids(split)),
            "headline": report.headline.value,
            "ci": [report.headline.ci_low, report.headline.ci_high] if split == "test" else None,
        }
        if split == "test":
            test_report = report
    assert test_report is not None
    rel_out = out.relative_to(REPO).as_posix() if out.is_relative_to(REPO) else "runs"
    test_report = type(test_report).from_dict(
        _scrub(test_report.to_dict(), str(out.resolve()), rel_out)
    )
    env = environment_report(include_torch=True)
    hardware = (
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads (no GPU); small CPU config"
    )
    manifest_path = run_dir.parent / f"{model}-manifest.yaml"
    # cellbench runs model packages itself, except for tracking, which is scored from predictions
    kind, submission = "safetensors", model
    if task == "tracking":
        kind, submission = "predictions", f"{model}-test-predictions.zarr"
        pred_path = run_dir.parent / submission
        if pred_path.exists():
            shutil.rmtree(pred_path)
        write_predictions(pred_path, test_preds)
    manifest_path.write_text(
        yaml.safe_dump(
            {
                "name": f"{model} (small CPU config)",
                "authors": ["cellbench baselines"],
                "contact": "https://github.com/cellbench/cellbench",
                "code": {"url": "https://github.com/cellbench/cellbench", "commit": _commit()},
                "paper": "",
                "training_data": f"{store.id}@{store.version} train split (val: model selection)",
                "n_parameters": count_parameters(run_dir),
                "seed": 0,
                "hardware": hardware,
                "license": "BSD-3-Clause",
                "task": task,
                "dataset": f"{store.id}@{store.version}",
                "split": "test",
                "kind": kind,
                "submission": submission,
                "notes": "CPU sanity baseline (baselines/run_cpu_baselines.py); GPU results owed.",
            },
            sort_keys=False,
        )
    )
    add_report(test_report, load_manifest(manifest_path), root=leaderboards, predictions_uri="")
    record = {
        "task": task,
        "baseline": model,
        "dataset": f"{store.id}@{store.version}",
        "dataset_checksum": store.checksum,
        "headline": headline,
        "splits": splits,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_wall_time_s": round(train_s, 1),
        "hardware": hardware,
        "config_overrides": overrides,
        "command": f"python baselines/run_cpu_baselines.py --only {model}",
        "environment": {k: env[k] for k in ("cellbench", "python", "torch", "numpy") if k in env},
    }
    (folder / "results-cpu.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    render_readme(folder)
    print(
        json.dumps({k: record[k] for k in ("baseline", "splits", "train_wall_time_s")}), flush=True
    )
    return record


BEGIN, END = "<!-- cpu-results:begin -->", "<!-- cpu-results:end -->"


def render_readme(folder: Path) -> None:
    """Write the CPU results of ``results-cpu.json`` into the folder's README (between markers)."""
    record = json.loads((folder / "results-cpu.json").read_text())
    s = record["splits"]
    lo, hi = s["test"]["ci"]
    lines = [
        BEGIN,
        "## CPU sanity results (small config; not the GPU results)",
        "",
        f"Command: `{record['command']}` (the GPU config above with the CPU overrides in "
        "`baselines/run_cpu_baselines.py`).",
        f"Dataset: `{record['dataset']}` (digest `{record['dataset_checksum'][:16]}...`). "
        f"Hardware: {record['hardware']}. Training wall time {record['train_wall_time_s']:.0f} s, "
        f"best epoch {record['best_epoch']} of {record['epochs_run']}.",
        "",
        f"| split | samples | {record['headline']} |",
        "|---|---:|---:|",
        f"| train | {s['train']['n']} | {s['train']['headline']:.4f} |",
        f"| val | {s['val']['n']} | {s['val']['headline']:.4f} |",
        f"| test | {s['test']['n']} | {s['test']['headline']:.4f} (95% CI {lo:.4f}-{hi:.4f}) |",
        "",
        "The test entry is on the leaderboard (`leaderboards/`). Environment: "
        + ", ".join(f"{k} {v}" for k, v in record["environment"].items())
        + ".",
        END,
    ]
    readme = folder / "README.md"
    text = readme.read_text()
    block = "\n".join(lines)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def _commit() -> str:
    from cellbench.demo import code_revision

    return code_revision()


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", help="baseline names to run (default: all)")
    parser.add_argument("--out", default=str(REPO / "runs" / "cpu-baselines"), type=Path)
    parser.add_argument("--leaderboards", default=str(REPO / "leaderboards"), type=Path)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite the READMEs from the existing results-cpu.json files",
    )
    args = parser.parse_args()
    if args.render_only:
        for task, model, _, _ in RUNS:
            folder = REPO / "baselines" / task / model
            if (folder / "results-cpu.json").is_file():
                render_readme(folder)
        return 0
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    for task, model, dataset, overrides in RUNS:
        if args.only and model not in args.only:
            continue
        run_one(task, model, dataset, overrides, args.out.resolve(), args.leaderboards)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
