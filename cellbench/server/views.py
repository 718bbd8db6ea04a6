"""What the server shows: submissions, leaderboards and challenges as plain dictionaries.

The JSON API returns these dictionaries and the HTML pages render them, so both always show
the same thing. Nothing here reads hidden labels: scores come from the aggregates stored by
the workers, and private scores only appear once a challenge's final deadline has passed.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cellbench.challenge.prepare import PreparedChallenge
from cellbench.server.db import Event, Submission, Team, utcnow
from cellbench.server.queue import FINAL


def iso(when: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z`` (None stays None)."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def day_window(now: datetime) -> tuple[datetime, datetime]:
    """The UTC day containing ``now``: ``(start, reset)``."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def submissions_today(session: Session, team_id: int, challenge_id: str, now: datetime) -> int:
    """Submissions a team made to a challenge since the start of the UTC day."""
    start, _ = day_window(now)
    return int(
        session.scalar(
            select(func.count())
            .select_from(Submission)
            .where(
                Submission.team_id == team_id,
                Submission.challenge_id == challenge_id,
                Submission.created_at >= start,
            )
        )
        or 0
    )


def submission_view(
    session: Session, sub: Submission, challenge: PreparedChallenge | None, team: Team
) -> dict[str, Any]:
    """A submission as its team (or the organiser) sees it."""
    events = session.scalars(
        select(Event).where(Event.submission_id == sub.id).order_by(Event.id)
    ).all()
    manifest = json.loads(sub.manifest_json)
    revealed = challenge is not None and challenge.config.closed(utcnow())
    return {
        "id": sub.id,
        "challenge": sub.challenge_id,
        "team": team.name,
        "phase": sub.phase,
        "name": sub.name,
        "kind": sub.kind,
        "authors": manifest.get("authors", []),
        "upload": {"name": sub.upload_name, "sha256": sub.upload_sha256, "bytes": sub.upload_bytes},
        "state": sub.state,
        "final": sub.state in FINAL,
        "reasons": json.loads(sub.reasons_json or "[]"),
        "created_at": iso(sub.created_at),
        "started_at": iso(sub.started_at),
        "finished_at": iso(sub.finished_at),
        "progress": {"done": sub.progress_done, "total": sub.progress_total},
        "events": [{"state": e.state, "at": iso(e.at), "detail": e.detail} for e in events],
        "public": json.loads(sub.public_json) if sub.public_json else None,
        "private": json.loads(sub.private_json) if (sub.private_json and revealed) else None,
        "runtime_s": sub.runtime_s,
        "peak_memory_mb": sub.peak_memory_mb,
        "receipt_url": f"/receipts/{sub.id}.json" if sub.receipt_json else None,
    }


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "higher" else a < b


def leaderboard(session: Session, challenge: PreparedChallenge) -> dict[str, Any]:
    """Best scored submission of each team, ranked on the public part (private once revealed).

    Ties keep the earlier submission; rows with an undefined headline rank last.
    """
    revealed = challenge.config.closed(utcnow())
    rows = session.execute(
        select(Submission, Team)
        .join(Team, Team.id == Submission.team_id)
        .where(Submission.challenge_id == challenge.id, Submission.state == "scored")
        .order_by(Submission.created_at, Submission.id)
    ).all()
    part = "private" if revealed else "public"
    best: dict[int, tuple[Submission, Team, dict[str, Any], dict[str, Any] | None]] = {}
    counts: dict[int, int] = {}
    direction = "higher"
    for sub, team in rows:
        public = json.loads(sub.public_json or "null")
        private = json.loads(sub.private_json or "null") if revealed else None
        if public is None:
            continue
        direction = public["headline"]["direction"]
        counts[team.id] = counts.get(team.id, 0) + 1
        key = (private if revealed and private else public)["headline"]["value"]
        current = best.get(team.id)
        if current is None:
            best[team.id] = (sub, team, public, private)
            continue
        cur_scores = current[3] if revealed and current[3] else current[2]
        cur = cur_scores["headline"]["value"]
        if key is not None and (cur is None or _better(key, cur, direction)):
            best[team.id] = (sub, team, public, private)

    def sort_key(item: tuple[Submission, Team, dict[str, Any], dict[str, Any] | None]) -> Any:
        sub, _team, public, private = item
        value = (private if revealed and private else public)["headline"]["value"]
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        signed = 0.0 if missing else (-value if direction == "higher" else value)
        return (missing, signed, sub.created_at)

    out = []
    for rank, (sub, team, public, private) in enumerate(sorted(best.values(), key=sort_key), 1):
        out.append(
            {
                "rank": rank,
                "team": team.name,
                "entry": sub.name,
                "submission": sub.id,
                "kind": sub.kind,
                "submitted_at": iso(sub.created_at),
                "n_scored": counts[team.id],
                "public": public["headline"],
                "private": private["headline"] if private else None,
                "runtime_s": sub.runtime_s,
                "peak_memory_mb": sub.peak_memory_mb,
                "receipt_url": f"/receipts/{sub.id}.json",
            }
        )
    headline = out[0]["public"]["name"] if out else None
    return {
        "challenge": challenge.id,
        "ranked_on": part,
        "revealed": revealed,
        "headline": headline,
        "direction": direction,
        "rows": out,
    }
