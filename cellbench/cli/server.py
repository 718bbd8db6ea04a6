"""Challenge mode: ``serve``, ``worker``, ``server add-team|status|rotate-key``, ``receipt``.

Server dependencies (FastAPI, uvicorn, SQLAlchemy, Alembic, httpx) are imported inside the
commands, so ``cellbench`` starts as fast as before and works without the ``server`` extra.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cellbench.errors import CellbenchError

_DB_HELP = (
    "Database URL: sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in "
    "$CELLBENCH_HOME/server; $CELLBENCH_DB also works)."
)
_STORAGE_HELP = (
    "Storage folder for uploads, keys and derived stores (default $CELLBENCH_HOME/server)."
)


def _needs_server_extra() -> None:
    try:
        import alembic  # noqa: F401
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise CellbenchError(
            f"challenge mode needs the server extra ({err.name} is missing): "
            "pip install 'cellbench[server]'"
        ) from None


def _db(db: str | None) -> str | None:
    from cellbench.settings import server_db

    return server_db(db)


@click.command()
@click.argument("challenges", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--storage", type=click.Path(path_type=Path), default=None, help=_STORAGE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port (0: any free port).")
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(0), help="Worker processes."
)
@click.option(
    "--allow-unconfined-models",
    is_flag=True,
    help="Run models even where Landlock cannot confine their filesystem access (then a "
    "model can read what the server's user can read, hidden labels included).",
)
@click.option("--lease-seconds", default=30.0, show_default=True, help="Job lease length.")
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write {'url': ...} here once the server accepts connections.",
)
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (behind HTTPS).")
def serve(
    challenges: tuple[Path, ...],
    db: str | None,
    storage: Path | None,
    host: str,
    port: int,
    workers: int,
    allow_unconfined_models: bool,
    lease_seconds: float,
    ready_file: Path | None,
    secure_cookies: bool,
) -> None:
    """Serve the challenges declared in CHALLENGES (YAML) with a pool of scoring workers.

    The test labels stay on this machine: participants download the public store, upload
    predictions or models, and get scores and signed receipts.
    """
    _needs_server_extra()
    from cellbench.server.serve import serve as run

    options = ["--lease-seconds", str(lease_seconds)]
    if allow_unconfined_models:
        options.append("--allow-unconfined-models")
    run(
        list(challenges),
        db=_db(db),
        storage=storage,
        host=host,
        port=port,
        workers=workers,
        worker_options=options,
        ready_file=ready_file,
        secure_cookies=secure_cookies,
    )


@click.command()
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--storage", type=click.Path(path_type=Path), default=None, help=_STORAGE_HELP)
@click.option("--lease-seconds", default=30.0, show_default=True, help="Job lease length.")
@click.option("--allow-unconfined-models", is_flag=True, help="See `cellbench serve --help`.")
@click.option("--max-jobs", type=click.IntRange(1), default=None, help="Stop after N jobs.")
@click.option("--parent-pid", type=int, default=None, hidden=True)
def worker(
    db: str | None,
    storage: Path | None,
    lease_seconds: float,
    allow_unconfined_models: bool,
    max_jobs: int | None,
    parent_pid: int | None,
) -> None:
    """Score queued submissions (run more of these, on this or other machines)."""
    _needs_server_extra()
    from cellbench.server.serve import worker_main

    worker_main(
        _db(db),
        storage,
        lease_seconds=lease_seconds,
        require_landlock=not allow_unconfined_models,
        max_jobs=max_jobs,
        parent_pid=parent_pid,
    )


@click.group("server")
def server_group() -> None:
    """Manage a challenge server: teams, status, signing keys."""


@server_group.command("add-team")
@click.argument("name")
@click.option("--organiser", is_flag=True, help="Create the organiser account instead.")
@click.option("--db", default=None, help=_DB_HELP)
def add_team(name: str, organiser: bool, db: str | None) -> None:
    """Create team NAME and print its API token (shown once; only its digest is stored)."""
    _needs_server_extra()
    from cellbench.server.accounts import add_team as create
    from cellbench.server.db import make_engine, upgrade

    engine = make_engine(_db(db))
    upgrade(engine)
    token = create(engine, name, organiser=organiser)
    role = "organiser" if organiser else "team"
    click.echo(f"{role} {name!r} created. Its token (shown once):", err=True)
    click.echo(token)


@server_group.command("status")
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--server", "url", default=None, help="Ask a running server instead (organiser).")
@click.option("--token", default=None, help="Organiser token (default $CELLBENCH_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: str | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Queue by state, the oldest queued job, workers and their heartbeats."""
    if url:
        from cellbench.server.client import Client

        client = Client(url, token)
        try:
            data = client.get("/api/status")
        finally:
            client.close()
    else:
        _needs_server_extra()
        from cellbench.server.db import check_schema, make_engine
        from cellbench.server.status import server_status

        engine = make_engine(_db(db))
        check_schema(engine)
        data = server_status(engine)
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    click.echo(f"challenges: {', '.join(data['challenges']) or 'none'}; teams: {data['teams']}")
    states = ", ".join(f"{k} {v}" for k, v in data["submissions"].items())
    click.echo(f"submissions: {states}")
    if data["oldest_queued_s"] is not None:
        click.echo(f"oldest queued job: {data['oldest_queued_s']:.0f} s")
    click.echo(f"workers: {len(data['workers'])}")
    for w in data["workers"]:
        busy = f"on {w['current_submission']}" if w["current_submission"] else "idle"
        click.echo(f"  {w['id']}  heartbeat {w['heartbeat_age_s']} s ago, {busy}")


@server_group.command("rotate-key")
@click.option("--storage", type=click.Path(path_type=Path), default=None, help=_STORAGE_HELP)
def rotate_key(storage: Path | None) -> None:
    """Retire the receipt signing key and create a new one (old receipts still verify)."""
    from cellbench.challenge.receipts import rotate_key as rotate
    from cellbench.server.serve import default_storage

    old, new = rotate(Path(storage or default_storage()) / "keys")
    click.echo(f"retired key {old}; signing with {new}. Restart the server and its workers.")


@click.group("receipt")
def receipt_group() -> None:
    """Signed receipts of a challenge server."""


@receipt_group.command("verify")
@click.argument("receipt", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The server's public key (PEM; GET /api/keys or server.pub).",
)
def verify(receipt: Path, key: Path) -> None:
    """Check RECEIPT's Ed25519 signature offline and print what it certifies."""
    from cellbench.challenge.receipts import ReceiptError, verify_receipt

    try:
        document = json.loads(receipt.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReceiptError(f"{receipt}: not JSON ({err})") from None
    try:
        body = verify_receipt(document, key.read_bytes())
    except ReceiptError as err:
        raise ReceiptError(f"{receipt}: {err}") from None
    head = body.get("public", {}).get("headline", {})
    click.echo(f"{receipt}: signature OK (key {document['signature']['key_id']})")
    click.echo(
        f"  {body.get('challenge')} / {body.get('team')} / {body.get('entry')}: "
        f"{head.get('name')} = {head.get('value')} on the public part"
    )
    if body.get("private"):
        private = body["private"]["headline"]
        click.echo(f"  private part: {private.get('name')} = {private.get('value')}")
    click.echo(
        f"  dataset {body.get('dataset')} digest {body.get('dataset_digest')}, label commitment "
        f"{body.get('label_commitment')}, submission sha256 {body.get('submission_sha256')}, "
        f"scorer cellbench {body.get('scorer_version')}, issued {body.get('issued_at')}"
    )
    sys.stdout.flush()
