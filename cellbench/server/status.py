"""The organiser's view of a server: queue by state, workers and their heartbeats, receipts.

:func:`server_status` backs ``GET /api/status`` and ``cellbench server status``;
:func:`receipt_for` serves the signed receipt of a scored submission - as signed when it was
scored, or, once the challenge's final deadline has passed, a final receipt that adds the
private score (signed on request; deterministic, dated at the deadline).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cellbench.server import queue
from cellbench.server.db import Challenge, Job, Submission, Team, Worker, sessions, utcnow
from cellbench.server.views import iso


def server_status(engine: Engine) -> dict[str, Any]:
    """Challenges, teams, submissions by state, the oldest queued job, workers."""
    now = utcnow()
    with sessions(engine)() as session:
        by_state = queue.counts(session)
        oldest = session.scalar(select(func.min(Job.created_at)).where(Job.state == "queued"))
        workers = session.scalars(select(Worker).order_by(Worker.started_at)).all()
        challenges = session.scalars(select(Challenge.id)).all()
        n_teams = session.scalar(select(func.count()).select_from(Team)) or 0
        attempts = session.scalar(select(func.max(Job.attempts))) or 0
    return {
        "time": iso(now),
        "challenges": list(challenges),
        "teams": int(n_teams),
        "submissions": by_state,
        "oldest_queued_s": (now - oldest).total_seconds() if oldest else None,
        "max_attempts_seen": int(attempts),
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "started_at": iso(w.started_at),
                "heartbeat_age_s": round((now - w.heartbeat_at).total_seconds(), 1),
                "current_submission": w.current_submission,
            }
            for w in workers
        ],
    }


def receipt_for(state: Any, submission_id: str) -> dict[str, Any] | None:
    """The receipt of a scored submission (None for anything else)."""
    from cellbench.challenge.receipts import load_or_create_key
    from cellbench.server.worker import Outcome, build_receipt

    if len(submission_id) > 32:
        return None
    with sessions(state.engine)() as session:
        sub = session.get(Submission, submission_id)
        if sub is None or sub.state != "scored" or not sub.receipt_json:
            return None
        team = session.get(Team, sub.team_id)
    stored = json.loads(sub.receipt_json)
    challenge = state.challenges.get(sub.challenge_id)
    if challenge is None or not challenge.config.closed(utcnow()) or not sub.private_json:
        return stored
    scores = {
        "public": json.loads(sub.public_json or "null"),
        "private": json.loads(sub.private_json),
        "predictions_sha256": stored["receipt"]["predictions_sha256"],
    }
    outcome = Outcome(
        "scored", scores=scores, runtime_s=sub.runtime_s, peak_memory_mb=sub.peak_memory_mb
    )
    deadline = iso(challenge.config.final_deadline)
    body = build_receipt(challenge, sub, team.name, outcome, final=True, issued_at=deadline)
    return load_or_create_key(state.storage / "keys").sign(body)
