"""Schema migrations keep every row: a database at revision 0001 holding teams, a challenge,
scored and queued submissions, jobs and events is upgraded to head on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from sqlalchemy import inspect, text

from cellbench.server.db import (
    Event,
    Job,
    Submission,
    Team,
    current_revision,
    head_revision,
    make_engine,
    sessions,
    upgrade,
)

RECEIPT = {"receipt": {"type": "cellbench-receipt"}, "signature": {"key_id": "0123456789abcdef"}}


def _fill_0001(engine) -> None:
    now = "2026-01-02 03:04:05"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO teams (id, name, token_hash, organiser, created_at) VALUES "
                "(1, 'alpha', :h1, false, :t), (2, 'org', :h2, true, :t)"
            ),
            {"h1": "a" * 64, "h2": "b" * 64, "t": now},
        )
        conn.execute(
            text(
                "INSERT INTO challenges (id, title, config_json, commitment, dataset_digest, "
                "updated_at) VALUES ('c1', 'Challenge', '{}', :c, :d, :t)"
            ),
            {"c": "c" * 64, "d": "d" * 64, "t": now},
        )
        for sid, state, receipt in (("s1", "scored", json.dumps(RECEIPT)), ("s2", "queued", None)):
            conn.execute(
                text(
                    "INSERT INTO submissions (id, challenge_id, team_id, phase, kind, name, "
                    "manifest_json, upload_sha256, upload_name, upload_bytes, state, reasons_json, "
                    "created_at, public_json, receipt_json, runtime_s, progress_done, "
                    "progress_total) VALUES (:id, 'c1', 1, 'open', 'predictions', :name, '{}', "
                    ":sha, 'p.zip', 1234, :state, '[]', :t, :pub, :r, 1.5, 3, 6)"
                ),
                {
                    "id": sid,
                    "name": f"entry {sid}",
                    "sha": "e" * 64,
                    "state": state,
                    "t": now,
                    "pub": json.dumps({"headline": {"value": 0.75}}) if receipt else None,
                    "r": receipt,
                },
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (submission_id, state, attempts, created_at) "
                    "VALUES (:id, :state, 1, :t)"
                ),
                {"id": sid, "state": "done" if receipt else "queued", "t": now},
            )
            conn.execute(
                text(
                    "INSERT INTO events (submission_id, state, at, detail) "
                    "VALUES (:id, 'queued', :t, 'uploaded')"
                ),
                {"id": sid, "t": now},
            )


def test_upgrade_from_0001_keeps_every_row(db_url):
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        assert "workers" not in inspect(engine).get_table_names()
        _fill_0001(engine)
        upgrade(engine)
        assert current_revision(engine) == head_revision() == "0002"
        assert "workers" in inspect(engine).get_table_names()
        with sessions(engine)() as s:
            teams = s.query(Team).order_by(Team.id).all()
            assert [(t.name, t.organiser, t.token_hash) for t in teams] == [
                ("alpha", False, "a" * 64),
                ("org", True, "b" * 64),
            ]
            subs = {x.id: x for x in s.query(Submission).all()}
            assert set(subs) == {"s1", "s2"}
            scored = subs["s1"]
            assert scored.state == "scored" and json.loads(scored.receipt_json) == RECEIPT
            assert json.loads(scored.public_json)["headline"]["value"] == 0.75
            assert scored.receipt_key_id == "0123456789abcdef"  # filled by the migration
            assert scored.runtime_s == 1.5 and scored.upload_bytes == 1234
            assert (scored.progress_done, scored.progress_total) == (3, 6)
            assert scored.created_at.isoformat() == "2026-01-02T03:04:05+00:00"
            assert subs["s2"].receipt_key_id is None and subs["s2"].state == "queued"
            assert sorted((j.submission_id, j.state) for j in s.query(Job).all()) == [
                ("s1", "done"),
                ("s2", "queued"),
            ]
            assert s.query(Event).count() == 2
        upgrade(engine)  # idempotent
        assert current_revision(engine) == "0002"
    finally:
        engine.dispose()
