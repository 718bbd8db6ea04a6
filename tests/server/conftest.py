"""Databases for the server tests: SQLite files, and fresh PostgreSQL databases per test run.

PostgreSQL runs at 127.0.0.1:5432 with trust auth (user ``postgres`` or ``root``). Each
database-backed module gets a new database, dropped at the end. Where no server answers the
PostgreSQL cases are skipped with the reason, except under CI (``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import secrets

import pytest

PG_HOST, PG_PORT = "127.0.0.1", 5432


class PgAdmin:
    def __init__(self, user: str) -> None:
        self.user = user

    def _connect(self):
        import psycopg

        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=self.user, dbname="postgres", autocommit=True
        )

    def create(self) -> str:
        name = f"cellbench_test_{os.getpid()}_{secrets.token_hex(4)}"
        with self._connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def url(self, name: str) -> str:
        return f"postgresql://{self.user}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_stale(self) -> None:
        """Drop test databases left by runs whose process is gone (a killed run)."""
        with self._connect() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'cellbench_test_%'"
                )
            ]
        for name in names:
            pid = name.split("_")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                self.drop(name)


def _find_admin() -> PgAdmin | None:
    try:
        import psycopg
    except ImportError:
        return None
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", connect_timeout=3
            ):
                return PgAdmin(user)
        except psycopg.OperationalError:
            continue
    return None


@pytest.fixture(scope="session")
def postgres() -> PgAdmin:
    admin = _find_admin()
    if admin is None:
        message = (
            f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT} (trust auth, user postgres/root)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL cases: {message}")
        pytest.skip(message)
    admin.drop_stale()
    return admin


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_url(request, tmp_path_factory):
    """A fresh database for one test module, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'server.db'}"
        return
    admin = request.getfixturevalue("postgres")
    name = admin.create()
    try:
        yield admin.url(name)
    finally:
        admin.drop(name)
