"""Recipe ctc-phc-c2dl-psc: a fake PhC-C2DL-PSC.zip in the real layout, pulled from 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.datasets.ctc_recipe_check import pull_fake_ctc


def test_recipe_builds_the_sequences_from_the_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pull_fake_ctc("ctc-phc-c2dl-psc", "PhC-C2DL-PSC", False, tmp_path, monkeypatch)
