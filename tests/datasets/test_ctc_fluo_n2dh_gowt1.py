"""Recipe ctc-fluo-n2dh-gowt1: a fake Fluo-N2DH-GOWT1.zip (real layout) from 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datasets.ctc_recipe_check import pull_fake_ctc


def test_recipe_builds_the_sequences_from_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull_fake_ctc("ctc-fluo-n2dh-gowt1", "Fluo-N2DH-GOWT1", False, tmp_path, monkeypatch)
