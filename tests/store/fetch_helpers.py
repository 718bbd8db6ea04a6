"""Helpers for the fetch tests: a fault-scripted HTTP server, a PyPI index, wheels, sdists."""

from __future__ import annotations

import base64
import hashlib
import io
import socket
import struct
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    """What the server answers for one path, with scripted faults.

    Attributes:
        data: The full body.
        content_type: ``Content-Type`` header.
        statuses: Status codes answered (with an empty error body) to the first requests, in
            order; once used up the route serves ``data``.
        ranges: Honour ``Range`` requests with 206 (else answer 200 with the full body).
        drop_first: The first N data responses announce the full ``Content-Length`` but send
            only half of the body, then the connection is closed (``drop="eof"``) or reset
            (``drop="reset"``).
        stall_first: The first N data responses wait ``stall`` seconds before answering.
        chunk: Bytes per write; ``chunk_delay`` seconds are slept between writes.
    """

    data: bytes
    content_type: str = "application/octet-stream"
    statuses: list[int] = field(default_factory=list)
    ranges: bool = True
    drop_first: int = 0
    drop: str = "eof"
    stall_first: int = 0
    stall: float = 0.0
    chunk: int = 64 * 1024
    chunk_delay: float = 0.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    data_hits: int = 0


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    path: str
    range_start: int | None
    status: int
    auth: str | None = None


class HTTPFileServer:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) serving :class:`Route` objects."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # clients that we kill or that time out break pipes on purpose

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def add(self, path: str, data: bytes, **kwargs: object) -> Route:
        route = Route(data=data, **kwargs)  # type: ignore[arg-type]
        self.routes[path] = route
        return route

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.requests if path is None or s.path == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, path: str, range_start: int | None, status: int) -> None:
        auth = self._local.handler.headers.get("Authorization")
        with self._lock:
            self.requests.append(Seen(path, range_start, status, auth))

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        self._local.handler = h
        path = h.path.split("?", 1)[0]
        header = h.headers.get("Range")
        start = int(header.split("=", 1)[1].split("-", 1)[0]) if header else None
        route = self.routes.get(path)
        if route is None:
            self._record(path, start, 404)
            h.send_error(404)
            return
        with self._lock:
            hit = route.hits
            route.hits += 1
        if hit < len(route.statuses):
            self._record(path, start, route.statuses[hit])
            h.send_response(route.statuses[hit])
            h.send_header("Content-Length", "0")
            for key, value in route.extra_headers.items():
                h.send_header(key, value)
            h.end_headers()
            return
        with self._lock:
            data_hit = route.data_hits
            route.data_hits += 1
        size = len(route.data)
        if start is not None and route.ranges:
            if start >= size:
                self._record(path, start, 416)
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status, body = 206, route.data[start:]
        else:
            status, body = 200, route.data
        self._record(path, start, status)
        if data_hit < route.stall_first:  # recorded first: the client may give up meanwhile
            time.sleep(route.stall)
        h.send_response(status)
        h.send_header("Content-Type", route.content_type)
        h.send_header("Content-Length", str(len(body)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        if data_hit < route.drop_first:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            if route.drop == "reset":
                linger = struct.pack("ii", 1, 0)  # close with RST instead of FIN
                h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                h.connection.close()
            h.close_connection = True
            return
        for i in range(0, len(body), route.chunk):
            h.wfile.write(body[i : i + route.chunk])
            h.wfile.flush()
            if route.chunk_delay:
                time.sleep(route.chunk_delay)


def payload(n: int = 200_000, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (not compressible, no repeating pattern)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:n])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- PyPI ---------------------------------------------------------------------------------------


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a minimal valid pure-Python wheel holding ``files`` and return its path."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    contents[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: cellbench-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    record = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()]
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in contents.items():
            zf.writestr(member, data)
    return path


_BACKEND = '''\
"""An in-tree PEP 517 backend with no build requirements (enough for `pip download`)."""
import os

NAME, VERSION = {name!r}, {version!r}


def get_requires_for_build_wheel(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    dist_info = f"{{NAME}}-{{VERSION}}.dist-info"
    os.makedirs(os.path.join(metadata_directory, dist_info))
    with open(os.path.join(metadata_directory, dist_info, "METADATA"), "w") as fh:
        fh.write(f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n")
    return dist_info


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("not needed by the tests")


def build_sdist(sdist_directory, config_settings=None):
    raise RuntimeError("not needed by the tests")
'''


def build_sdist(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """Write a source distribution (tar.gz under ``NAME-VERSION/``) with ``files``."""
    top = f"{name}-{version}"
    contents = dict(files)
    contents["PKG-INFO"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    contents["pyproject.toml"] = (
        b'[build-system]\nrequires = []\nbuild-backend = "tinybackend"\nbackend-path = ["."]\n'
    )
    contents["tinybackend.py"] = _BACKEND.format(name=name, version=version).encode()
    path = directory / f"{top}.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for member, data in contents.items():
            info = tarfile.TarInfo(f"{top}/{member}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


@dataclass
class PypiIndex:
    """A PEP 503 simple index served by :class:`HTTPFileServer`."""

    server: HTTPFileServer
    projects: dict[str, list[Path]] = field(default_factory=dict)

    def publish(self, project: str, dist: Path) -> None:
        data = dist.read_bytes()
        self.server.add(f"/files/{dist.name}", data)
        self.projects.setdefault(project, []).append(dist)
        links = "\n".join(
            f'<a href="/files/{d.name}#sha256={sha(d.read_bytes())}">{d.name}</a><br/>'
            for d in self.projects[project]
        )
        page = f"<!DOCTYPE html><html><body>\n{links}\n</body></html>\n"
        self.server.add(f"/simple/{project}/", page.encode(), content_type="text/html")
        index = "".join(f'<a href="/simple/{p}/">{p}</a>' for p in self.projects)
        self.server.add("/simple/", index.encode(), content_type="text/html")


# -- S3 (moto) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Endpoint:
    """A moto S3 server on loopback and a boto3 client for it."""

    url: str
    client: object
    key: str = "testing"
    secret: str = "testing"

    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.url, "key": self.key, "secret": self.secret}
