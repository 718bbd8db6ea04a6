"""Train every baseline, score it, record the numbers in its README and seed the leaderboards.

One command reproduces every number in ``baselines/*/*/README.md``::

    python baselines/run_baselines.py --profile gpu                  # published GPU results
    python baselines/run_baselines.py --profile gpu --only unet --max-minutes 8
    python baselines/run_baselines.py --profile cpu                  # CPU sanity numbers

Profiles:

* ``gpu``: the configs in ``baselines/<task>/<model>/config.yaml`` as they are, on a CUDA
  device (refused without one), on every catalog dataset listed in :data:`GPU_RUNS` (synthetic
  and real). Results go to ``results-gpu.json`` (one record per dataset, kept across runs)
  and the README's GPU section.
* ``cpu``: the same configs with the small overrides of :data:`CPU_RUNS` (smaller network,
  patches and epochs, no data-loader workers) on the synthetic datasets, 2 torch threads.
  Results go to ``results-cpu.json`` and the README's CPU section. These are sanity numbers
  for small models, not the published results, and every file says so.

For each run it trains on the train split (model selection on val), predicts and scores the
train, val and test splits (so overfitting is visible; bootstrap interval on test), records
the command, hardware, precision, wall time and environment, and enters the test score on the
leaderboard (``leaderboards/``). Datasets are pulled into the cellbench cache first (an
offline machine needs them pulled beforehand: copy ``$CELLBENCH_HOME``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cellbench.envinfo import environment_report  # noqa: E402
from cellbench.predictions import digest_path, write_predictions  # noqa: E402
from cellbench.registry import pull  # noqa: E402
from cellbench.scoring import score  # noqa: E402
from cellbench.submissions import add_report, load_manifest  # noqa: E402
from cellbench.tasks import get_task  # noqa: E402
from cellbench.training.config import TrainConfig, parse_override  # noqa: E402
from cellbench.training.engine import train  # noqa: E402
from cellbench.training.inference import predict_split  # noqa: E402
from cellbench.training.package import count_parameters  # noqa: E402

PROFILES = ("gpu", "cpu")
#: Tasks whose leaderboard pages draw error overlays from the entries' kept test predictions.
OVERLAY_TASKS = ("instance-segmentation",)
#: Model config keys that load ImageNet weights (``--no-pretrained`` sets them to ``none``).
WEIGHT_KEYS = ("pretrained", "backbone_weights")


@dataclass(frozen=True)
class Run:
    """One baseline on one dataset.

    Attributes:
        task: Task name.
        model: Baseline folder name under ``baselines/<task>/``.
        dataset: Catalog dataset id.
        overrides: Changes to the folder's ``config.yaml`` for this profile.
    """

    task: str
    model: str
    dataset: str
    overrides: dict[str, Any] = field(default_factory=dict)


SMALL_UNET = {"depth": 3, "base_channels": 16, "patch_size": [64, 64]}
#: 30 epochs of 128 patches of 64 x 64 (the U-Net family's CPU schedule).
SMALL_SCHEDULE = {
    "epochs": 30,
    "batch_size": 8,
    "patch_size": [64, 64],
    "samples_per_epoch": 128,
    "early_stopping": 30,
}

#: Small overrides of the GPU configs for a 2-core CPU (synthetic datasets only).
CPU_RUNS: list[Run] = [
    Run(
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
    Run(
        "semantic-segmentation",
        "unet",
        "synthetic-nuclei",
        {
            "model": SMALL_UNET,
            **SMALL_SCHEDULE,
        },
    ),
    Run(
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
    Run(
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
    Run(
        "augmented-microscopy",
        "unet-regression",
        "synthetic-label-free",
        {
            "model": SMALL_UNET,
            **SMALL_SCHEDULE,
        },
    ),
    Run(
        "tracking",
        "tracker",
        "synthetic-timelapse",
        {
            "model": {"detector_config": {**SMALL_UNET, "embedding_dim": 8}},
            **SMALL_SCHEDULE,
        },
    ),
]

#: The published GPU runs: every baseline on its catalog datasets (synthetic and real).
GPU_RUNS: list[Run] = [
    Run("classification", "resnet18", "synthetic-protein-localisation"),
    Run("semantic-segmentation", "unet", "synthetic-nuclei"),
    Run("semantic-segmentation", "unet", "dsb2018-stardist"),
    Run("instance-segmentation", "embedding-unet", "synthetic-nuclei"),
    Run("instance-segmentation", "embedding-unet", "dsb2018-stardist"),
    Run("instance-segmentation", "maskrcnn", "synthetic-nuclei"),
    Run("instance-segmentation", "maskrcnn", "dsb2018-stardist"),
    Run("augmented-microscopy", "unet-regression", "synthetic-label-free"),
    Run("augmented-microscopy", "unet-regression", "ndev-scratch-assay"),
    Run("tracking", "tracker", "synthetic-timelapse"),
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


@dataclass(frozen=True)
class Profile:
    """How one profile runs and where its numbers go.

    Attributes:
        name: ``gpu`` or ``cpu``.
        runs: The runs of the profile.
        forced: Config keys every run of the profile gets.
        label: How entries and READMEs name the configuration.
    """

    name: str
    runs: list[Run]
    forced: dict[str, Any]
    label: str

    @property
    def results_file(self) -> str:
        """Per-baseline results file name."""
        return f"results-{self.name}.json"

    @property
    def markers(self) -> tuple[str, str]:
        """README markers around the profile's rendered section."""
        return f"<!-- {self.name}-results:begin -->", f"<!-- {self.name}-results:end -->"


PROFILE = {
    "gpu": Profile("gpu", GPU_RUNS, {"device": "cuda", "seed": 0}, "GPU config"),
    "cpu": Profile(
        "cpu",
        CPU_RUNS,
        {"workers": 0, "device": "cpu", "precision": "fp32", "seed": 0},
        "small CPU config",
    ),
}


def _hardware(profile: Profile, resolved: dict[str, Any]) -> str:
    """What the run actually trained on (the device the engine resolved, not the profile)."""
    precision = resolved.get("precision", "?")
    device = str(resolved.get("device", "cpu"))
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
        total = torch.cuda.get_device_properties(index).total_memory / 2**30
        return (
            f"1x {name} ({total:.0f} GiB), precision {precision}, "
            f"{resolved.get('workers', '?')} data-loader workers"
        )
    return (
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads (no GPU); {profile.label}"
    )


def _command(profile: Profile, run: Run, extra: list[str]) -> str:
    parts = [
        "python baselines/run_baselines.py",
        f"--profile {profile.name}",
        f"--only {run.model}",
    ]
    if profile.name == "gpu":
        parts.append(f"--dataset {run.dataset}")
    return " ".join(parts + extra)


def run_one(
    profile: Profile,
    run: Run,
    out: Path,
    leaderboards: Path,
    *,
    baselines: Path,
    sets: dict[str, Any],
    no_pretrained: bool,
    extra_args: list[str],
) -> dict[str, Any]:
    """Train, score (train/val/test), record and enter one baseline; return its record."""
    folder = baselines / run.task / run.model
    cfg, overrides = _run_config(folder, run, sets, no_pretrained)
    cfg = _merge(cfg, {**profile.forced, "dataset": run.dataset})
    config = TrainConfig.from_dict(cfg, context=f"{run.model} {profile.label}")
    store = _verified(run.dataset)
    run_dir = out / run.task / run.model / run.dataset
    if run_dir.exists():  # an earlier run of this script: start afresh
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    result = train(config, run_dir, store=store, progress=False)
    train_s = time.perf_counter() - started
    run_doc = yaml.safe_load((run_dir / "config.yaml").read_text())
    resolved = {**run_doc.get("resolved", {}), "workers": config.workers}
    headline = get_task(run.task).headline
    splits: dict[str, Any] = {}
    test_report = None
    test_preds = None
    for split in ("train", "val", "test"):
        preds = predict_split(run_dir, store, split)
        report = score(run.task, store, split, preds, n_bootstrap=1000 if split == "test" else 0)
        splits[split] = {
            "n": len(store.sample_ids(split)),
            "headline": report.headline.value,
            "ci": [report.headline.ci_low, report.headline.ci_high] if split == "test" else None,
        }
        if split == "test":
            test_report, test_preds = report, preds
    assert test_report is not None
    rel_out = out.relative_to(REPO).as_posix() if out.is_relative_to(REPO) else "runs"
    test_report = type(test_report).from_dict(
        _scrub(test_report.to_dict(), str(out.resolve()), rel_out)
    )
    test_preds.producer = _scrub(test_preds.producer, str(out.resolve()), rel_out)
    env = environment_report(include_torch=True)
    hardware = _hardware(profile, resolved)
    command = _command(profile, run, extra_args)
    manifest_path = run_dir.parent / f"{run.model}-{run.dataset}-manifest.yaml"
    # cellbench runs model packages itself, except for tracking, which is scored from predictions
    kind, submission = "safetensors", run.dataset
    if run.task == "tracking":
        kind, submission = "predictions", f"{run.dataset}-test-predictions.zarr"
        pred_path = run_dir.parent / submission
        if pred_path.exists():
            shutil.rmtree(pred_path)
        write_predictions(pred_path, test_preds)
    predictions_uri = ""
    if run.task in OVERLAY_TASKS:
        predictions_uri = _keep_predictions(
            test_preds, leaderboards, f"{store.id}@{store.version}/{run.task}/test", run, profile
        )
    limited = " (stopped by the time limit)" if result.time_limited else ""
    manifest_path.write_text(
        yaml.safe_dump(
            {
                "name": f"{run.model} ({profile.label})",
                "authors": ["cellbench baselines"],
                "contact": "https://github.com/cellbench/cellbench",
                "code": {"url": "https://github.com/cellbench/cellbench", "commit": _commit()},
                "paper": "",
                "training_data": f"{store.id}@{store.version} train split (val: model selection)",
                "n_parameters": count_parameters(run_dir),
                "seed": 0,
                "hardware": hardware,
                "license": "BSD-3-Clause",
                "task": run.task,
                "dataset": f"{store.id}@{store.version}",
                "split": "test",
                "kind": kind,
                "submission": submission,
                "notes": f"{profile.label} baseline: `{command}`{limited}.",
            },
            sort_keys=False,
        )
    )
    add_report(
        test_report,
        load_manifest(manifest_path),
        root=leaderboards,
        predictions_uri=predictions_uri,
    )
    record = {
        "task": run.task,
        "baseline": run.model,
        "profile": profile.name,
        "dataset": f"{store.id}@{store.version}",
        "dataset_checksum": store.checksum,
        "headline": headline,
        "splits": splits,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "epochs_configured": config.epochs,
        "stopped_early": result.stopped_early,
        "time_limited": result.time_limited,
        "train_wall_time_s": round(train_s, 1),
        "hardware": hardware,
        "precision": resolved.get("precision"),
        "config_overrides": overrides,
        "command": command,
        "environment": {
            k: env[k] for k in ("cellbench", "python", "torch", "cuda", "numpy") if k in env
        },
    }
    _store_record(folder, profile, record)
    render_readme(folder, profile)
    print(
        json.dumps({k: record[k] for k in ("baseline", "dataset", "splits", "train_wall_time_s")}),
        flush=True,
    )
    return record


def _keep_predictions(
    preds: Any, leaderboards: Path, board: str, run: Run, profile: Profile
) -> str:
    """Keep test predictions beside the board's entries; return their root-relative path.

    The folder is named by the predictions' digest, so an entry always points at exactly
    what it scored (a re-run writes a new folder); the copy is atomic.
    """
    leaderboards.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=leaderboards) as tmp:
        staged = Path(tmp) / "predictions.zarr"
        write_predictions(staged, preds)
        digest = digest_path(staged)[:12]
        rel = f"{board}/predictions/{run.model}-{profile.name}-{digest}.zarr"
        dest = leaderboards / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(dest)
    return rel


def _verified(dataset: str) -> Any:
    """Pull (or open the cached) store and check every chunk and the card's pinned digest."""
    from cellbench.catalog import Catalog

    store = pull(dataset, progress=False)
    problems = store.verify()
    pinned = Catalog().card(dataset).checksums.get("store")
    if pinned and store.checksum != pinned:
        problems.append(f"store digest {store.checksum} differs from the card's {pinned}")
    if problems:
        raise SystemExit(f"{store.path}: {dataset} failed verification: " + "; ".join(problems))
    return store


def load_records(folder: Path, profile: Profile) -> list[dict[str, Any]]:
    """The recorded runs of a baseline folder for a profile (one per dataset)."""
    path = folder / profile.results_file
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return list(data["runs"]) if "runs" in data else [data]


def _store_record(folder: Path, profile: Profile, record: dict[str, Any]) -> None:
    """Write the record, replacing an earlier one of the same dataset (runs accumulate)."""
    records = [r for r in load_records(folder, profile) if r["dataset"] != record["dataset"]]
    records = sorted([*records, record], key=lambda r: r["dataset"])
    # GPU results are always a list; a CPU file keeps its single-record form
    single = profile.name == "cpu" and len(records) == 1
    data: dict[str, Any] = records[0] if single else {"runs": records}
    path = folder / profile.results_file
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def render_block(folder: Path, profile: Profile) -> str:
    """The README section of a profile, from its results file (or what is still owed)."""
    begin, end = profile.markers
    records = load_records(folder, profile)
    task, model = folder.parent.name, folder.name
    if profile.name == "gpu":
        title = "## GPU results"
    else:
        title = "## CPU sanity results (small config; not the GPU results)"
    lines = [begin, title, ""]
    if not records:
        datasets = [r.dataset for r in profile.runs if (r.task, r.model) == (task, model)]
        lines += [
            f"{profile.name.upper()} results: not yet measured.",
            "",
            ("Command (on a CUDA machine): " if profile.name == "gpu" else "Command: ")
            + f"`python baselines/run_baselines.py --profile {profile.name} --only {model}`, "
            f"which trains the {profile.label} on "
            + _and([f"`{d}`" for d in datasets])
            + ", scores train, val and test, writes the numbers here and enters the test "
            "score on the leaderboard.",
            end,
        ]
        return "\n".join(lines)
    for record in records:
        s = record["splits"]
        lo, hi = s["test"]["ci"]
        how = (
            "the config above"
            if profile.name == "gpu"
            else "the GPU config above with the CPU overrides in `baselines/run_baselines.py`"
        )
        overrides = record.get("config_overrides") or {}
        if profile.name == "gpu" and overrides:
            how += " with " + ", ".join(f"`{k}: {v}`" for k, v in sorted(_flat(overrides)))
        stop = ""
        if record.get("time_limited"):
            stop = f" Stopped by the time limit after {record['epochs_run']} epochs."
        elif record.get("stopped_early"):
            stop = " Stopped early (no validation improvement)."
        if len(records) > 1 or profile.name == "gpu":
            lines += [f"### {record['dataset']}", ""]
        lines += [
            f"Command: `{record['command']}` ({how}).",
            f"Dataset: `{record['dataset']}` (digest `{record['dataset_checksum'][:16]}...`). "
            f"Hardware: {record['hardware']}. Training wall time "
            f"{record['train_wall_time_s']:.0f} s, best epoch {record['best_epoch']} of "
            f"{record['epochs_run']}.{stop}",
            "",
            f"| split | samples | {record['headline']} |",
            "|---|---:|---:|",
            f"| train | {s['train']['n']} | {s['train']['headline']:.4f} |",
            f"| val | {s['val']['n']} | {s['val']['headline']:.4f} |",
            f"| test | {s['test']['n']} | {s['test']['headline']:.4f} (95% CI {lo:.4f}-{hi:.4f}) |",
            "",
        ]
    env = records[-1]["environment"]
    lines += [
        "The test entries are on the leaderboard (`leaderboards/`). Environment: "
        + ", ".join(f"{k} {v}" for k, v in env.items())
        + ".",
        end,
    ]
    return "\n".join(lines)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _flat(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def render_readme(folder: Path, profile: Profile) -> None:
    """Write the profile's section into the folder's README (between its markers)."""
    begin, end = profile.markers
    readme = folder / "README.md"
    text = readme.read_text()
    block = render_block(folder, profile)
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def _commit() -> str:
    from cellbench.demo import code_revision

    return code_revision()


def _run_config(
    folder: Path, run: Run, sets: dict[str, Any], no_pretrained: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's config and the overrides of ``config.yaml`` recorded next to its numbers.

    Precedence: ``config.yaml`` < the profile's overrides < ``--no-pretrained`` < ``--set``.
    """
    config = yaml.safe_load((folder / "config.yaml").read_text())
    overrides = run.overrides
    if no_pretrained:
        model = config.get("model", {})
        overrides = _merge(overrides, {"model": {k: "none" for k in WEIGHT_KEYS if k in model}})
    overrides = _merge(overrides, sets)
    return _merge(config, overrides), overrides


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=PROFILES, required=True)
    parser.add_argument("--only", nargs="*", help="baseline names to run (default: all)")
    parser.add_argument("--dataset", nargs="*", help="dataset ids to run (default: all)")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="training time budget per run (the run stops after the epoch that passes it; "
        "recorded in the results)",
    )
    parser.add_argument(
        "--no-pretrained",
        action="store_true",
        help="train from scratch instead of loading ImageNet weights (recorded)",
    )
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key of every selected run (recorded), e.g. --set workers=4",
    )
    parser.add_argument("--out", default=None, type=Path, help="run directories")
    parser.add_argument("--leaderboards", default=str(REPO / "leaderboards"), type=Path)
    parser.add_argument(
        "--baselines",
        default=str(REPO / "baselines"),
        type=Path,
        help="baseline folders whose configs are run and whose READMEs/results are written",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="smoke-test the selected runs on any device (CPU too): one short epoch of the "
        "profile's config, then predict and score the test split; records nothing",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite the READMEs from the existing results files",
    )
    args = parser.parse_args(argv)
    profile = PROFILE[args.profile]
    selected = [
        r
        for r in profile.runs
        if (not args.only or r.model in args.only)
        and (not args.dataset or r.dataset in args.dataset)
    ]
    known = {r.model for r in profile.runs}
    unknown = sorted(set(args.only or ()) - known)
    if unknown or not selected:
        parser.error(
            f"no {profile.name} run matches (unknown baselines: {', '.join(unknown) or 'none'}; "
            f"known: {', '.join(sorted(known))})"
        )
    folders = sorted({args.baselines / r.task / r.model for r in selected})
    if args.render_only:
        for folder in folders:
            render_readme(folder, profile)
        return 0
    if args.check:
        return check_runs(profile, selected, args.baselines, no_pretrained=args.no_pretrained)
    if profile.name == "gpu" and not torch.cuda.is_available():
        parser.error(
            "the gpu profile needs a CUDA device (torch.cuda.is_available() is False); "
            "use --profile cpu for the CPU sanity runs"
        )
    if profile.name == "cpu":
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = (args.out or REPO / "runs" / f"{profile.name}-baselines").resolve()
    sets: dict[str, Any] = {}
    extra_args: list[str] = []
    for text in args.sets:
        key, value = parse_override(text)
        sets = _merge(sets, _nest(key, value))
        extra_args.append(f"--set {text}")
    if args.max_minutes is not None:
        sets["max_minutes"] = args.max_minutes
        extra_args.append(f"--max-minutes {args.max_minutes:g}")
    if args.no_pretrained:
        extra_args.append("--no-pretrained")
    for run in selected:
        run_one(
            profile,
            run,
            out,
            args.leaderboards,
            baselines=args.baselines,
            sets=sets,
            no_pretrained=args.no_pretrained,
            extra_args=extra_args,
        )
    return 0


def check_runs(
    profile: Profile, runs: list[Run], baselines: Path, *, no_pretrained: bool = False
) -> int:
    """Run each config for one short epoch, predict and score its test split; record nothing.

    Catches what would waste a GPU job: configs the engine rejects, patch sizes a dataset
    cannot serve, models that fail on its channels, predictions scoring rejects. Uses CUDA
    when present, else the CPU (precision ``auto`` resolves to fp32 there).

    Returns:
        0 when every run passed, else 1 (each failure printed on one line).
    """
    failures = 0
    for run in runs:
        cfg, _ = _run_config(baselines / run.task / run.model, run, {}, no_pretrained)
        short = {"epochs": 1, "samples_per_epoch": int(cfg.get("batch_size", 8))}
        cfg = _merge(cfg, {**short, "workers": 0, "device": "auto", "dataset": run.dataset})
        label = f"{run.model} on {run.dataset}"
        started = time.perf_counter()
        try:
            store = _verified(run.dataset)
            with tempfile.TemporaryDirectory(prefix="cellbench-check-") as tmp:
                config = TrainConfig.from_dict(cfg, context=f"{label} ({profile.label})")
                train(config, Path(tmp) / "run", store=store, progress=False)
                preds = predict_split(Path(tmp) / "run", store, "test")
                report = score(run.task, store, "test", preds, n_bootstrap=0)
        except (Exception, SystemExit) as err:  # report every run, then fail
            failures += 1
            print(f"FAIL {label}: {type(err).__name__}: {err}", flush=True)
            continue
        print(
            f"ok   {label}: 1 epoch of {short['samples_per_epoch']} samples, test "
            f"{report.headline.name} {report.headline.value:.4f} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return 1 if failures else 0


def _nest(key: str, value: Any) -> dict[str, Any]:
    head, _, rest = key.partition(".")
    return {head: _nest(rest, value) if rest else value}


if __name__ == "__main__":
    raise SystemExit(main())
