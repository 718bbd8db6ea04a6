"""Download a pinned distribution from a Python package index with ``pip download``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cellbench.store.fetch._files import MirrorError

_NOT_FOUND = ("No matching distribution found", "Could not find a version that satisfies")


def _reason(output: str) -> str:
    """Return pip's final error, preceded by its last network warning when it retried."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    retries = [line for line in lines if line.startswith("WARNING: Retrying")]
    reason = (errors or lines or ["pip failed without output"])[-1]
    return f"{retries[-1]} ... {reason}" if retries else reason


def pip_download(
    name: str, version: str, dest: Path, *, timeout: float, attempts: int
) -> tuple[Path, bool]:
    """Run ``python -m pip download --no-deps NAME==VERSION`` into ``dest``.

    A wheel is preferred (``--only-binary=:all:``); when the release has none, the command is
    repeated allowing a source distribution. pip's configuration applies unchanged
    (``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL``, ``PIP_CONFIG_FILE``, proxies, certificates),
    so a private or local index works the same way as PyPI. Transient network errors are
    retried by pip itself (``--retries attempts-1``, with urllib3's exponential backoff).

    Args:
        name: Project name.
        version: Exact version.
        dest: Empty directory to download into.
        timeout: pip's socket timeout in seconds.
        attempts: Attempts per network request.

    Returns:
        ``(path, is_sdist)`` of the downloaded file.

    Raises:
        MirrorError: The release does not exist on the index, or pip failed (the message is
            pip's own error line).
    """
    base = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
        "--disable-pip-version-check", "--progress-bar", "off",
        "--timeout", str(timeout), "--retries", str(max(attempts - 1, 0)),
        "--dest", str(dest),
    ]  # fmt: skip
    spec = f"{name}=={version}"
    result = subprocess.run(
        [*base, "--only-binary=:all:", spec], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 and any(marker in result.stderr for marker in _NOT_FOUND):
        result = subprocess.run([*base, spec], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MirrorError(f"pip download {spec}: {_reason(result.stderr + result.stdout)}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise MirrorError(f"pip download {spec} produced {len(files)} files, expected one")
    path = files[0]
    return path, not path.name.endswith(".whl")
