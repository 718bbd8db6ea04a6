"""Pull a dataset recipe from fake files served on 127.0.0.1 (torchgeo-style recipe tests).

The dataset's folder is copied into a temporary catalog, every real source URL in its card is
replaced by the local server's URL for the same path, and the recipe is pulled from there.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from cellbench.registry import pull
from cellbench.store.zarr_store import DatasetStore
from tests.store.fetch_helpers import HTTPFileServer

REPO = Path(__file__).resolve().parents[2]


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive holding ``files`` (``{member path: content}``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def card_of(ident: str) -> dict:
    """The dataset's card as committed."""
    return yaml.safe_load((REPO / "datasets" / ident / "card.yaml").read_text())


def pull_served(
    ident: str,
    served: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **pull_options: object,
) -> DatasetStore:
    """Pull ``ident`` with each card URL answered from ``served`` (``{real URL: bytes}``).

    Every URL in ``served`` must be one the card names (so a test notices a changed URL).
    """
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = HTTPFileServer()
    try:
        catalog = tmp_path / "catalog"
        shutil.copytree(REPO / "datasets" / ident, catalog / ident)
        card_file = catalog / ident / "card.yaml"
        text = card_file.read_text()
        for url, data in served.items():
            assert url in text, f"{url} is not in the card of {ident}"
            path = urlsplit(url).path
            server.add(path, data)
            text = text.replace(url, server.url(path))
        card_file.write_text(text)
        monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
        monkeypatch.setenv("CELLBENCH_OFFLINE", "0")
        store = pull(ident, progress=False, **pull_options)  # type: ignore[arg-type]
    finally:
        server.close()
    assert store.verify() == []
    return store


def pull_manual(
    ident: str, files: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DatasetStore:
    """Pull ``ident`` whose sources are manual, with ``files`` put in the manual folder."""
    from cellbench.settings import manual_dir

    catalog = tmp_path / "catalog"
    shutil.copytree(REPO / "datasets" / ident, catalog / ident)
    monkeypatch.setenv("CELLBENCH_CATALOG", str(catalog))
    dest = manual_dir(ident)
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dest / name).write_bytes(data)
    store = pull(ident, progress=False)
    assert store.verify() == []
    return store
