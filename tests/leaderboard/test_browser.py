"""The published site in a real headless chromium (driven over the DevTools pipe)."""

import functools
import json
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cellbench.leaderboard import BoardKey, publish
from tests.leaderboard.cdp import Browser, find_chromium
from tests.leaderboard.site_fixture import HOSTILE, build_store

CHROMIUM = find_chromium()
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]
INST = BoardKey("toy", "1.0", "instance-segmentation", "test")
ROWS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.entry)"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    site = publish(
        build_store(tmp_path_factory.mktemp("lb")), tmp_path_factory.mktemp("site"), overlays=False
    ).out
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(CHROMIUM, tmp_path_factory.mktemp("chromium-profile")) as b:
        yield b


def _save_artifact(path: Path) -> None:
    target = os.environ.get("CELLBENCH_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
        print(f"screenshot copied to {Path(target) / path.name}")


def test_leaderboard_page_rows_sorting_plots_and_no_script_injection(served, browser, tmp_path):
    site, base = served
    data = json.loads((site / INST.path / "leaderboard.json").read_text())
    page = browser.new_page()
    page.goto(f"{base}/{INST.path}/index.html")
    assert page.eval("document.documentElement.dataset.sortableReady") == "1"

    # rows as published, best first
    assert page.eval(ROWS) == [r["name"] for r in data["rows"]]
    cells = page.eval(
        "Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
        ".map(r => [r.cells[3].dataset.value, r.cells[3].textContent])"
    )
    assert [float(v) for v, _ in cells] == [r["headline"]["mean"] for r in data["rows"]]

    # the hostile entry name: no script ran, the literal text is visible
    assert page.eval("typeof window.__pwned") == "undefined"
    assert page.eval("document.querySelectorAll('script').length") == 1
    assert page.eval("document.querySelectorAll('img[src=x]').length") == 0
    visible = page.eval("document.querySelector('#leaderboard tbody tr .entry-name').innerText")
    assert visible == HOSTILE

    # clicking the headline header: best first, then ascending
    by_value = sorted(data["rows"], key=lambda r: r["headline"]["mean"])
    page.click('#leaderboard th[data-key="headline"]')
    assert page.eval(ROWS) == [r["name"] for r in reversed(by_value)]
    page.click('#leaderboard th[data-key="headline"]')
    assert page.eval(ROWS) == [r["name"] for r in by_value]
    assert (
        page.eval(
            "document.querySelector('#leaderboard th[data-key=headline]').getAttribute('aria-sort')"
        )
        == "ascending"
    )
    # clicking the entry header sorts by name
    page.click('#leaderboard th[data-key="entry"]')
    assert page.eval(ROWS) == sorted((r["name"] for r in data["rows"]), key=str.lower)

    # plots are present and decoded
    images = page.eval(
        "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    srcs = [s for s, _, _ in images]
    assert "plots/bar-matching--f1-0.50.png" in srcs and "plots/curves-matching.png" in srcs
    assert all(done and width > 100 for _, done, width in images)
    assert page.eval("document.querySelectorAll('#metrics figure').length") >= 2

    errors = [
        e["params"]["entry"]
        for e in page.events("Log.entryAdded")
        if e["params"]["entry"]["level"] == "error"
    ]
    assert errors == []
    assert page.events("Runtime.exceptionThrown") == []
    shot = page.screenshot(tmp_path / "leaderboard-instance-segmentation.png")
    print(f"screenshot: {shot}")
    _save_artifact(shot)
    assert shot.stat().st_size > 10_000


def test_site_works_from_file_urls(served, browser):
    site, _ = served
    page = browser.new_page()
    page.goto((site / "index.html").as_uri())
    links = page.eval("Array.from(document.querySelectorAll('table.boards a')).map(a => a.href)")
    assert len(links) == 2 and all(link.startswith("file://") for link in links)
    page.goto(links[1])
    assert page.eval("document.documentElement.dataset.sortableReady") == "1"
    page.click('#leaderboard th[data-key="seeds"]')  # higher is better: most seeds first
    assert page.eval(ROWS)[0] == HOSTILE
    assert page.eval("Array.from(document.images).every(i => i.naturalWidth > 0)") is True
