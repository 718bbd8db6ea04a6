import math

import pytest

from cellbench.training.engine import lr_factor


def _f(step, **kw):
    base = dict(
        total=100,
        warmup=10,
        schedule="cosine",
        min_ratio=0.0,
        steps_per_epoch=10,
        milestones=[],
        gamma=0.1,
    )
    base.update(kw)
    return lr_factor(step, **base)


def test_linear_warmup_then_cosine_by_hand():
    assert _f(0) == pytest.approx(0.1) and _f(4) == pytest.approx(0.5) and _f(9) == 1.0
    assert _f(10) == pytest.approx(1.0)
    assert _f(55) == pytest.approx(0.5)  # half way through the 90 cosine steps
    assert _f(100) == pytest.approx(0.0, abs=1e-12)
    assert _f(55, min_ratio=0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert _f(32) == pytest.approx(0.5 * (1 + math.cos(math.pi * 22 / 90)))


def test_step_and_constant_schedules():
    kw = dict(schedule="step", milestones=[3, 6], gamma=0.5, warmup=0)
    assert [_f(s, **kw) for s in (0, 29, 30, 59, 60, 99)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert _f(50, schedule="constant") == 1.0
