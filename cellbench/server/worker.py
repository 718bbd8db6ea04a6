"""Workers: claim a job, validate and score it (running models in the sandbox), sign, record.

``cellbench serve`` starts a pool of these; ``cellbench worker --db URL --storage DIR`` starts
more on other machines (they need the same database, the same storage folder and the complete
dataset store in their own cache). A worker:

1. claims the oldest job with a lease (:func:`cellbench.server.queue.claim`) and heartbeats it
   from a thread while it works, recording progress (samples predicted);
2. unpacks the upload into a private scratch folder (vetted archives only,
   :mod:`cellbench.server.storage`);
3. for predictions: reads them with the task's readers; for models: runs the static checks,
   then the model in the sandbox (:func:`cellbench.submissions.core.run_sandboxed`) on the
   challenge's inputs store (the hidden split's images only) with the challenge's limits;
4. scores the public and private parts (:func:`cellbench.challenge.scoring.score_challenge`),
   signs a receipt, and records everything in one transaction that only succeeds while it
   still holds the lease.

Outcomes: ``scored``; ``rejected`` with every problem (bad archive, unreadable or invalid
predictions, unsafe or failing model, a model over its memory limit); ``timed-out`` (a model
over its wall-clock or CPU limit); ``failed`` (the server's fault: an internal error, logged
here; or workers dying repeatedly).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from cellbench._version import __version__
from cellbench.challenge.config import ChallengeConfig
from cellbench.challenge.prepare import PreparedChallenge, prepare_challenge
from cellbench.challenge.receipts import RECEIPT_TYPE, RECEIPT_VERSION, load_or_create_key
from cellbench.errors import CellbenchError, ValidationError
from cellbench.server import queue
from cellbench.server.db import Challenge, Submission, Team, sessions, utcnow, worker_id
from cellbench.server.storage import ArchiveLimits, BlobStore, archive_kind, safe_filename, unpack

log = logging.getLogger("cellbench.server.worker")

_MODEL_SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


class LeaseLostError(Exception):
    """The worker no longer holds the job's lease: stop and record nothing."""


@dataclass
class Outcome:
    """What processing a job came to."""

    state: str
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    runtime_s: float | None = None
    peak_memory_mb: float | None = None


class WorkerContext:
    """What a worker keeps between jobs: database, storage, prepared challenges, signing key.

    Args:
        engine: The database.
        storage: The storage folder shared with the server.
        require_landlock: Refuse to run models where the filesystem cannot be confined.
        lease_seconds: Lease length (heartbeats every third of it).
    """

    def __init__(
        self,
        engine: Engine,
        storage: Path,
        require_landlock: bool = True,
        lease_seconds: float = queue.LEASE_SECONDS,
    ) -> None:
        self.engine = engine
        self.storage = Path(storage)
        self.blobs = BlobStore(self.storage)
        self.key = load_or_create_key(self.storage / "keys")
        self.require_landlock = require_landlock
        self.lease_seconds = lease_seconds
        self.owner = worker_id()
        self._challenges: dict[str, tuple[str, PreparedChallenge]] = {}
        (self.storage / "work").mkdir(parents=True, exist_ok=True)

    def challenge(self, challenge_id: str) -> PreparedChallenge:
        """The prepared challenge, re-prepared when the server loaded a changed declaration."""
        with sessions(self.engine)() as session:
            row = session.get(Challenge, challenge_id)
        if row is None:
            raise CellbenchError(f"challenge {challenge_id!r} is not in the database")
        cached = self._challenges.get(challenge_id)
        if cached is not None and cached[0] == row.config_json:
            return cached[1]
        config = ChallengeConfig.from_dict(json.loads(row.config_json))
        prepared = prepare_challenge(config, self.storage / "challenges")
        if prepared.commitment != row.commitment:
            raise CellbenchError(
                f"challenge {challenge_id}: this worker's store gives label commitment "
                f"{prepared.commitment[:12]}..., the server published {row.commitment[:12]}... "
                "(different dataset store or cellbench version)"
            )
        self._challenges[challenge_id] = (row.config_json, prepared)
        return prepared


def _clean(reasons: list[str], work: Path, upload_name: str) -> list[str]:
    """Reasons without server paths (the scratch folder reads as the upload's name)."""
    out = []
    for reason in reasons:
        text = reason.replace(str(work.resolve()) + "/", "").replace(str(work) + "/", "")
        text = text.replace(str(work.resolve()), upload_name).replace(str(work), upload_name)
        out.append(text)
    return out


def _upload_path(ctx: WorkerContext, sub: Submission, work: Path, limits: ArchiveLimits) -> Path:
    blob = ctx.blobs.path(sub.upload_sha256)
    name = safe_filename(sub.upload_name)
    if sub.kind in _MODEL_SUFFIX:
        target = work / (Path(name).stem + _MODEL_SUFFIX[sub.kind])
        shutil.copyfile(blob, target)
        return target
    if archive_kind(blob) is not None:
        return unpack(blob, work / "upload", limits)
    if sub.kind == "safetensors":
        raise ValidationError(
            ["a safetensors package is uploaded as a zip or tar of model.json + model.safetensors"],
            "upload",
        )
    target = work / name
    shutil.copyfile(blob, target)
    return target


def evaluate(
    ctx: WorkerContext,
    challenge: PreparedChallenge,
    sub: Submission,
    work: Path,
    on_progress: Any,
) -> Outcome:
    """Validate, run (models) and score one submission; never raises for its own faults."""
    from cellbench.predictions import load_predictions
    from cellbench.submissions.core import run_sandboxed
    from cellbench.submissions.manifest import SubmissionManifest, manifest_problems
    from cellbench.submissions.safety import (
        onnx_problems,
        package_problems,
        torchscript_problems,
    )
    from cellbench.submissions.sandbox import (
        SandboxError,
        SandboxLimitError,
        SandboxLimits,
        SandboxUnavailableError,
    )
    from cellbench.tasks import get_task

    config = challenge.config
    spec = get_task(config.task)
    limits = ArchiveLimits(max_total_bytes=max(4 * config.limits.max_upload_bytes, 64 << 20))
    try:
        path = _upload_path(ctx, sub, work, limits)
    except ValidationError as err:
        return Outcome("rejected", [f"upload: {p}" for p in err.problems])
    runtime = peak = None
    if sub.kind == "predictions":
        try:
            classes = spec.class_names(challenge.store) or None
            predictions = load_predictions(path, config.task, class_names=classes)
        except ValidationError as err:
            return Outcome("rejected", [f"predictions: {p}" for p in err.problems])
    else:
        onnx_info = None
        if sub.kind == "torchscript":
            problems = torchscript_problems(path)
        elif sub.kind == "onnx":
            ndim = sum(1 for a in challenge.store.axes(challenge.hidden_ids[0]) if a in "zyx")
            problems, onnx_info = onnx_problems(path, ndim)
        else:
            problems = package_problems(path)
        if not spec.accepts_models:
            problems.append(f"cellbench does not run models for {config.task}")
        if problems:
            return Outcome("rejected", [*problems, "the model was not run"])
        data = json.loads(sub.manifest_json)
        data["submission"] = str(path)
        manifest_issues, fields = manifest_problems(data)
        if manifest_issues:
            return Outcome("rejected", manifest_issues)
        manifest = SubmissionManifest(**fields, path=work / "manifest.yaml")
        out = work / "predictions.zarr"
        sandbox = SandboxLimits(
            max_runtime_s=config.limits.max_model_runtime_s,
            max_memory_bytes=config.limits.max_model_memory_bytes,
        )
        try:
            usage, extra = run_sandboxed(
                manifest,
                challenge.store,
                out,
                "cpu",
                onnx_info=onnx_info,
                sandbox=sandbox,
                plugins=(),
                require_landlock=ctx.require_landlock,
                on_progress=on_progress,
                inputs=challenge.inputs_store,
            )
        except SandboxLimitError as err:
            state = "timed-out" if err.limit in ("wall-clock", "cpu-time") else "rejected"
            return Outcome(state, [str(err)], runtime_s=err.result.model_runtime_s)
        except SandboxUnavailableError as err:
            log.error("sandbox unavailable: %s", err)
            return Outcome("failed", ["the server cannot run models safely right now"])
        except SandboxError as err:
            return Outcome("rejected", [str(err)])
        except ValidationError as err:
            return Outcome("rejected", [f"model output: {p}" for p in err.problems])
        runtime = usage.runtime_s
        peak = float(extra.get("sandbox", {}).get("peak_memory_mb") or 0.0) or None
        predictions = load_predictions(out, config.task)
    from cellbench.challenge.scoring import score_challenge

    try:
        scores = score_challenge(challenge, predictions)
    except ValidationError as err:
        return Outcome("rejected", [f"predictions: {p}" for p in err.problems])
    return Outcome("scored", scores=scores, runtime_s=runtime, peak_memory_mb=peak)


def build_receipt(
    challenge: PreparedChallenge,
    sub: Submission,
    team: str,
    outcome: Outcome,
    *,
    final: bool = False,
    issued_at: str | None = None,
) -> dict[str, Any]:
    """The receipt fields of a scored submission (public part; private too when ``final``)."""
    import hashlib

    from cellbench.challenge.prepare import canonical_json

    assert outcome.scores is not None
    public, private = outcome.scores["public"], outcome.scores["private"]
    config = challenge.config
    body: dict[str, Any] = {
        "type": RECEIPT_TYPE,
        "version": RECEIPT_VERSION,
        "kind": "final" if final else "scored",
        "challenge": config.id,
        "phase": sub.phase,
        "submission": sub.id,
        "team": team,
        "entry": sub.name,
        "dataset": config.dataset,
        "dataset_digest": challenge.store.checksum,
        "label_commitment": challenge.commitment,
        "submission_sha256": sub.upload_sha256,
        "submission_kind": sub.kind,
        "predictions_sha256": outcome.scores["predictions_sha256"],
        "scorer_version": __version__,
        "metric_parameters": challenge.metric_parameters,
        "scoring": {"n_bootstrap": config.n_bootstrap, "bootstrap_seed": config.bootstrap_seed},
        "public": {"n_samples": public["n_samples"], "headline": public["headline"]},
        "private_sha256": hashlib.sha256(canonical_json(private)).hexdigest(),
        "runtime_s": outcome.runtime_s,
        "peak_memory_mb": outcome.peak_memory_mb,
        "submitted_at": sub.created_at.isoformat().replace("+00:00", "Z"),
        "issued_at": issued_at or utcnow().isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if final:
        body["private"] = {"n_samples": private["n_samples"], "headline": private["headline"]}
    return body


class _Heartbeat(threading.Thread):
    """Extends a job's lease every third of its length; notices a lost lease."""

    def __init__(self, ctx: WorkerContext, lease: queue.Lease) -> None:
        super().__init__(daemon=True)
        self.ctx, self.lease = ctx, lease
        self.progress: tuple[int, int] | None = None
        self.lost = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        interval = self.ctx.lease_seconds / 3
        while not self.stop.wait(interval):
            try:
                held = queue.heartbeat(
                    self.ctx.engine, self.lease, self.ctx.lease_seconds, self.progress
                )
                queue.worker_heartbeat(self.ctx.engine, self.ctx.owner, self.lease.submission_id)
            except Exception as err:  # a database hiccup: try again at the next beat
                log.warning("heartbeat failed: %s", err)
                continue
            if not held:
                self.lost.set()
                return


def process(ctx: WorkerContext, lease: queue.Lease) -> bool:
    """Process one claimed job; True when its outcome was recorded."""
    with sessions(ctx.engine)() as session:
        sub = session.get(Submission, lease.submission_id)
        team = session.get(Team, sub.team_id) if sub is not None else None
    if sub is None or team is None:
        return False
    beat = _Heartbeat(ctx, lease)
    beat.start()

    def on_progress(done: int, total: int, _sample: Any) -> None:
        beat.progress = (int(done), int(total))
        if beat.lost.is_set():
            raise LeaseLostError()

    work = Path(tempfile.mkdtemp(prefix=f"job-{sub.id}-", dir=ctx.storage / "work"))
    try:
        challenge = ctx.challenge(sub.challenge_id)
        outcome = evaluate(ctx, challenge, sub, work, on_progress)
        outcome.reasons = _clean(outcome.reasons, work, safe_filename(sub.upload_name))
        receipt = None
        if outcome.state == "scored":
            receipt = ctx.key.sign(build_receipt(challenge, sub, team.name, outcome))
    except LeaseLostError:
        log.warning("lost the lease of %s; dropping it", sub.id)
        return False
    except Exception:  # the server's fault: log it, tell the team without details
        log.error("job %s failed:\n%s", sub.id, traceback.format_exc())
        outcome = Outcome("failed", ["internal error while scoring (logged on the server)"])
        receipt = None
    finally:
        beat.stop.set()
        shutil.rmtree(work, ignore_errors=True)
    if beat.lost.is_set():
        return False
    scores = outcome.scores or {}
    return queue.finish(
        ctx.engine,
        lease,
        outcome.state,
        reasons=outcome.reasons,
        public=scores.get("public"),
        private=scores.get("private"),
        receipt=receipt,
        runtime_s=outcome.runtime_s,
        peak_memory_mb=outcome.peak_memory_mb,
    )


def run_worker(
    engine: Engine,
    storage: Path,
    *,
    poll_seconds: float = 0.2,
    lease_seconds: float = queue.LEASE_SECONDS,
    require_landlock: bool = True,
    max_jobs: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Claim and process jobs until stopped (SIGTERM/SIGINT finish the current job first).

    Returns:
        The number of jobs processed.
    """
    import socket

    ctx = WorkerContext(engine, storage, require_landlock, lease_seconds)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    queue.register_worker(engine, ctx.owner, socket.gethostname(), os.getpid())
    done = 0
    last_beat = 0.0
    try:
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            if time.monotonic() - last_beat > lease_seconds / 3:
                queue.worker_heartbeat(engine, ctx.owner, None)
                last_beat = time.monotonic()
            lease = queue.claim(engine, ctx.owner, lease_seconds)
            if lease is None:
                stop.wait(poll_seconds)
                continue
            log.info("claimed %s (attempt %d)", lease.submission_id, lease.attempt)
            try:
                process(ctx, lease)
            except Exception:  # never let one job take the worker down
                log.error("job %s:\n%s", lease.submission_id, traceback.format_exc())
                reason = ["internal error while recording the result (logged on the server)"]
                try:
                    queue.finish(engine, lease, "failed", reasons=reason)
                except Exception:
                    log.error("could not record the failure of %s", lease.submission_id)
            done += 1
    finally:
        queue.unregister_worker(engine, ctx.owner)
    return done


def pending(engine: Engine) -> int:
    """Jobs not yet done (for tests and status)."""
    from cellbench.server.db import Job

    with sessions(engine)() as session:
        return len(session.scalars(select(Job.id).where(Job.state != "done")).all())
