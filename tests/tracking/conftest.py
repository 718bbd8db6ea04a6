"""Fixtures shared by the tracking tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

#: Wheels run in a subprocess (traccuracy 0.4.1 pins click<8.2, which the project's
#: environment cannot take): pinned by sha256, unpacked on PYTHONPATH ahead of traccuracy 0.3.
TRACCURACY_041 = {
    "traccuracy==0.4.1": (
        "traccuracy-0.4.1-py3-none-any.whl",
        "b4eac3752264edbf231853a3c2202adbecbbf7df7e1e7063b48a66f08b1c5d0f",
    ),
    "skan==0.13.1": (
        "skan-0.13.1-py3-none-any.whl",
        "174c8ae26d098638b3869e812f809614c63b9e318861f7d5a36257f118d5aaca",
    ),
}


@pytest.fixture(scope="session")
def traccuracy_041(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding traccuracy 0.4.1 (and skan, which it imports) unpacked from PyPI."""
    folder = tmp_path_factory.mktemp("traccuracy041")
    site = folder / "site"
    for spec, (wheel, sha) in TRACCURACY_041.items():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", spec, "-d", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not (folder / wheel).is_file():
            pytest.skip(f"PyPI unreachable for {spec}: {done.stderr.strip()[-200:]}")
        assert hashlib.sha256((folder / wheel).read_bytes()).hexdigest() == sha, wheel
        with zipfile.ZipFile(folder / wheel) as zf:
            zf.extractall(site)
    return site
