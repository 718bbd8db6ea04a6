"""Without pylibCZIrw, allen-label-free-fibrillarin stops before downloading anything.

Runs whether or not pylibCZIrw is installed: the import is made to fail.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cellbench.errors import CellbenchError
from cellbench.formats.registry import get_format
from cellbench.registry import pull
from tests.datasets.recipe_check import REPO, card_of
from tests.store.fetch_helpers import HTTPFileServer

IDENT = "allen-label-free-fibrillarin"


def test_missing_reader_fails_before_any_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pylibCZIrw", None)  # import fails as if not installed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = HTTPFileServer()
    try:
        catalog = tmp_path / "catalog"
        shutil.copytree(REPO / "datasets" / IDENT, catalog / IDENT)
        card_file = catalog / IDENT / "card.yaml"
        text = card_file.read_text()
        for source in card_of(IDENT)["sources"].values():
            path = urlsplit(source["url"]).path
            server.add(path, b"never served")
            text = text.replace(source["url"], server.url(path))
        card_file.write_text(text)
        monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
        monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
        with pytest.raises(CellbenchError, match=r"pip install 'cellbench\[czi\]'"):
            pull(IDENT, progress=False)
        assert server.requests == []
    finally:
        server.close()


def test_missing_reader_is_one_line_from_the_validator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pylibCZIrw", None)
    (tmp_path / "x.czi").write_bytes(b"whatever")
    (tmp_path / "t.csv").write_text("path_czi,channel_signal,channel_target\nx.czi,6,3\n")
    with pytest.raises(CellbenchError) as err:
        get_format("fnet-czi").validate(tmp_path)
    assert str(err.value).startswith("reading Zeiss CZI files needs pylibCZIrw")


def test_info_prints_the_card_text_as_written() -> None:
    from click.testing import CliRunner

    from cellbench.cli import main

    res = CliRunner().invoke(main, ["datasets", "info", IDENT])
    assert res.exit_code == 0, res.output
    # square brackets in card text are not swallowed as console markup
    assert "pip install 'cellbench[czi]'" in res.output
    assert "LicenseRef-AllenInstitute-Terms-of-Use" in res.output
