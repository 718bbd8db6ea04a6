"""The submission driver: validate, run (for models), score, stamp provenance, add to a board.

``submit(manifest)`` is what ``cellbench submit`` calls::

    manifest.yaml ──> manifest fields ──┐
    dataset store (registry.load) ──────┼─> every problem at once (ValidationError, nothing
    submission file (static checks) ────┘   touched) ──> inference for models (runtime, memory)
        ──> task validation of the predictions ──> scoring.score ──> ScoreReport + provenance
        ──> LeaderboardEntry ──> LeaderboardStore.add (atomic, write-once)
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cellbench.errors import CellbenchError, ValidationError
from cellbench.leaderboard.entry import LeaderboardEntry, card_snapshot
from cellbench.leaderboard.store import LeaderboardStore
from cellbench.predictions import PredictionSet, digest_path, load_predictions
from cellbench.report import ScoreReport
from cellbench.scoring import Collected, collect, coverage_problems, summarise
from cellbench.store.cache import cellbench_home
from cellbench.store.location import is_remote
from cellbench.store.scratch import clean_cache, clean_stale, make_scratch
from cellbench.store.zarr_store import DatasetStore
from cellbench.submissions.manifest import (
    CONVENTION_KINDS,
    SubmissionManifest,
    manifest_problems,
    read_manifest_data,
    submission_location,
)
from cellbench.submissions.measure import ResourceUsage
from cellbench.submissions.safety import (
    DEFAULT_LIMITS,
    PACKAGE_FILES,
    Limits,
    OnnxInfo,
    onnx_external_files,
    onnx_problems,
    package_digest,
    package_dir,
    package_problems,
    torchscript_problems,
)
from cellbench.submissions.sandbox import (
    SandboxError,
    SandboxLimits,
    raise_for,
    run_folder,
    run_in_sandbox,
)
from cellbench.tasks import get_task, task_names


@dataclass
class SubmissionResult:
    """What a submission produced.

    Attributes:
        manifest: The validated manifest.
        report: Scores with provenance.
        entry: The leaderboard entry built from them.
        entry_path: Where the entry was stored (None for a dry run).
        predictions_path: The scored predictions (submitted, or written by cellbench); a
            URL for a prediction set submitted from object storage.
        usage: Runtime and memory of inference (model submissions only).
    """

    manifest: SubmissionManifest
    report: ScoreReport
    entry: LeaderboardEntry
    entry_path: str | None
    predictions_path: Path | str
    usage: ResourceUsage | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _open_store(fields: dict[str, Any], problems: list[str]) -> DatasetStore | None:
    from cellbench.registry import load

    if not fields.get("dataset") or not fields.get("dataset_version"):
        return None
    ref = f"{fields['dataset']}@{fields['dataset_version']}"
    try:
        store = load(ref)
    except CellbenchError as err:
        problems.append(f"dataset: {err}")
        return None
    task, split = fields.get("task"), fields.get("split", "test")
    if task and task not in store.tasks:
        problems.append(f"task: dataset {ref} serves {', '.join(store.tasks)}, not {task!r}")
    if split and split not in store.splits:
        problems.append(
            f"split: dataset {ref} has no split {split!r} (has {', '.join(store.splits)})"
        )
    return store


def _spatial_ndim(store: DatasetStore, split: str) -> int | None:
    ids = store.sample_ids(split)
    if not ids:
        return None
    return sum(1 for a in store.axes(ids[0]) if a in "zyx")


def task_problems(
    task: str, store: DatasetStore, split: str, predictions: PredictionSet
) -> list[str]:
    """Problems of a prediction set against the task's schema and the ground truth.

    Uses the task's own output check (:meth:`cellbench.tasks.base.Task.validate_sample`) on
    every predicted sample of the split, plus missing and extra samples. Checks shapes, dtypes,
    frame counts, NaN and label ranges.
    """
    spec = get_task(task)
    ids = store.sample_ids(split)
    predicted = set(predictions.sample_ids)
    problems = coverage_problems(ids, predicted, split)
    for sid in ids:
        if sid in predicted:
            truth = spec.ground_truth(store, sid)
            problems += spec.validate_sample(store, sid, truth, predictions.get(sid))
    return problems


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch is installed and sees a GPU, else ``cpu``; others as given.

    torch is imported only for ``auto`` and only when it is installed, so ONNX models run on a
    core install without it.
    """
    if device != "auto":
        return device
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_problems(device: str) -> list[str]:
    """Problems with the requested inference device (``cpu``, ``cuda`` or ``cuda:N``)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return [f"device: {device!r} is not cpu, cuda or cuda:N"]
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return [f"device: {device} requested but CUDA is not available on this machine"]
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return [f"device: {device} requested but only {torch.cuda.device_count()} GPU(s)"]
    return []


def _bioimageio_as_torchscript(
    fields: dict[str, Any], path: Path, problems: list[str], limits: Limits
) -> tuple[Path | None, dict[str, Any]]:
    """Turn a BioImage.IO package submission into the TorchScript submission it runs as.

    The manifest fields become ``kind: torchscript`` with the package's normalisation; the
    returned mapping (name, format version) is kept in the report's provenance.
    """
    from cellbench.submissions.bioimageio import read_package, unpack

    # a zip is unpacked once per content into the cache (the weights are run from there)
    where = cellbench_home() / "submissions" / "bioimageio"
    folder, unpack_problems = unpack(path, where / digest_path(path)[:16], limits)
    problems += unpack_problems
    if folder is None:
        return None, {}
    package = read_package(folder)
    problems += package.problems
    fields["kind"] = "torchscript"
    fields["normalisation"] = package.normalisation
    if package.weights is not None:
        fields["submission"] = str(package.weights)
    info = {
        "name": package.name,
        "format_version": str(package.rdf.get("format_version", "")),
        "package": str(path),
    }
    return package.weights, info


def _static_model_problems(
    manifest_fields: dict[str, Any], path: Path, store: DatasetStore | None, limits: Limits
) -> tuple[list[str], OnnxInfo | None]:
    kind = manifest_fields["kind"]
    if kind == "torchscript":
        return torchscript_problems(path, limits), None
    if kind == "onnx":
        nd = _spatial_ndim(store, manifest_fields.get("split", "test")) if store else None
        return onnx_problems(path, nd, limits)
    if kind == "safetensors":
        return package_problems(path, limits), None
    return [], None


def _sandbox_inputs(store: DatasetStore, split: str, run: Path) -> None:
    from cellbench.store.variants import write_inputs

    (run / "inputs").mkdir()
    write_inputs(store, split, run / "inputs" / "store.zarr")


def _copy_model(kind: str, path: Path, run: Path) -> str:
    """Copy the submitted model file(s) into the run folder; return the path the child opens."""
    model_dir = run / "model"
    model_dir.mkdir()
    if kind == "safetensors":
        folder = package_dir(path)
        for name in PACKAGE_FILES:
            shutil.copyfile(folder / name, model_dir / name)
        return "model"
    shutil.copyfile(path, model_dir / path.name)
    if kind == "onnx":  # external tensor files, checked by onnx_problems to lie beside it
        for location in onnx_external_files(path):
            target = model_dir / location
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path.parent / location, target)
    return f"model/{path.name}"


def _device_paths(device: str) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    if not device.startswith("cuda"):
        return (), ()
    devices = tuple(sorted(Path("/dev").glob("nvidia*")))
    reads = tuple(Path(p) for p in ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices"))
    return reads, devices


def _plugins_for(kind: str, path: Path) -> tuple[str, ...]:
    """Modules defining a package's baseline outside cellbench (registered by the caller)."""
    import json
    import sys

    if kind != "safetensors" or "cellbench.training.baseline" not in sys.modules:
        return ()
    from cellbench.training.baseline import _REGISTRY

    try:
        meta = json.loads((package_dir(path) / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    cls = _REGISTRY.get(str(meta.get("baseline", ""))) if isinstance(meta, dict) else None
    if cls is None or cls.__module__.startswith("cellbench."):
        return ()
    return (cls.__module__,)


def run_sandboxed(
    manifest: SubmissionManifest,
    store: DatasetStore,
    out: Path,
    device: str,
    *,
    onnx_info: OnnxInfo | None = None,
    limits: Limits = DEFAULT_LIMITS,
    sandbox: SandboxLimits | None = None,
    plugins: tuple[str, ...] | None = None,
    require_landlock: bool = False,
    on_progress: Any = None,
    inputs: Path | None = None,
) -> tuple[ResourceUsage, dict[str, Any]]:
    """Run a vetted model submission in the sandbox; write canonical predictions to ``out``.

    The model is never loaded in this process: :mod:`cellbench.submissions.sandbox` starts a
    locked-down child that reads a copy of the split's images only (no labels), loads the model
    and writes predictions into its scratch folder; they are moved to ``out`` afterwards.

    Args:
        manifest: The submission manifest (kind, task, split, normalisation, file).
        store: The dataset.
        out: Destination of the canonical prediction set (must not exist).
        device: ``cpu`` or ``cuda[:N]``.
        onnx_info: What the ONNX checks found (ONNX only).
        limits: Size limits (ONNX per-shape checks).
        sandbox: Runtime, memory and other limits of the run.
        plugins: Modules the child imports first (default: the module of a package's
            baseline when the caller registered it outside cellbench).
        require_landlock: Refuse to run where the filesystem cannot be confined.
        on_progress: Called with ``(done, total, sample)``.
        inputs: A ready inputs store (the split's images only, e.g. a challenge's); default:
            one is written from ``store`` for this run.

    Returns:
        Runtime/memory of inference (measured in the child) and facts about the run, with
        ``sandbox``: wall time, CPU time and peak memory of the whole child and the
        protections it applied.

    Raises:
        ValidationError: If an output breaks the convention (names the sample and shape).
        SandboxLimitError: If the run broke a limit (names it and how far it got).
        SandboxError: If the model failed to load or raised.
    """
    sandbox = sandbox or SandboxLimits()
    path = manifest.submission_path
    if out.exists():
        raise ValidationError([f"{out}: already exists"], context="predictions")
    reads, devices = _device_paths(device)
    if inputs is not None:
        reads = (*reads, inputs.resolve())
    with run_folder() as run:
        if inputs is None:
            _sandbox_inputs(store, manifest.split, run)
        else:
            (run / "inputs").mkdir()
            (run / "inputs" / "store.zarr").symlink_to(inputs.resolve(), target_is_directory=True)
        model_rel = _copy_model(manifest.kind, path, run)
        job: dict[str, Any] = {
            "entry": "cellbench.submissions.runners:sandbox_entry",
            "preload": ["torch"] if manifest.kind != "onnx" else ["onnxruntime", "onnx"],
            "kind": manifest.kind,
            "task": manifest.task,
            "split": manifest.split,
            "device": device,
            "name": manifest.name,
            "model": model_rel,
            "display_path": str(path),
            "inputs": "inputs/store.zarr",
            "out": "work/predictions.zarr",
            "normalisation": dict(manifest.normalisation),
            "onnx_info": dataclasses.asdict(onnx_info) if onnx_info is not None else None,
            "size_limits": dataclasses.asdict(limits),
        }
        result = run_in_sandbox(
            job,
            run,
            sandbox,
            plugins=_plugins_for(manifest.kind, path) if plugins is None else plugins,
            require_landlock=require_landlock,
            extra_read=reads,
            extra_rw_files=devices,
            on_progress=on_progress,
        )
        raise_for(result, sandbox, context=str(path))
        produced = run / "work" / "predictions.zarr"
        unsafe = special_files(produced)
        if unsafe:
            raise SandboxError(f"{path}: the model run left links or special files: {unsafe[0]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), str(out))
    usage = ResourceUsage(**{k: v for k, v in result.usage.items() if k != "method"})
    usage.method = dict(result.usage.get("method") or {})
    extra = {
        **result.extra,
        "sandbox": {
            "runtime_s": round(result.runtime_s, 3),
            "cpu_s": round(result.cpu_s, 3),
            "peak_memory_mb": round(result.peak_memory_mb, 1),
            "protections": result.protections,
        },
    }
    return usage, extra


def special_files(folder: Path) -> list[str]:
    """Symbolic links and non-regular files below a folder (what a model run must not leave)."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink() or not (p.is_dir() or p.is_file()):
                out.append(str(p.relative_to(folder)))
    return out


def run_convention_model(
    manifest: SubmissionManifest,
    store: DatasetStore,
    onnx_info: OnnxInfo | None,
    out: Path,
    device: str,
    limits: Limits,
    sandbox: SandboxLimits | None = None,
) -> tuple[ResourceUsage, dict[str, Any]]:
    """Run a vetted TorchScript/ONNX model over the split; write canonical predictions to ``out``.

    Follows the I/O convention of :mod:`cellbench.submissions.runners`. Call only after the
    static checks (:func:`cellbench.submissions.safety.torchscript_problems` or
    :func:`~cellbench.submissions.safety.onnx_problems`) found nothing. The model runs in the
    sandbox (:func:`run_sandboxed`), never in this process.

    Args:
        manifest: The submission manifest (kind, task, split, normalisation, file).
        store: The dataset.
        onnx_info: What the ONNX checks found (ONNX only).
        out: Destination of the canonical prediction set (must not exist).
        device: ``cpu`` or ``cuda[:N]``.
        limits: Size limits (ONNX per-shape checks).
        sandbox: Runtime and memory limits of the run.

    Returns:
        Runtime/memory of inference and facts about the runtime (parameter count, device).

    Raises:
        ValidationError: If an output breaks the convention (names the sample and shape).
        SandboxLimitError: If the run broke a limit.
    """
    return run_sandboxed(
        manifest, store, out, device, onnx_info=onnx_info, limits=limits, sandbox=sandbox
    )


def run_package(
    manifest: SubmissionManifest,
    store: DatasetStore,
    out: Path,
    device: str,
    sandbox: SandboxLimits | None = None,
) -> tuple[ResourceUsage, dict[str, Any]]:
    """Run a safetensors model package with the training engine's inference, in the sandbox.

    The package is rebuilt by :func:`cellbench.training.package.load_package` (baseline
    class from the registry, weights from safetensors: nothing is unpickled) and run with
    :func:`cellbench.training.inference.predict_split`, which applies the training-time
    normalisation and tiling recorded in ``model.json`` - inside the sandbox child.

    Returns:
        Runtime/memory of inference and facts about the run (parameter count, device).

    Raises:
        ValidationError: If the package's model serves another task than the manifest says.
        SandboxLimitError: If the run broke a limit.
    """
    return run_sandboxed(manifest, store, out, device, sandbox=sandbox)


def evaluate_submission(
    manifest_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    n_bootstrap: int = 1000,
    seed: int = 0,
    predictions_dir: str | os.PathLike[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    sandbox: SandboxLimits | None = None,
) -> SubmissionResult:
    """Validate and score a submission without adding it to a leaderboard.

    Args:
        manifest_path: The submission manifest (YAML).
        device: Where to run model submissions (``cpu``, ``cuda``, ``cuda:1``; ``auto``: a
            GPU when torch sees one).
        n_bootstrap: Bootstrap resamples for the headline's confidence interval.
        seed: Seed of the bootstrap.
        predictions_dir: Where predictions of model submissions are written (default:
            ``$CELLBENCH_HOME/submissions``).
        limits: Size limits for model files.
        sandbox: Runtime and memory limits of model runs (default
            :class:`~cellbench.submissions.sandbox.SandboxLimits`).

    Returns:
        The manifest, report and (unsaved) leaderboard entry.

    Raises:
        ValidationError: Listing every problem of the manifest, the submission files and the
            predictions; nothing is written to a leaderboard.
    """
    manifest_path = Path(manifest_path)
    context = f"submission {manifest_path}"
    clean_cache()  # temporaries of killed runs (never those of a live process)
    data = read_manifest_data(manifest_path)
    problems, fields = manifest_problems(data)
    store = _open_store(fields, problems)

    sub_path: Path | None = None
    sub_url: str | None = None  # a prediction set on object storage, read where it is
    if fields.get("submission"):
        raw = str(fields["submission"])
        if is_remote(raw):
            if fields.get("kind") == "predictions":
                sub_url = raw.rstrip("/")
            else:
                problems.append(
                    f"submission: {raw}: only a prediction set is read from a URL "
                    f"(kind 'predictions'); a {fields.get('kind')} model must be a local file"
                )
        else:
            sub_path = submission_location(raw, manifest_path)
            if not sub_path.exists():
                problems.append(f"submission: {sub_path} does not exist")
                sub_path = None
    bioimageio: dict[str, Any] = {}
    if fields.get("kind") == "bioimageio" and sub_path is not None:
        sub_path, bioimageio = _bioimageio_as_torchscript(fields, sub_path, problems, limits)

    kind = fields.get("kind")
    task = fields.get("task", "")
    split = fields.get("split", "test")
    predictions: PredictionSet | None = None
    onnx_info: OnnxInfo | None = None
    spec = get_task(task) if task in task_names() else None
    collected: Collected | None = None
    located = sub_url or sub_path
    if located is not None and kind == "predictions" and spec is not None:
        try:
            classes = spec.class_names(store) if store is not None else None
            predictions = load_predictions(located, task, class_names=classes or None)
        except ValidationError as err:
            problems += [f"predictions: {p}" for p in err.problems]
        if predictions is not None:
            for name, want in (
                ("dataset", fields.get("dataset")),
                ("dataset_version", fields.get("dataset_version")),
                ("split", split),
            ):
                got = getattr(predictions, name)
                if got and want and got != want:
                    problems.append(f"predictions: recorded {name} {got!r} != manifest {want!r}")
            # The ground truth is usable when the dataset serves this task and split; then the
            # prediction problems are listed together with any manifest problems. The same
            # pass computes the statistics scored below (the ground truth is read once).
            if store is not None and task in store.tasks and split in store.splits:
                try:
                    collected = collect(spec, store, split, predictions, check_recorded=False)
                except ValidationError as err:
                    problems += [f"predictions: {p}" for p in err.problems]
    elif sub_path is not None and kind in ("torchscript", "onnx", "safetensors"):
        if kind in CONVENTION_KINDS and spec is not None and not spec.accepts_models:
            problems.append(f"kind: cellbench does not run {kind} models for task {task!r}")
        static, onnx_info = _static_model_problems(fields, sub_path, store, limits)
        problems += static
        device = resolve_device(device)
        problems += device_problems(device)
    if problems:
        if kind in ("torchscript", "onnx", "safetensors"):
            problems.append("the model was not run because of the problems above")
        raise ValidationError(problems, context=context)

    assert store is not None and located is not None
    manifest = SubmissionManifest(**fields, path=manifest_path)
    usage: ResourceUsage | None = None
    extra: dict[str, Any] = {}
    pred_path: Path | str
    submission_sha: str | None = None
    if kind == "predictions":
        assert predictions is not None
        pred_path = located  # (its digest is taken once it is scored: see below)
    else:
        assert sub_path is not None
        # a model package is identified by its two files, not by logs beside it in a run dir
        submission_sha = (
            package_digest(sub_path) if kind == "safetensors" else digest_path(sub_path)
        )
        root = Path(predictions_dir) if predictions_dir else cellbench_home() / "submissions"
        clean_stale(root)  # runs of earlier submissions that were killed
        # The model runs in an owner-recorded scratch folder; its predictions are kept only
        # once they were scored, so a refused (or killed) submission leaves nothing behind.
        run = make_scratch(root, prefix=".run-")
        staged = run / "predictions.zarr"
        try:
            if kind in CONVENTION_KINDS:
                usage, extra = run_convention_model(
                    manifest, store, onnx_info, staged, device, limits, sandbox
                )
            else:
                usage, extra = run_package(manifest, store, staged, device, sandbox)
            try:
                collected = collect(task, store, split, load_predictions(staged, task))
            except ValidationError as err:
                raise ValidationError(
                    [f"model predictions: {p}" for p in err.problems], context=context
                ) from None
            folder = root / f"{manifest.sha256[:12]}-{submission_sha[:12]}"
            folder.mkdir(parents=True, exist_ok=True)
            pred_path = folder / f"predictions-{uuid.uuid4().hex[:8]}.zarr"
            staged.rename(pred_path)
        finally:
            shutil.rmtree(run, ignore_errors=True)
        predictions = load_predictions(pred_path, task)
        collected.predictions = predictions

    assert collected is not None
    report = summarise(collected, n_bootstrap=n_bootstrap, seed=seed)
    prov = report.provenance
    prov.created = prov.created or _now()
    prov.dataset_checksum = prov.dataset_checksum or store.checksum
    if prov.dataset_checksum != store.checksum:
        raise CellbenchError(
            f"{context}: scored against dataset checksum {prov.dataset_checksum}, but the store "
            f"is {store.checksum}"
        )
    prov.predictions_sha256 = prov.predictions_sha256 or predictions.sha256()
    if submission_sha is None:  # submitted predictions: the digest of the submitted files
        # The report's predictions_sha256 is digest_path's definition over the same files when
        # the set was read from them (a set at a URL digests its listed files alike, so it
        # equals the uploaded folder's): taken, not computed a second time. A set read into
        # memory (no source) has a digest of its arrays, so its files are digested here.
        source = predictions.source
        same = sub_url is not None or (
            source is not None and Path(source).resolve() == Path(located).resolve()
        )
        submission_sha = prov.predictions_sha256 if same else digest_path(located)
    prov.extra.update(
        {
            "submission_kind": "bioimageio" if bioimageio else kind,
            "submission_sha256": submission_sha,
            "manifest_sha256": manifest.sha256,
            **extra,
            **({"bioimageio": bioimageio} if bioimageio else {}),
        }
    )
    if usage is not None:
        prov.runtime_s = usage.runtime_s
        prov.peak_memory_mb = usage.peak_memory_mb
        prov.extra["resources"] = usage.to_dict()
    entry = LeaderboardEntry(
        manifest=manifest.to_dict(),
        report=report,
        submission_sha256=submission_sha,
        submitted=prov.created,
        predictions_uri=pred_path if isinstance(pred_path, str) else str(pred_path.resolve()),
        dataset_card=card_snapshot(store.card),
    )
    return SubmissionResult(manifest, report, entry, None, pred_path, usage)


def submit(
    manifest_path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    device: str = "cpu",
    n_bootstrap: int = 1000,
    seed: int = 0,
    predictions_dir: str | os.PathLike[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
    sandbox: SandboxLimits | None = None,
) -> SubmissionResult:
    """Validate, score and add a submission to its leaderboard.

    Args:
        manifest_path: The submission manifest (YAML).
        root: Leaderboard root (local folder or fsspec URL; default
            :func:`cellbench.leaderboard.store.default_root`).
        dry_run: Score but do not add the entry.
        device: Where to run model submissions.
        n_bootstrap: Bootstrap resamples for the headline interval.
        seed: Bootstrap seed.
        predictions_dir: Where predictions of model submissions are written.
        limits: Size limits for model files.
        sandbox: Runtime and memory limits of model runs.

    Returns:
        The result, with ``entry_path`` set unless ``dry_run``.

    Raises:
        ValidationError: For any problem with the submission (nothing is stored).
        EntryExistsError: If this entry already has a replicate with this seed.
    """
    result = evaluate_submission(
        manifest_path,
        device=device,
        n_bootstrap=n_bootstrap,
        seed=seed,
        predictions_dir=predictions_dir,
        limits=limits,
        sandbox=sandbox,
    )
    if not dry_run:
        result.entry_path = LeaderboardStore(root).add(result.entry)
    return result


def add_report(
    report: ScoreReport,
    manifest: SubmissionManifest,
    *,
    root: str | os.PathLike[str] | None = None,
    submission_sha256: str | None = None,
    predictions_uri: str = "",
    dataset_card: dict[str, Any] | None = None,
) -> tuple[LeaderboardEntry, str]:
    """Add an already computed score report to its leaderboard (e.g. the trained baselines).

    Args:
        report: A report written by scoring (``ScoreReport.load``).
        manifest: The manifest describing the entry.
        root: Leaderboard root.
        submission_sha256: Digest of what was scored; defaults to the digest of the manifest's
            ``submission`` path if it exists, else the report's recorded submission or
            predictions digest.
        predictions_uri: Where the scored predictions can be read (for error overlays).
        dataset_card: Card snapshot; defaults to the catalog card or the pulled store's card.

    Returns:
        The entry and the path it was stored at.

    Raises:
        ValidationError: If manifest and report disagree (dataset, task, split) or no
            submission digest can be determined.
    """
    sha = submission_sha256
    if sha is None and manifest.submission_path.exists():
        path = manifest.submission_path
        sha = package_digest(path) if manifest.kind == "safetensors" else digest_path(path)
    if sha is None:
        sha = str(
            report.provenance.extra.get("submission_sha256")
            or report.provenance.predictions_sha256
            or ""
        )
    if dataset_card is None:
        dataset_card = _card_for(report.dataset, report.dataset_version)
    report.provenance.extra.setdefault("manifest_sha256", manifest.sha256)
    report.provenance.extra.setdefault("submission_sha256", sha)
    entry = LeaderboardEntry(
        manifest=manifest.to_dict(),
        report=report,
        submission_sha256=sha,
        submitted=report.provenance.created or _now(),
        predictions_uri=predictions_uri,
        dataset_card=dataset_card,
    )
    path = LeaderboardStore(root).add(entry)
    return entry, path


def _card_for(dataset: str, version: str) -> dict[str, Any]:
    from cellbench.catalog import Catalog
    from cellbench.registry import load

    try:
        return card_snapshot(Catalog().card(dataset, version).to_dict())
    except CellbenchError:
        pass
    try:
        return card_snapshot(load(f"{dataset}@{version}").card)
    except CellbenchError:
        return {}
