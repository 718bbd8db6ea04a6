"""The job queue in the database: enqueue, claim with a lease, heartbeat, finish exactly once.

States of a submission and its times (each change is an :class:`~cellbench.server.db.Event`)::

    queued -> running -> scored | rejected (reasons) | failed (reason) | timed-out
                 |
                 +-> queued again when its worker stops heartbeating (lease expired)

A worker claims the oldest claimable job - queued, or running with an expired lease - in one
transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL (concurrent workers skip each
other's rows instead of waiting), ``BEGIN IMMEDIATE`` on SQLite (one writer at a time). The
claim sets a lease (owner, a fresh random token, an expiry) that the worker's heartbeat
extends. Finishing is a compare-and-set on the token in the same transaction that stores the
scores: a worker that lost its lease (it was presumed dead and the job went to another) cannot
record anything, so every submission is scored at most once, and one whose workers keep dying
is failed after :data:`MAX_ATTEMPTS` instead of looping forever.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cellbench.server.db import (
    Event,
    Job,
    Submission,
    Worker,
    is_postgres,
    utcnow,
    write_session,
)

#: Every state of a submission.
STATES = ("queued", "running", "scored", "rejected", "failed", "timed-out")
#: States a submission does not leave.
FINAL = frozenset({"scored", "rejected", "failed", "timed-out"})
#: Attempts before a job whose workers keep dying is failed.
MAX_ATTEMPTS = 3
#: Seconds a lease lasts without a heartbeat.
LEASE_SECONDS = 30.0


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one job.

    Attributes:
        job_id: The job.
        submission_id: Its submission.
        token: The lease token (fences a worker that lost the lease).
        attempt: Which attempt this is (1 for the first).
    """

    job_id: int
    submission_id: str
    token: str
    attempt: int


def add_event(session: Session, submission_id: str, state: str, detail: str = "") -> None:
    """Record a state change with the current time."""
    session.add(Event(submission_id=submission_id, state=state, at=utcnow(), detail=detail))


def enqueue(session: Session, submission: Submission) -> None:
    """Queue a new submission (in the caller's transaction)."""
    submission.state = "queued"
    session.add(submission)
    session.flush()
    session.add(Job(submission_id=submission.id, state="queued", created_at=utcnow()))
    add_event(session, submission.id, "queued", "uploaded")


def claim(engine: Engine, owner: str, lease_seconds: float = LEASE_SECONDS) -> Lease | None:
    """Claim the oldest claimable job, or return None when there is none.

    A running job whose lease expired is requeued first (an event records it); one that has
    used :data:`MAX_ATTEMPTS` is failed instead, and the next job is looked at.
    """
    while True:
        now = utcnow()
        claimable = or_(
            Job.state == "queued", and_(Job.state == "running", Job.lease_expires_at < now)
        )
        with engine.connect() as conn:  # a cheap read first: no write lock while idle
            if conn.execute(select(Job.id).where(claimable).limit(1)).first() is None:
                return None
        with write_session(engine) as session:
            query = select(Job).where(claimable).order_by(Job.id).limit(1)
            if is_postgres(engine):
                query = query.with_for_update(skip_locked=True)
            job = session.scalars(query).first()
            if job is None:
                return None
            sub = session.get(Submission, job.submission_id)
            assert sub is not None
            if job.state == "running":
                add_event(
                    session,
                    sub.id,
                    "queued",
                    f"requeued: worker {job.lease_owner} stopped heartbeating "
                    f"(attempt {job.attempts} of {MAX_ATTEMPTS})",
                )
                if job.attempts >= MAX_ATTEMPTS:
                    job.state, job.lease_token = "done", None
                    _finish_submission(
                        session,
                        sub,
                        "failed",
                        [f"the workers running it stopped {job.attempts} times"],
                    )
                    continue
            job.state = "running"
            job.lease_owner = owner
            job.lease_token = secrets.token_hex(16)
            job.lease_expires_at = now + timedelta(seconds=lease_seconds)
            job.heartbeat_at = now
            job.attempts += 1
            sub.state = "running"
            sub.started_at = now
            sub.progress_done = sub.progress_total = 0
            add_event(session, sub.id, "running", f"worker {owner}, attempt {job.attempts}")
            return Lease(job.id, sub.id, job.lease_token, job.attempts)


def heartbeat(
    engine: Engine,
    lease: Lease,
    lease_seconds: float = LEASE_SECONDS,
    progress: tuple[int, int] | None = None,
) -> bool:
    """Extend a lease (and record progress); False when the lease was lost."""
    now = utcnow()
    with write_session(engine) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == lease.job_id, Job.lease_token == lease.token, Job.state == "running")
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
        )
        held = result.rowcount == 1
        if held and progress is not None:
            session.execute(
                update(Submission)
                .where(Submission.id == lease.submission_id)
                .values(progress_done=progress[0], progress_total=progress[1])
            )
        return held


def _finish_submission(
    session: Session, sub: Submission, state: str, reasons: list[str], detail: str = ""
) -> None:
    sub.state = state
    sub.finished_at = utcnow()
    sub.reasons_json = json.dumps(reasons)
    add_event(session, sub.id, state, detail or "; ".join(reasons)[:2000])


def finish(
    engine: Engine,
    lease: Lease,
    state: str,
    *,
    reasons: list[str] | None = None,
    public: dict[str, Any] | None = None,
    private: dict[str, Any] | None = None,
    receipt: dict[str, Any] | None = None,
    runtime_s: float | None = None,
    peak_memory_mb: float | None = None,
    detail: str = "",
) -> bool:
    """Record the outcome of a job, once; False (nothing recorded) if the lease was lost."""
    if state not in FINAL:
        raise ValueError(f"{state!r} is not a final state")
    with write_session(engine) as session:
        query = select(Job).where(Job.id == lease.job_id)
        if is_postgres(engine):
            query = query.with_for_update()
        job = session.scalars(query).first()
        if job is None or job.state != "running" or job.lease_token != lease.token:
            return False
        job.state, job.lease_token = "done", None
        sub = session.get(Submission, lease.submission_id)
        assert sub is not None
        if public is not None:
            sub.public_json = json.dumps(public, allow_nan=False)
        if private is not None:
            sub.private_json = json.dumps(private, allow_nan=False)
        if receipt is not None:
            sub.receipt_json = json.dumps(receipt, allow_nan=False)
            sub.receipt_key_id = str(receipt["signature"]["key_id"])
        sub.runtime_s = runtime_s
        sub.peak_memory_mb = peak_memory_mb
        _finish_submission(session, sub, state, list(reasons or []), detail)
        return True


def register_worker(engine: Engine, worker: str, host: str, pid: int) -> None:
    """Record a worker as alive."""
    with write_session(engine) as session:
        row = session.get(Worker, worker)
        now = utcnow()
        if row is None:
            session.add(Worker(id=worker, host=host, pid=pid, started_at=now, heartbeat_at=now))
        else:
            row.started_at = row.heartbeat_at = now


def worker_heartbeat(engine: Engine, worker: str, current: str | None) -> None:
    """Refresh a worker's heartbeat and what it works on."""
    with write_session(engine) as session:
        session.execute(
            update(Worker)
            .where(Worker.id == worker)
            .values(heartbeat_at=utcnow(), current_submission=current)
        )


def unregister_worker(engine: Engine, worker: str) -> None:
    """Remove a worker that stops cleanly."""
    with write_session(engine) as session:
        row = session.get(Worker, worker)
        if row is not None:
            session.delete(row)


def counts(session: Session) -> dict[str, int]:
    """Number of submissions in each state."""
    rows = session.execute(select(Submission.state, func.count()).group_by(Submission.state)).all()
    out = dict.fromkeys(STATES, 0)
    out.update({str(state): int(n) for state, n in rows})
    return out
