"""Worker registry, the key id of each receipt, and an index for the daily submission cap.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``workers``, ``submissions.receipt_key_id`` (filled from stored receipts), an index."""
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("current_submission", sa.String(32), nullable=True),
    )
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("receipt_key_id", sa.String(16), nullable=True))
    op.create_index(
        "ix_submissions_team_day", "submissions", ["team_id", "challenge_id", "created_at"]
    )
    # receipts written before this revision name their key inside the signed document
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, receipt_json FROM submissions WHERE receipt_json IS NOT NULL")
    ).fetchall()
    for sid, text in rows:
        try:
            kid = json.loads(text)["signature"]["key_id"]
        except (ValueError, KeyError, TypeError):
            continue
        conn.execute(
            sa.text("UPDATE submissions SET receipt_key_id = :k WHERE id = :i"),
            {"k": str(kid)[:16], "i": sid},
        )


def downgrade() -> None:
    """Remove what :func:`upgrade` added."""
    op.drop_index("ix_submissions_team_day", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("receipt_key_id")
    op.drop_table("workers")
