"""Team accounts: API tokens (random, stored as digests), lookup, and browser sessions.

A token is ``cbt_`` plus 43 URL-safe characters (256 random bits from :mod:`secrets`). The
database keeps only its sha256: a token with that much entropy needs no slow hash, and a
leaked database does not reveal tokens. Tokens are shown once, when a team is added.

Browser sign-in exchanges a token for a session cookie: ``team id . expiry . HMAC`` under a
server secret, bound to the token digest (a replaced token ends its sessions). Forms carry a
CSRF token derived from the session with the same secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from cellbench.errors import CellbenchError
from cellbench.server.db import Team, sessions, write_session

TOKEN_PREFIX = "cbt_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
SESSION_SECONDS = 12 * 3600


class AccountError(CellbenchError):
    """A team name is invalid or taken."""


def new_token() -> str:
    """A fresh API token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores for a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def add_team(engine: Engine, name: str, organiser: bool = False) -> str:
    """Create a team (or the organiser account); return its token (shown once).

    Raises:
        AccountError: If the name is invalid or taken.
    """
    name = name.strip()
    if not _NAME.match(name):
        raise AccountError(
            f"team name {name!r}: 1-64 letters, digits, spaces, '.', '_' or '-', starting with "
            "a letter or digit"
        )
    token = new_token()
    try:
        with write_session(engine) as session:
            session.add(Team(name=name, token_hash=token_digest(token), organiser=organiser))
    except IntegrityError:
        raise AccountError(f"team {name!r} already exists") from None
    return token


def team_for_token(engine: Engine, token: str | None) -> Team | None:
    """The team a token belongs to (None for a missing or unknown token)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    with sessions(engine)() as session:
        return session.scalars(select(Team).where(Team.token_hash == token_digest(token))).first()


def session_secret(folder: str | Path) -> bytes:
    """The secret that signs session cookies (created, mode 0600, on first use)."""
    path = Path(folder) / "session.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
    return path.read_bytes()


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def make_session(secret: bytes, team: Team) -> str:
    """A session cookie value for a signed-in team."""
    expires = str(int(time.time()) + SESSION_SECONDS)
    return f"{team.id}.{expires}.{_mac(secret, str(team.id), expires, team.token_hash)}"


def team_for_session(engine: Engine, secret: bytes, cookie: str | None) -> Team | None:
    """The team of a valid, unexpired session cookie (None otherwise)."""
    if not cookie or len(cookie) > 200:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if int(parts[1]) < time.time():
        return None
    with sessions(engine)() as session:
        team = session.get(Team, int(parts[0]))
    if team is None:
        return None
    expected = _mac(secret, parts[0], parts[1], team.token_hash)
    return team if hmac.compare_digest(expected, parts[2]) else None


def csrf_token(secret: bytes, cookie: str) -> str:
    """The CSRF token that forms of this session must carry."""
    return _mac(secret, "csrf", cookie)[:32]


def csrf_ok(secret: bytes, cookie: str | None, token: str | None) -> bool:
    """Whether a submitted form's CSRF token matches its session."""
    if not cookie or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, cookie), token)
