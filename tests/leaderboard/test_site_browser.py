"""Every page of a published site in headless Debian chromium, driven by Playwright.

At 1400 px and 390 px: the page never scrolls sideways, the headline chart and the task's
pictures are present and decoded, sorting works with the mouse and the keyboard, axe-core finds
no serious or critical accessibility violation, and an entry named with HTML stays inert text.
Screenshots are kept under the test's temporary folder (and copied to ``$CELLBENCH_ARTIFACTS``
when set). The browser is the system's chromium (never downloaded); axe-core comes from the npm
registry, installed by ``make test``/``.ci/run`` into ``.test-tools/`` (see
:func:`axe_source`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.leaderboard.cdp import find_chromium
from tests.leaderboard.site_fixture import HOSTILE

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CELLBENCH_CHROMIUM") or find_chromium()
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: The axe-core release the tests use (``make test`` installs it with npm).
AXE_VERSION = "4.14.1"
WIDTHS = (1400, 390)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]


def axe_source() -> str | None:
    """axe-core's script: ``$CELLBENCH_AXE``, else ``.test-tools`` (npm install), else None."""
    candidates = [os.environ.get("CELLBENCH_AXE", "")]
    candidates.append(str(REPO / ".test-tools" / "node_modules" / "axe-core" / "axe.min.js"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c).read_text(encoding="utf-8")
    npm = shutil.which("npm")
    if npm is None:
        return None
    subprocess.run(
        [
            npm,
            "install",
            "--no-save",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(REPO / ".test-tools"),
            f"axe-core@{AXE_VERSION}",
        ],
        check=False,
        capture_output=True,
        timeout=300,
    )
    path = Path(candidates[1])
    return path.read_text(encoding="utf-8") if path.is_file() else None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(task_boards):
    _, site, _ = task_boards
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def axe():
    """axe-core's source, or None (the accessibility checks are then skipped, see below)."""
    return axe_source()


def test_axe_core_is_available(axe):
    if axe is None:
        pytest.skip(
            f"axe-core not available (npm install --prefix .test-tools axe-core@{AXE_VERSION})"
        )
    assert "axe v4." in axe[:40]


def _pages(site: Path) -> list[str]:
    boards = sorted(p.parent.relative_to(site).as_posix() for p in site.glob("*/*/*/index.html"))
    return ["index.html", "glossary.html", *[f"{b}/index.html" for b in boards]]


def _keep(path: Path) -> Path:
    target = os.environ.get("CELLBENCH_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def _open(browser, url: str, width: int):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url, wait_until="load")
    return page, errors


def _screenshot(page, tmp_dir: Path, rel: str, width: int) -> Path:
    name = rel.replace("/", "_").replace("@", "-").removesuffix(".html") + f"-{width}.png"
    path = tmp_dir / name
    page.screenshot(path=str(path), full_page=True)
    return _keep(path)


def _axe(page, axe: str) -> list[dict]:
    page.evaluate(axe + "\n;0")  # evaluated by the DevTools protocol: the page's CSP stays on
    return page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
        "v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
        " target: v.nodes[0].target})))"
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_loads_its_figures_is_accessible_and_runs_no_injected_script(
    served, browser, axe, width, tmp_path_factory
):
    site, base = served
    shots = tmp_path_factory.mktemp(f"screenshots-{width}")
    found = {}
    for rel in _pages(site):
        page, errors = _open(browser, f"{base}/{rel}", width)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{rel} at {width} px scrolls sideways by {overflow} px"
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
            " i.naturalWidth])"
        )
        assert all(done and w > 0 for _, done, w in images), (rel, images)
        assert page.evaluate("typeof window.__pwned") == "undefined"
        assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
        assert page.evaluate("document.querySelectorAll('script').length") == 1
        assert errors == [], (rel, errors)
        if rel.count("/") == 3:  # a board page
            data = json.loads((site / rel).with_name("leaderboard.json").read_text())
            stem = data["headline"]["metric"].replace("/", "--")
            head = page.locator(f'#metrics img[src="plots/bar-{stem}.png"]')
            assert head.count() == 1 and head.evaluate("i => i.naturalWidth") > 100
            assert page.locator("#pictures figure img").count() >= 1
            # the hostile entry name is shown as text
            names = page.evaluate(
                "Array.from(document.querySelectorAll('#leaderboard .entry-name'))"
                ".map(e => e.innerText)"
            )
            assert HOSTILE in names
            # the headline value is on screen next to the name, even on a phone
            box = page.locator("#leaderboard tbody tr").first.locator("td").nth(3).bounding_box()
            assert box is not None and box["x"] + box["width"] <= width, (rel, box)
        if axe is not None:
            found[rel] = _axe(page, axe)
            bad = [v for v in found[rel] if v["impact"] in ("serious", "critical")]
            assert bad == [], (rel, width, bad)
        shot = _screenshot(page, shots, rel, width)
        assert shot.stat().st_size > 5_000
        print(f"screenshot: {shot}")
        page.close()
    if found and os.environ.get("CELLBENCH_ARTIFACTS"):
        folder = Path(os.environ["CELLBENCH_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"axe-{width}.json").write_text(json.dumps(found, indent=2))
    print(f"axe {width}px: " + json.dumps({k: [v["id"] for v in vs] for k, vs in found.items()}))


def test_sorting_with_mouse_and_keyboard(served, browser):
    site, base = served
    rel = next(r for r in _pages(site) if "instance-segmentation" in r)
    data = json.loads((site / rel).with_name("leaderboard.json").read_text())
    page, _ = _open(browser, f"{base}/{rel}", 1400)
    rows = (
        "Array.from(document.querySelectorAll('#leaderboard tbody tr')).map(r => r.dataset.entry)"
    )
    assert page.evaluate(rows) == [r["name"] for r in data["rows"]]
    by_value = [r["name"] for r in sorted(data["rows"], key=lambda r: r["headline"]["mean"])]
    page.click('#leaderboard th[data-key="headline"]')  # higher is better: best first
    assert page.evaluate(rows) == by_value[::-1]
    # keyboard, on a fresh page: the skip link comes first and moves focus to the content
    page.goto(f"{base}/{rel}", wait_until="load")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#content"
    # every sortable header is focusable and sorts with Enter
    page.focus('#leaderboard th[data-key="headline"]')
    page.keyboard.press("Enter")
    assert page.evaluate(rows) == by_value[::-1]
    page.keyboard.press(" ")
    assert page.evaluate(rows) == by_value
    assert page.evaluate(
        "Array.from(document.querySelectorAll('table.sortable th')).every(t => t.tabIndex === 0)"
    )
    # the wide tables scroll inside focusable regions, reachable with Tab
    assert page.evaluate(
        "Array.from(document.querySelectorAll('.scroll')).every(s => s.tabIndex === 0)"
    )
    page.close()
