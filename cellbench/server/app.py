"""The challenge server's ASGI app (FastAPI): a JSON API and server-rendered HTML pages.

JSON API (tokens as ``Authorization: Bearer cbt_...``)::

    GET  /api/challenges                          every challenge: card, rules, commitment
    GET  /api/challenges/{id}                     one challenge (partition ids, deadlines)
    GET  /api/challenges/{id}/leaderboard         public leaderboard (private after deadline)
    GET  /api/challenges/{id}/public-store        the public variant of the store (tar)
    POST /api/challenges/{id}/submissions         upload: manifest (YAML) + file   [team]
    GET  /api/submissions/{id}                    state, times, every problem, scores [team]
    GET  /api/team                                the team, its submissions, quota   [team]
    GET  /api/status                              queue and workers             [organiser]
    GET  /api/keys                                receipt public keys (current and retired)
    GET  /receipts/{id}.json                      signed receipt of a scored submission

HTML: ``/`` (challenges), ``/challenges/{id}`` (card, rules, commitment, deadline),
``/challenges/{id}/leaderboard``, ``/challenges/{id}/submit`` (upload form),
``/submissions/{id}`` (status with every problem), ``/team``, ``/signin``.

Errors: 401 without a valid token, 404 for another team's submission (indistinguishable from
one that does not exist), 413 over the upload limit (checked while the body streams in),
422 with every problem of a manifest or archive, 429 over the daily cap with the time it
resets, 403 after the final deadline. Pages are Jinja2 with autoescaping, a strict Content
Security Policy (no scripts, no external anything) and work at phone width.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from sqlalchemy import select
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cellbench.challenge.prepare import PreparedChallenge
from cellbench.server import accounts, queue
from cellbench.server.db import Submission, Team, is_postgres, sessions, utcnow, write_session
from cellbench.server.storage import ArchiveLimits, BlobStore, archive_kind, archive_problems
from cellbench.server.views import (
    day_window,
    iso,
    leaderboard,
    submission_view,
    submissions_today,
)

log = logging.getLogger("cellbench.server")

#: Content-Security-Policy of every page (the HTTP header; pages repeat it in a <meta> tag
#: without ``frame-ancestors``, which only a header can carry).
META_CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'"
)
CSP = META_CSP + "; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
COOKIE = "cellbench_session"
#: Room for the manifest and multipart framing on top of a challenge's upload limit.
_OVERHEAD = 1 << 20


class TTLCache:
    """A small in-process cache whose entries expire (hot read paths under load)."""

    def __init__(self, seconds: float, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The cached value, or None when absent or expired."""
        with self._lock:
            hit = self._data.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: Any, value: Any) -> None:
        """Cache a value (the whole cache is dropped when it grows past its size)."""
        with self._lock:
            if len(self._data) >= self.size:
                self._data.clear()
            self._data[key] = (time.monotonic() + self.seconds, value)


@dataclass
class ServerState:
    """Everything the app needs, built once by ``cellbench serve``.

    Attributes:
        engine: The database.
        storage: The storage folder.
        challenges: Prepared challenges by id.
        secure_cookies: Mark cookies ``Secure`` (behind HTTPS).
    """

    engine: Engine
    storage: Path
    challenges: dict[str, PreparedChallenge]
    secure_cookies: bool = False
    blobs: BlobStore = field(init=False)
    session_secret: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.blobs = BlobStore(self.storage)
        self.session_secret = accounts.session_secret(self.storage / "keys")

    @property
    def max_body(self) -> int:
        """Largest request body accepted (the largest challenge upload limit plus framing)."""
        limits = [c.config.limits.max_upload_bytes for c in self.challenges.values()]
        return max(limits, default=1 << 20) + _OVERHEAD


class BodyLimit:
    """ASGI middleware: refuse request bodies over a limit with 413, while they stream in.

    A declared ``Content-Length`` over the limit is refused before reading anything; a body
    that turns out longer (chunked, or lying) is cut off when it passes the limit.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Pass the request on, counting body bytes; answer 413 past the limit."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._drain(receive, self.limit)  # bounded, so the client reads the 413
            await self._refuse(send)
            return
        seen = 0
        started = False
        more = True

        async def limited_receive() -> Any:
            nonlocal seen, more
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                more = bool(message.get("more_body"))
                if seen > self.limit:
                    if more:  # read (and drop) a bounded rest, so that the client reads the 413
                        await self._drain(receive, self.limit)
                    raise _TooLargeError(self.limit - _OVERHEAD)
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLargeError:
            if not started:
                await self._refuse(send)

    @staticmethod
    async def _drain(receive: Any, budget: int) -> None:
        drained = 0
        while drained < budget:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"detail": f"request body over the limit of {self.limit - _OVERHEAD} bytes"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """ASGI middleware: the security headers on every response; no caching of private pages."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Add the headers to the response start (pure ASGI: no task group, no buffering)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = scope["path"].startswith(("/api/", "/submissions", "/team", "/signin"))

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {k.lower() for k, _ in headers}
                extra = dict(SECURITY_HEADERS)
                if private:
                    extra["Cache-Control"] = "no-store"
                for key, value in extra.items():
                    if key.lower().encode() not in present:
                        headers.append((key.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _TooLargeError(StarletteHTTPException):
    """Raised inside the app's receive() when the body passes the limit (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")


def create_app(state: ServerState) -> Any:
    """Build the FastAPI app for a prepared server state."""
    from cellbench.server.pages import Pages

    app = FastAPI(title="cellbench challenge server", docs_url=None, redoc_url=None)
    pages = Pages(state)
    maker = sessions(state.engine)
    # hot read paths: token lookups (10 s), leaderboards (1 s), views of finished submissions
    tokens = TTLCache(10.0)
    boards = TTLCache(1.0)
    finished = TTLCache(60.0)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        if request.url.path.startswith("/api/") or request.url.path.startswith("/receipts/"):
            return JSONResponse(
                {"detail": exc.detail}, status_code=exc.status_code, headers=headers
            )
        detail = exc.detail
        if isinstance(detail, dict) and "problems" in detail:
            detail = "; ".join(detail["problems"])
        cookie = request.cookies.get(COOKIE, "")
        html = pages.error(exc.status_code, str(detail), _page_team(request), cookie)
        return HTMLResponse(html, status_code=exc.status_code, headers=headers)

    # ------------------------------------------------------------------ helpers
    def challenge_or_404(cid: str) -> PreparedChallenge:
        challenge = state.challenges.get(cid)
        if challenge is None:
            raise HTTPException(404, f"no challenge {cid!r}")
        return challenge

    def api_team(request: Request) -> Team:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        team = None
        if scheme.lower() == "bearer":
            token = token.strip()
            team = tokens.get(token)
            if team is None:
                team = accounts.team_for_token(state.engine, token)
                if team is not None:
                    tokens.put(token, team)
        if team is None:
            raise HTTPException(
                401, "missing or invalid API token", headers={"WWW-Authenticate": "Bearer"}
            )
        return team

    def _cached_team(request: Request) -> Team | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return tokens.get(token.strip()) if scheme.lower() == "bearer" else None

    def _page_team(request: Request) -> Team | None:
        return accounts.team_for_session(
            state.engine, state.session_secret, request.cookies.get(COOKIE)
        )

    def own_submission(sid: str, team: Team) -> Submission:
        with maker() as session:
            sub = session.get(Submission, sid) if len(sid) <= 32 else None
        if sub is None or (sub.team_id != team.id and not team.organiser):
            raise HTTPException(404, f"no submission {sid!r}")
        return sub

    def board_of(challenge: PreparedChallenge) -> dict[str, Any]:
        board = boards.get(challenge.id)
        if board is None:
            with maker() as session:
                board = leaderboard(session, challenge)
            boards.put(challenge.id, board)
        return board

    def view_of(sub: Submission) -> dict[str, Any]:
        with maker() as session:
            team = session.get(Team, sub.team_id)
            assert team is not None
            return submission_view(session, sub, state.challenges.get(sub.challenge_id), team)

    def create_submission(
        team: Team, challenge: PreparedChallenge, manifest_text: str, kind: str, upload: Any
    ) -> dict[str, Any]:
        """Validate and store an upload, queue it; raises HTTPException with every problem."""
        from cellbench.challenge.config import strict_yaml
        from cellbench.errors import ValidationError
        from cellbench.server.storage import safe_filename
        from cellbench.submissions.manifest import manifest_problems

        config = challenge.config
        now = utcnow()
        phase = config.phase_at(now)
        if phase is None:
            raise HTTPException(
                403, f"challenge {config.id} closed at {iso(config.final_deadline)}"
            )
        _, reset = day_window(now)
        with maker() as session:
            used = submissions_today(session, team.id, config.id, now)
        cap = config.limits.submissions_per_day
        if used >= cap:
            raise HTTPException(
                429,
                f"daily limit of {cap} submissions reached; resets at {iso(reset)}",
                headers={"Retry-After": str(max(1, int((reset - now).total_seconds())))},
            )
        problems: list[str] = []
        try:
            data = strict_yaml(manifest_text or "", "manifest") if manifest_text else {}
        except ValidationError as err:
            raise HTTPException(422, {"problems": err.problems}) from None
        if not isinstance(data, dict):
            raise HTTPException(422, {"problems": ["manifest must be a YAML mapping"]})
        filename = safe_filename(getattr(upload, "filename", "") or "upload")
        kind = kind or str(data.get("kind") or "predictions")
        for key, want in (
            ("task", config.task),
            ("dataset", config.dataset),
            ("split", config.hidden_split),
        ):
            if key in data and str(data[key]) != want:
                problems.append(f"{key}: this challenge is {want}, the manifest says {data[key]}")
        data.update(
            task=config.task,
            dataset=config.dataset,
            split=config.hidden_split,
            kind=kind,
            submission=filename,
        )
        if kind not in config.accepts:
            problems.append(f"kind: {kind!r} is not accepted here ({', '.join(config.accepts)})")
        issues, fields = manifest_problems(data)
        problems += issues
        if upload is None:
            problems.append("file: no file uploaded")
        if problems:
            raise HTTPException(422, {"problems": problems})
        limit = config.limits.max_upload_bytes
        try:
            digest, size = state.blobs.put(upload.file, limit)
        except ValidationError:
            raise HTTPException(413, f"upload over the limit of {limit} bytes") from None
        blob = state.blobs.path(digest)
        if size == 0:
            raise HTTPException(422, {"problems": ["file: the upload is empty"]})
        if archive_kind(blob) is not None and kind != "torchscript":
            bad = archive_problems(blob, ArchiveLimits(max_total_bytes=max(4 * limit, 64 << 20)))
            if bad:
                raise HTTPException(422, {"problems": [f"upload: {p}" for p in bad]})
        sub = Submission(
            id=secrets.token_hex(8),
            challenge_id=config.id,
            team_id=team.id,
            phase=phase.name,
            kind=kind,
            name=fields["name"],
            manifest_json=json.dumps(data, default=str),
            upload_sha256=digest,
            upload_name=filename,
            upload_bytes=size,
            state="queued",
            created_at=now,
        )
        with write_session(state.engine) as session:
            query = select(Team).where(Team.id == team.id)
            if is_postgres(state.engine):
                query = query.with_for_update()  # one upload per team at a time passes the cap
            session.scalars(query).first()
            if submissions_today(session, team.id, config.id, now) >= cap:
                raise HTTPException(
                    429,
                    f"daily limit of {cap} submissions reached; resets at {iso(reset)}",
                    headers={"Retry-After": str(max(1, int((reset - now).total_seconds())))},
                )
            queue.enqueue(session, sub)
        return {"id": sub.id, "state": "queued", "status_url": f"/api/submissions/{sub.id}"}

    # ------------------------------------------------------------------ JSON API
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/challenges")
    def api_challenges() -> dict[str, Any]:
        now = utcnow()
        return {
            "challenges": [
                c.public_info(revealed=c.config.closed(now)) for c in state.challenges.values()
            ]
        }

    @app.get("/api/challenges/{cid}")
    def api_challenge(cid: str) -> dict[str, Any]:
        c = challenge_or_404(cid)
        return c.public_info(revealed=c.config.closed(utcnow()))

    @app.get("/api/challenges/{cid}/leaderboard")
    async def api_leaderboard(cid: str) -> Response:
        challenge = challenge_or_404(cid)
        body = boards.get(("json", cid))
        if body is None:  # at most about once a second per challenge
            board = await run_in_threadpool(board_of, challenge)
            body = json.dumps(board).encode()
            boards.put(("json", cid), body)
        return Response(body, media_type="application/json")

    @app.get("/api/challenges/{cid}/public-store")
    def api_public_store(cid: str) -> Any:
        c = challenge_or_404(cid)
        name = f"{c.store.id}@{c.store.version}.public.tar"
        return FileResponse(
            c.public_archive,
            media_type="application/x-tar",
            filename=name,
            headers={"X-Content-SHA256": c.public_archive_sha256},
        )

    @app.post("/api/challenges/{cid}/submissions", status_code=202)
    async def api_submit(cid: str, request: Request) -> Any:
        challenge = challenge_or_404(cid)
        team = await run_in_threadpool(api_team, request)
        form = await request.form(max_files=1, max_fields=10)
        try:
            upload = form.get("file")
            manifest_text = str(form.get("manifest") or "")
            kind = str(form.get("kind") or "")
            upload = upload if hasattr(upload, "file") else None
            return await run_in_threadpool(
                create_submission, team, challenge, manifest_text, kind, upload
            )
        finally:
            await form.close()

    @app.get("/api/submissions/{sid}")
    async def api_submission(sid: str, request: Request) -> Response:
        team = _cached_team(request) or await run_in_threadpool(api_team, request)
        cached = finished.get(sid)
        if cached is not None and (cached[0] == team.id or team.organiser):
            return Response(cached[1], media_type="application/json")
        return await run_in_threadpool(_submission_json, sid, team)

    def _submission_json(sid: str, team: Team) -> Response:
        sub = own_submission(sid, team)
        body = json.dumps(view_of(sub)).encode()
        challenge = state.challenges.get(sub.challenge_id)
        if sub.state in queue.FINAL and challenge and not challenge.config.closed(utcnow()):
            finished.put(sid, (sub.team_id, body))  # final and not about to reveal more
        return Response(body, media_type="application/json")

    @app.get("/api/team")
    def api_team_info(request: Request) -> dict[str, Any]:
        team = api_team(request)
        return pages.team_data(team)

    @app.get("/api/status")
    def api_status(request: Request) -> dict[str, Any]:
        team = api_team(request)
        if not team.organiser:
            raise HTTPException(403, "the organiser token is needed")
        from cellbench.server.status import server_status

        return server_status(state.engine)

    @app.get("/api/keys")
    def api_keys() -> dict[str, Any]:
        from cellbench.challenge.receipts import public_keys

        return {"keys": public_keys(state.storage / "keys")}

    @app.get("/receipts/{sid}.json")
    def receipt(sid: str) -> Any:
        from cellbench.server.status import receipt_for

        doc = receipt_for(state, sid)
        if doc is None:
            raise HTTPException(404, f"no receipt for {sid!r}")
        return JSONResponse(doc)

    # ------------------------------------------------------------------ HTML
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> str:
        return pages.index(_page_team(request), request.cookies.get(COOKIE, ""))

    @app.get("/challenges/{cid}", response_class=HTMLResponse)
    def challenge_page(cid: str, request: Request) -> str:
        cookie = request.cookies.get(COOKIE, "")
        return pages.challenge(challenge_or_404(cid), _page_team(request), cookie)

    @app.get("/challenges/{cid}/leaderboard", response_class=HTMLResponse)
    def leaderboard_page(cid: str, request: Request) -> str:
        c = challenge_or_404(cid)
        board = board_of(c)
        return pages.leaderboard(c, board, _page_team(request), request.cookies.get(COOKIE, ""))

    def signed_in(request: Request) -> Team:
        team = _page_team(request)
        if team is None:
            raise HTTPException(401, "sign in with your team's token first")
        return team

    @app.get("/challenges/{cid}/submit", response_class=HTMLResponse)
    def submit_form(cid: str, request: Request) -> Any:
        c = challenge_or_404(cid)
        team = _page_team(request)
        if team is None:
            return RedirectResponse(f"/signin?next=/challenges/{cid}/submit", status_code=303)
        return pages.submit_form(c, team, request.cookies.get(COOKIE, ""))

    @app.post("/challenges/{cid}/submit", response_class=HTMLResponse)
    async def submit_post(cid: str, request: Request) -> Any:
        c = challenge_or_404(cid)
        team = await run_in_threadpool(signed_in, request)
        form = await request.form(max_files=1, max_fields=30)
        try:
            cookie = request.cookies.get(COOKIE, "")
            if not accounts.csrf_ok(state.session_secret, cookie, str(form.get("csrf") or "")):
                raise HTTPException(403, "the form expired; reload the page and try again")
            fields = {k: str(v) for k, v in form.items() if isinstance(v, str)}
            manifest = pages.manifest_from_form(fields)
            upload = form.get("file")
            upload = upload if hasattr(upload, "file") and getattr(upload, "filename", "") else None
            try:
                created = await run_in_threadpool(
                    create_submission, team, c, manifest, fields.get("kind", ""), upload
                )
            except HTTPException as exc:
                if exc.status_code not in (413, 422, 429):
                    raise
                detail = exc.detail
                problems = detail["problems"] if isinstance(detail, dict) else [str(detail)]
                html = pages.submit_form(c, team, cookie, problems=problems, values=fields)
                return HTMLResponse(html, status_code=exc.status_code)
        finally:
            await form.close()
        return RedirectResponse(f"/submissions/{created['id']}", status_code=303)

    @app.get("/submissions/{sid}", response_class=HTMLResponse)
    def submission_page(sid: str, request: Request) -> Any:
        team = _page_team(request)
        if team is None:
            return RedirectResponse(f"/signin?next=/submissions/{sid}", status_code=303)
        view = view_of(own_submission(sid, team))
        return pages.submission(view, team, request.cookies.get(COOKIE, ""))

    @app.get("/team", response_class=HTMLResponse)
    def team_page(request: Request) -> Any:
        team = _page_team(request)
        if team is None:
            return RedirectResponse("/signin?next=/team", status_code=303)
        return pages.team(team, request.cookies.get(COOKIE, ""))

    @app.get("/signin", response_class=HTMLResponse)
    def signin_form(request: Request, next: str = "/team") -> str:
        return pages.signin(_safe_next(next))

    @app.post("/signin", response_class=HTMLResponse)
    async def signin(request: Request) -> Any:
        form = await request.form(max_files=0, max_fields=5)
        token = str(form.get("token") or "").strip()
        target = _safe_next(str(form.get("next") or "/team"))
        team = await run_in_threadpool(accounts.team_for_token, state.engine, token)
        if team is None:
            return HTMLResponse(
                pages.signin(target, problem="that token is not valid"), status_code=401
            )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            accounts.make_session(state.session_secret, team),
            max_age=accounts.SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=state.secure_cookies,
            path="/",
        )
        return response

    @app.post("/signout")
    async def signout(request: Request) -> Any:
        form = await request.form(max_files=0, max_fields=5)
        cookie = request.cookies.get(COOKIE, "")
        if not accounts.csrf_ok(state.session_secret, cookie, str(form.get("csrf") or "")):
            raise HTTPException(403, "the form expired; reload the page and try again")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/static/index.html")
    def static_home() -> Any:
        return RedirectResponse("/", status_code=303)

    @app.get("/static/assets/{name}")
    def static(name: str) -> Any:
        path = pages.static_file(name)
        if path is None:
            raise HTTPException(404, "not found")
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    return SecurityHeaders(BodyLimit(app, state.max_body))


def _safe_next(target: str) -> str:
    """Only same-site paths (no scheme, host or protocol-relative ``//``) after sign-in."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/team"
    return target[:200]
