"""One download attempt from an fsspec URL (s3, gs, hf, memory, file, ...) into a ``.part``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellbench.store.fetch._files import (
    BLOCK,
    MirrorError,
    MismatchError,
    RetryableError,
    hash_prefix,
    progress_bar,
    sync_file,
)


def resolve_storage_options(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Storage options for ``url``: the card's, completed from the environment.

    For ``s3://`` without an endpoint in the card (``endpoint_url`` or
    ``client_kwargs.endpoint_url``), ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` is used.
    fsspec's own configuration (``FSSPEC_<PROTOCOL>_<KWARG>`` variables, config files) and the
    backends' credential chains (``AWS_*``, ``GOOGLE_*``, ``HF_TOKEN``) apply as usual.

    Args:
        url: The fsspec URL.
        options: ``storage_options`` from the card.

    Returns:
        A new dict of keyword arguments for ``fsspec.open``.
    """
    resolved = dict(options)
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("s3", "s3a") and "::" not in url:  # chained URLs take per-protocol options
        client_kwargs = resolved.get("client_kwargs") or {}
        if "endpoint_url" not in resolved and "endpoint_url" not in client_kwargs:
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint:
                resolved["endpoint_url"] = endpoint
    return resolved


def download_fsspec(
    url: str,
    part: Path,
    *,
    storage_options: Mapping[str, Any],
    size: int | None,
    progress: bool,
    desc: str,
) -> str:
    """Stream ``url`` into ``part`` in 1 MiB blocks, resuming by seeking when possible.

    Args:
        url: An fsspec URL.
        part: The partial file; appended to when the source is seekable.
        storage_options: Keyword arguments for the filesystem (already resolved).
        size: Expected total size in bytes, if known.
        progress: Whether a progress bar may be shown.
        desc: Progress bar label.

    Returns:
        The sha256 of the complete ``part`` file.

    Raises:
        MirrorError: Missing object, denied access, missing fsspec backend package.
        MismatchError: The object's size differs from ``size``.
        RetryableError: Any other error while opening or reading (retried by the caller).
    """
    import fsspec

    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        offset = 0
    try:
        opened = fsspec.open(url, "rb", **storage_options)
        with opened as src:
            total = getattr(src, "size", None)
            total = total if isinstance(total, int) else None
            if size is not None and total is not None and total != size:
                raise MismatchError(f"size mismatch: object has {total} bytes, card says {size}")
            if offset and total is not None and offset > total:
                offset = 0
            if offset and src.seekable():
                src.seek(offset)
                digest, _ = hash_prefix(part)
                mode = "ab"
            else:
                offset, mode, digest = 0, "wb", hashlib.sha256()
            received = 0
            with (
                open(part, mode) as out,
                progress_bar(total or size, offset, desc, progress) as bar,
            ):
                try:
                    while chunk := src.read(BLOCK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))  # type: ignore[attr-defined]
                        if size is not None and offset + received > size:
                            raise MismatchError(f"object is larger than the expected {size} bytes")
                finally:
                    sync_file(out)
            if total is not None and offset + received < total:
                raise RetryableError(f"truncated read: {offset + received} of {total} bytes")
            return digest.hexdigest()
    except (MirrorError, RetryableError):
        raise
    except FileNotFoundError as exc:
        raise MirrorError(f"not found: {exc}") from None
    except PermissionError as exc:
        raise MirrorError(f"access denied: {exc}") from None
    except ImportError as exc:
        raise MirrorError(f"fsspec backend not installed: {exc}") from None
    except ValueError as exc:
        raise MirrorError(f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # network and backend errors have no common base class
        raise RetryableError(f"{type(exc).__name__}: {exc}") from None
