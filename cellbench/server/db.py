"""The challenge server's database: SQLAlchemy 2 models, engines and schema migrations.

Tables: ``teams`` (API tokens stored as sha256 digests), ``challenges`` (the declaration each
server loaded, its commitment), ``submissions`` (what was uploaded, its state, its public and
private scores, its signed receipt), ``jobs`` (the queue: leases and heartbeats), ``events``
(every state change of a submission with its time) and ``workers`` (who is alive).

Two backends: SQLite in ``$CELLBENCH_HOME/server/cellbench.db`` (the embedded default; WAL
mode, ``BEGIN IMMEDIATE`` for writes so that claiming a job is atomic) and PostgreSQL
(``--db postgresql://...``; jobs are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED``). The
schema is created and upgraded by the Alembic migrations shipped in
``cellbench/server/migrations`` (:func:`upgrade`); upgrading keeps every row.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from cellbench.errors import CellbenchError

MIGRATIONS = Path(__file__).parent / "migrations"


class DatabaseError(CellbenchError):
    """The database is unreachable, of an unknown kind, or its schema is out of date."""


class UTCDateTime(TypeDecorator):
    """Timestamps stored as naive UTC, returned as timezone-aware UTC (same on both backends)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Aware UTC in, naive UTC stored."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database (use UTC-aware times)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        """Naive UTC stored, aware UTC out."""
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    """The current time, UTC-aware, to the microsecond."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the server's tables."""


class Team(Base):
    """A team (or the organiser) and the digest of its API token."""

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    organiser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Challenge(Base):
    """A challenge as last loaded by a server."""

    __tablename__ = "challenges"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    config_json: Mapped[str] = mapped_column(Text)
    commitment: Mapped[str] = mapped_column(String(64))
    dataset_digest: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Submission(Base):
    """One upload and everything that happened to it."""

    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    challenge_id: Mapped[str] = mapped_column(ForeignKey("challenges.id"))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    phase: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    manifest_json: Mapped[str] = mapped_column(Text)
    upload_sha256: Mapped[str] = mapped_column(String(64))
    upload_name: Mapped[str] = mapped_column(String(255))
    upload_bytes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    reasons_json: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    public_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    private_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    receipt_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    receipt_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_submissions_team_day", "team_id", "challenge_id", "created_at"),)


class Job(Base):
    """A queue entry: one per submission; leased by one worker at a time."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), unique=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """A state change of a submission, with its time (the status page lists them)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str] = mapped_column(Text, default="")


class Worker(Base):
    """A worker process and its last heartbeat."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_submission: Mapped[str | None] = mapped_column(String(32), nullable=True)


# ----------------------------------------------------------------------------- engines
def default_url() -> str:
    """SQLite in ``$CELLBENCH_HOME/server/cellbench.db``."""
    from cellbench.store.cache import cellbench_home

    folder = cellbench_home() / "server"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'cellbench.db'}"


def normalise_url(url: str | None) -> str:
    """The SQLAlchemy URL for ``--db`` (``postgresql://`` uses psycopg 3).

    Raises:
        DatabaseError: For a backend other than SQLite or PostgreSQL.
    """
    if not url:
        return default_url()
    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError and friends
        raise DatabaseError(f"--db {redact(url)!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return url
    raise DatabaseError(f"--db: {backend} is not supported (use sqlite:/// or postgresql://)")


def redact(url: str) -> str:
    """A database URL with its password hidden (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all
        return "<unparsable URL>"


def make_engine(url: str | None = None) -> Engine:
    """An engine for the server's database (SQLite tuned for concurrent workers, or PostgreSQL).

    Writes that must be atomic across processes use :func:`write_session`.
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            immediate = conn.get_execution_options().get("sqlite_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def is_postgres(engine: Engine) -> bool:
    """Whether the engine talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


def sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory (reads; objects stay usable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction takes the write lock at once (SQLite ``BEGIN IMMEDIATE``).

    Commits on success, rolls back on error.
    """
    bound = engine.execution_options(sqlite_immediate=True)
    with Session(bound, expire_on_commit=False) as session, session.begin():
        yield session


# ----------------------------------------------------------------------------- migrations
def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` (every row is kept)."""
    from alembic import command

    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def head_revision() -> str:
    """The newest schema revision shipped with this cellbench."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return str(ScriptDirectory.from_config(cfg).get_current_head())


def current_revision(engine: Engine) -> str | None:
    """The schema revision of a database (None when it has none)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Refuse a database whose schema is not the one this cellbench writes.

    Raises:
        DatabaseError: Naming both revisions and the command that upgrades.
    """
    try:
        have = current_revision(engine)
    except Exception as err:  # OperationalError: unreachable server, bad credentials
        raise DatabaseError(
            f"cannot reach the database {redact(str(engine.url))}: {str(err).splitlines()[0]}"
        ) from None
    want = head_revision()
    if have != want:
        raise DatabaseError(
            f"database {redact(str(engine.url))} has schema {have or 'none'}, this cellbench "
            f"needs {want}; start `cellbench serve` once (it upgrades the schema)"
        )


def worker_id() -> str:
    """An identifier for this process: host and pid."""
    import socket

    return f"{socket.gethostname()[:100]}:{os.getpid()}"
