"""``cellbench serve``: prepare the challenges, upgrade the database, run the app and workers.

One process serves HTTP (uvicorn, one event loop; database work in its thread pool) and
supervises a pool of worker processes (``cellbench worker``), restarting any that dies; more
workers can join from other machines. Workers get the database URL through the environment
(never on a command line, where ``ps`` would show a password) and exit when the server does.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from cellbench import settings
from cellbench.challenge.config import load_challenge
from cellbench.challenge.prepare import PreparedChallenge, prepare_challenge
from cellbench.errors import CellbenchError
from cellbench.server.db import (
    Challenge,
    Submission,
    make_engine,
    normalise_url,
    redact,
    upgrade,
    utcnow,
    write_session,
)

log = logging.getLogger("cellbench.server")

#: Environment variable carrying the database URL to workers.
DB_ENV = settings.DB


def default_storage() -> Path:
    """``$CELLBENCH_HOME/server``."""
    from cellbench.store.cache import cellbench_home

    return cellbench_home() / "server"


def register_challenge(engine: Engine, challenge: PreparedChallenge) -> None:
    """Record (or update) a challenge in the database.

    Raises:
        CellbenchError: If submissions were already scored under another label commitment
            (the hidden labels, the scorer or its parameters changed).
    """
    config_json = json.dumps(challenge.config.to_dict(), sort_keys=True)
    with write_session(engine) as session:
        row = session.get(Challenge, challenge.id)
        if row is not None and row.commitment != challenge.commitment:
            n = session.scalar(
                select(func.count())
                .select_from(Submission)
                .where(Submission.challenge_id == challenge.id)
            )
            if n:
                raise CellbenchError(
                    f"challenge {challenge.id}: the label commitment changed "
                    f"({row.commitment[:12]}... -> {challenge.commitment[:12]}...) but {n} "
                    "submission(s) exist; the dataset, scorer or metric parameters differ from "
                    "when they were made. Use a new challenge id"
                )
        if row is None:
            row = Challenge(id=challenge.id)
            session.add(row)
        row.title = challenge.config.title
        row.config_json = config_json
        row.commitment = challenge.commitment
        row.dataset_digest = challenge.store.checksum
        row.updated_at = utcnow()


class WorkerPool:
    """Worker subprocesses, restarted when one dies, stopped with the server.

    Args:
        n: Number of workers.
        db_url: Database URL (passed in the environment).
        storage: Storage folder.
        options: Extra ``cellbench worker`` options.
    """

    def __init__(self, n: int, db_url: str, storage: Path, options: list[str]) -> None:
        self.n, self.db_url, self.storage, self.options = n, db_url, storage, options
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, DB_ENV: self.db_url}
        cmd = [
            sys.executable,
            "-m",
            "cellbench",
            "worker",
            "--storage",
            str(self.storage),
            "--parent-pid",
            str(os.getpid()),
            *self.options,
        ]
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        """Start the workers and their supervisor."""
        self.procs = [self._spawn() for _ in range(self.n)]
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stop.is_set():
                    log.warning(
                        "worker %d exited with %s; restarting it", proc.pid, proc.returncode
                    )
                    self.procs[i] = self._spawn()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every worker to stop (they finish or drop their current job), then kill."""
        self._stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def prepare_server(
    challenge_files: list[Path], db: str | None, storage: Path | None
) -> tuple[Engine, Path, dict[str, PreparedChallenge]]:
    """Upgrade the database, prepare and register every challenge.

    Raises:
        ValidationError: For any problem of a challenge file (all listed).
        CellbenchError: For a database that cannot be reached or upgraded.
    """
    from cellbench.challenge.receipts import load_or_create_key

    storage = Path(storage or default_storage())
    storage.mkdir(parents=True, exist_ok=True)
    os.chmod(storage, 0o700)
    engine = make_engine(db)
    try:
        upgrade(engine)
    except Exception as err:  # OperationalError and friends: one clear line
        raise CellbenchError(
            f"cannot open or upgrade the database {redact(str(engine.url))}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    load_or_create_key(storage / "keys")
    challenges: dict[str, PreparedChallenge] = {}
    for path in challenge_files:
        config = load_challenge(path)
        if config.id in challenges:
            raise CellbenchError(f"{path}: challenge id {config.id!r} is declared twice")
        prepared = prepare_challenge(config, storage / "challenges")
        register_challenge(engine, prepared)
        challenges[config.id] = prepared
    return engine, storage, challenges


def serve(
    challenge_files: list[Path],
    *,
    db: str | None = None,
    storage: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 2,
    worker_options: list[str] | None = None,
    ready_file: Path | None = None,
    secure_cookies: bool = False,
    log_level: str = "info",
) -> None:
    """Serve challenges until interrupted (SIGINT/SIGTERM).

    Args:
        challenge_files: Challenge YAML files.
        db: Database URL (default SQLite in ``$CELLBENCH_HOME/server``).
        storage: Storage folder (default ``$CELLBENCH_HOME/server``).
        host: Address to listen on.
        port: Port (0: any free port; the chosen one is printed and written to
            ``ready_file``).
        workers: Worker processes to run here.
        worker_options: Extra ``cellbench worker`` options for them.
        ready_file: Written (JSON with ``url``) once the server accepts connections.
        secure_cookies: Mark cookies ``Secure`` (serve behind HTTPS).
        log_level: uvicorn log level.
    """
    import uvicorn

    from cellbench.server.app import ServerState, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    db_url = normalise_url(db)
    engine, storage, challenges = prepare_server(challenge_files, db_url, storage)
    state = ServerState(engine, storage, challenges, secure_cookies=secure_cookies)
    app = create_app(state)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{bound}"
    pool = WorkerPool(workers, db_url, storage, list(worker_options or []))
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5, lifespan="off"
    )
    server = uvicorn.Server(config)

    class _Ready(threading.Thread):
        def run(self) -> None:
            while not server.started and not server.should_exit:
                threading.Event().wait(0.05)
            if server.started:
                print(f"cellbench: serving {', '.join(challenges)} on {url}", flush=True)
                if ready_file is not None:
                    tmp = ready_file.with_name(ready_file.name + ".tmp")
                    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
                    os.replace(tmp, ready_file)

    pool.start()
    _Ready(daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        pool.stop()
        sock.close()


def worker_main(
    db: str | None,
    storage: Path | None,
    *,
    lease_seconds: float,
    require_landlock: bool,
    max_jobs: int | None,
    parent_pid: int | None,
) -> int:
    """Body of ``cellbench worker``: check the schema, then process jobs until stopped."""
    from cellbench.server.db import check_schema
    from cellbench.server.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    engine = make_engine(settings.server_db(db))
    check_schema(engine)
    stop = threading.Event()
    if parent_pid is not None:

        def watch() -> None:
            while not stop.wait(1.0):
                if os.getppid() != parent_pid:
                    log.warning("the server (pid %d) is gone; stopping", parent_pid)
                    stop.set()

        threading.Thread(target=watch, daemon=True).start()
    return run_worker(
        engine,
        Path(storage or default_storage()),
        lease_seconds=lease_seconds,
        require_landlock=require_landlock,
        max_jobs=max_jobs,
        stop=stop,
    )
