"""``progress.activity``: quick steps print nothing, slow ones say what the time goes on."""

from __future__ import annotations

import io
import time

from cellbench.progress import activity


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _wait_for(stream: io.StringIO, text: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.01)


def test_a_quick_step_prints_nothing():
    for stream in (io.StringIO(), Terminal()):
        with activity("indexing toy@1.0 train", stream=stream, after_s=30):
            pass
        assert stream.getvalue() == ""


def test_a_slow_step_prints_one_line_then_its_time_in_a_log():
    stream = io.StringIO()
    with activity("indexing toy@1.0 train", stream=stream, after_s=0.05):
        _wait_for(stream, "indexing toy@1.0 train ...\n")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "indexing toy@1.0 train ..."
    assert len(lines) == 2 and lines[1].startswith("indexing toy@1.0 train: done in ")
    assert lines[1].endswith(" s")


def test_a_slow_step_ticks_on_a_terminal():
    stream = Terminal()
    with activity("building model unet", stream=stream, after_s=0.05, interval_s=0.01):
        _wait_for(stream, "\rbuilding model unet ... ")
    text = stream.getvalue()
    assert text.startswith("building model unet ...")
    assert text.endswith(" s\n") and text.count("\n") == 1


def test_without_threshold_the_line_is_immediate_and_disabled_is_silent():
    stream = io.StringIO()
    with activity("pip download x==1", stream=stream):
        assert stream.getvalue() == "pip download x==1 ...\n"
    silent = io.StringIO()
    with activity("pip download x==1", enabled=False, stream=silent, after_s=0):
        pass
    assert silent.getvalue() == ""


def test_without_threshold_a_terminal_gets_the_line_once_then_its_time():
    stream = Terminal()
    with activity("loading model", stream=stream, interval_s=0.01):
        _wait_for(stream, "\rloading model ... ")
    text = stream.getvalue()
    assert text.startswith("loading model ...\r")  # written once, then ticked over
    assert not text.startswith("loading model ...loading model")
    assert text.endswith(" s\n") and text.count("\n") == 1
