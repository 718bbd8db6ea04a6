"""One resumable HTTP(S) download attempt into a ``.part`` file (stdlib ``urllib`` only)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import ssl
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from cellbench._version import __version__
from cellbench.store.fetch._files import (
    BLOCK,
    MirrorError,
    MismatchError,
    RetryableError,
    hash_prefix,
    progress_bar,
    sync_file,
)

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_RETRYABLE_STATUS = frozenset({408, 425, 429})
#: Longest ``Retry-After`` we honour, in seconds.
MAX_RETRY_AFTER = 60.0


def _content_range(headers: Message) -> tuple[int | None, int | None, int | None]:
    """Parse ``Content-Range`` into ``(start, end, total)``; missing parts are None."""
    match = _CONTENT_RANGE.match(headers.get("Content-Range", "") or "")
    if match is None:
        return None, None, None
    start, end, total = match.groups()
    as_int = [int(v) if v and v != "*" else None for v in (start, end, total)]
    return as_int[0], as_int[1], as_int[2]


def _content_length(headers: Message) -> int | None:
    value = headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Message | None) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), MAX_RETRY_AFTER) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing, fall back to our own backoff
        return None


def _request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    """Build the request for ``url``.

    ``user:password@`` in the URL becomes a Basic ``Authorization`` header that urllib does
    not forward to redirect targets.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return urllib.request.Request(url, headers=headers)
    userinfo, host = parts.netloc.rsplit("@", 1)
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    request = urllib.request.Request(bare, headers=headers)
    user, _, password = (unquote(p) for p in userinfo.partition(":"))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _truncate(part: Path) -> None:
    part.write_bytes(b"")


def download_http(
    url: str, part: Path, *, size: int | None, timeout: float, progress: bool, desc: str
) -> str:
    """Download ``url`` into ``part``, resuming from its current length with a Range request.

    Args:
        url: An ``http://`` or ``https://`` URL.
        part: The partial file; created if missing, appended to when the server answers 206.
        size: Expected total size in bytes, if known.
        timeout: Socket timeout in seconds (connect and each read).
        progress: Whether a progress bar may be shown.
        desc: Progress bar label.

    Returns:
        The sha256 of the complete ``part`` file (the caller compares it with the card).

    Raises:
        RetryableError: Reset, timeout, truncated body, 5xx/408/429, or a Range answer that
            requires restarting; bytes already written stay in ``part``.
        MismatchError: The server announces a size different from ``size``, or sends more.
        MirrorError: Any other HTTP error (404, 403, ...), bad TLS, unexpected status.
    """
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        _truncate(part)
        offset = 0
    if offset and size is not None and offset == size:
        return hash_prefix(part)[0].hexdigest()  # complete from an earlier run

    headers = {"User-Agent": f"cellbench/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = _request(url, headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                total = _content_range(exc.headers)[2]
                if total == offset:  # the .part already holds the whole file
                    return hash_prefix(part)[0].hexdigest()
                _truncate(part)
                raise RetryableError(
                    f"HTTP 416 for Range bytes={offset}- (server size {total}); restarting",
                    immediate=True,
                ) from None
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code in _RETRYABLE_STATUS or exc.code >= 500:
                raise RetryableError(reason, retry_after=_retry_after(exc.headers)) from None
            raise MirrorError(reason) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):
            raise MirrorError(f"TLS error: {exc.reason}") from None
        raise RetryableError(f"cannot connect: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise RetryableError(f"{type(exc).__name__}: {exc}") from None

    with response:
        status = response.status
        length = _content_length(response.headers)
        if status == 206 and offset:
            start, _end, total = _content_range(response.headers)
            if start != offset:
                _truncate(part)
                raise RetryableError(
                    f"server answered Range bytes={offset}- with bytes {start}-; restarting",
                    immediate=True,
                )
            digest, _ = hash_prefix(part)
            mode = "ab"
        elif status in (200, 206):  # 200: Range ignored (or none sent): restart from zero
            offset, mode = 0, "wb"
            total = length if status == 200 else _content_range(response.headers)[2]
            digest = hashlib.sha256()
        else:
            raise MirrorError(f"unexpected HTTP status {status}")
        if size is not None and total is not None and total != size:
            raise MismatchError(f"size mismatch: server has {total} bytes, card says {size}")

        received = 0
        with (
            open(part, mode) as out,
            progress_bar(total or size, offset, desc, progress) as bar,
        ):
            try:
                while chunk := response.read1(BLOCK):  # what has arrived, up to 1 MiB
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))  # type: ignore[attr-defined]
                    if size is not None and offset + received > size:
                        raise MismatchError(f"server sent more than the expected {size} bytes")
            except (OSError, http.client.HTTPException) as exc:
                sync_file(out)
                raise RetryableError(
                    f"{type(exc).__name__} after {offset + received} bytes: {exc}"
                ) from None
            sync_file(out)
        expected = length if length is not None else (None if total is None else total - offset)
        if expected is not None and received < expected:
            raise RetryableError(
                f"truncated body: received {received} of {expected} bytes (resuming)"
            )
        return digest.hexdigest()
