"""The challenge server's pages in a real browser: Playwright driving Debian's chromium.

Sign in with a token, upload a predictions store through the form (with hostile text in the
entry name), watch the status page turn to scored, find the entry on the leaderboard; every
page at desktop and phone width, checked for horizontal overflow, script injection and
Content-Security-Policy violations. No browser is downloaded: chromium comes from the system
(``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.server.helpers import (
    CHALLENGE,
    ServerProcess,
    build_dataset,
    ground_truth,
    leaderboard_when,
    predictions_zip,
    write_challenge,
)

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
SIZES = {"desktop": (1280, 800), "phone": (375, 740)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from cellbench.server.accounts import add_team
    from cellbench.server.db import make_engine

    home = tmp_path_factory.mktemp("home")
    build_dataset(home)
    db = f"sqlite:///{home / 'server.db'}"
    server = ServerProcess(home, write_challenge(home / "challenge.yaml"), db, workers=1).start()
    engine = make_engine(db)
    token = add_team(engine, "browser team")
    engine.dispose()
    yield server.url, token, home
    server.stop()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def _save(path: Path) -> None:
    target = os.environ.get("CELLBENCH_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


def test_sign_in_upload_watch_scored_and_find_on_leaderboard(served, browser, tmp_path):
    url, token, home = served
    archive = tmp_path / "predictions.zip"
    archive.write_bytes(predictions_zip(ground_truth(home), tmp_path))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    dialogs, violations = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )

    page.goto(f"{url}/signin")
    page.fill("input[name=token]", token)
    page.click("form.submit button[type=submit]")
    page.wait_for_url(f"{url}/team")
    assert "Team browser team" in page.inner_text("header.site")

    page.goto(f"{url}/challenges/{CHALLENGE}/submit")
    fields = {
        "name": HOSTILE,
        "authors": "Ada Lovelace, " + HOSTILE,
        "contact": "ada@example.org",
        "code_url": "https://example.org/code",
        "code_commit": "abcdef0",
        "training_data": "toy train split",
        "n_parameters": "0",
        "hardware": "laptop",
        "license": "MIT",
        "notes": HOSTILE,
    }
    for name, value in fields.items():
        page.fill(f"[name={name}]", value)
    page.set_input_files("input[name=file]", str(archive))
    page.click("form.submit button[type=submit]")
    page.wait_for_url(f"{url}/submissions/*")
    status_url = page.url
    deadline = time.monotonic() + 180
    while page.inner_text("#state") != "scored":  # the page refreshes itself every 2 s
        assert time.monotonic() < deadline, page.inner_text("#state")
        page.wait_for_timeout(500)
        if page.url != status_url:
            page.goto(status_url)
    assert page.inner_text("h1") == HOSTILE  # shown as text
    assert page.inner_text("#public-score") == "1.0000"

    leaderboard_when(url, lambda b: bool(b["rows"]))
    page.goto(f"{url}/challenges/{CHALLENGE}/leaderboard")
    row = page.locator("#leaderboard tbody tr").first
    assert row.get_attribute("data-entry") == HOSTILE
    assert row.locator("td.entry-name").inner_text() == HOSTILE
    assert page.evaluate("window.pwned === undefined") and dialogs == []

    pages = {
        "challenge": f"/challenges/{CHALLENGE}",
        "leaderboard": f"/challenges/{CHALLENGE}/leaderboard",
        "status": status_url.removeprefix(url),
        "team": "/team",
        "submit": f"/challenges/{CHALLENGE}/submit",
    }
    for size, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        for name, path in pages.items():
            page.goto(url + path)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, (size, name, overflow)
            shot = tmp_path / f"server-{name}-{size}.png"
            page.screenshot(path=str(shot), full_page=True)
            _save(shot)
            assert shot.stat().st_size > 5000
            assert page.evaluate("window.pwned === undefined"), name
    assert dialogs == [] and violations == [], violations
    context.close()
