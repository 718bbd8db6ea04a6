"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (stdlib only).

Chromium reads CDP commands from file descriptor 3 and writes responses and events to file
descriptor 4, each message a JSON object terminated by a NUL byte. No websocket library and no
network port are needed. Used by the browser tests of the leaderboard site.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

_TRAMPOLINE = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-pipe",
)


def find_chromium() -> str | None:
    """Path of a chromium binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    """A CDP command failed or timed out."""


class Browser:
    """A headless chromium driven over the DevTools pipe.

    Args:
        binary: Chromium executable.
        user_data_dir: A fresh profile folder.
        window: Window size in CSS pixels.
    """

    def __init__(self, binary: str, user_data_dir: Path, window: tuple[int, int] = (1280, 900)):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        args = [
            *FLAGS,
            f"--user-data-dir={user_data_dir}",
            f"--window-size={window[0]},{window[1]}",
            "about:blank",
        ]
        # A tiny trampoline moves the pipe ends to fds 3 and 4, where chromium expects them.
        self._log = open(user_data_dir / "chromium.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(to_child_r), str(from_child_w), binary, *args],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._out = to_child_w
        self._in = from_child_r
        self._next = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event_cv = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg and msg["id"] in self._waiting:
                    self._waiting[msg["id"]].put(msg)
                else:
                    with self._event_cv:
                        self.events.append(msg)
                        self._event_cv.notify_all()

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send a command and return its result.

        Raises:
            CDPError: On an error response or timeout.
        """
        with self._lock:
            self._next += 1
            ident = self._next
            box: queue.Queue[dict[str, Any]] = queue.Queue()
            self._waiting[ident] = box
            msg: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._out, json.dumps(msg).encode() + b"\0")
        try:
            reply = box.get(timeout=timeout)
        except queue.Empty:
            raise CDPError(f"{method}: no reply within {timeout} s") from None
        finally:
            self._waiting.pop(ident, None)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(
        self, method: str, session: str | None = None, timeout: float = 30.0, start: int = 0
    ) -> dict[str, Any]:
        """Wait for an event (searching from index ``start`` of :attr:`events`)."""
        deadline = time.monotonic() + timeout
        with self._event_cv:
            while True:
                for ev in self.events[start:]:
                    if ev.get("method") == method and (
                        session is None or ev.get("sessionId") == session
                    ):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CDPError(f"no {method} event within {timeout} s")
                self._event_cv.wait(left)

    def new_page(self) -> Page:
        """Open a tab and attach to it."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        return page

    def close(self) -> None:
        """Close the browser and its pipes."""
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._out, self._in):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Page:
    """One attached tab."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command to this tab."""
        return self.browser.send(method, params, session=self.session)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        start = len(self.browser.events)
        reply = self.send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {reply['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, timeout, start)

    def eval(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its JSON value.

        Raises:
            CDPError: If the expression throws.
        """
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise CDPError(f"{expression!r} threw {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the centre of the first element matching ``selector`` with real mouse events."""
        rect = self.eval(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        x, y = rect
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    def screenshot(self, path: Path) -> Path:
        """Save a full-page PNG screenshot."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def events(self, method: str) -> list[dict[str, Any]]:
        """Events of this tab with the given method so far."""
        return [
            e
            for e in self.browser.events
            if e.get("method") == method and e.get("sessionId") == self.session
        ]
