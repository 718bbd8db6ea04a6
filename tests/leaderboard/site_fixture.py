"""A small published site built from hand-made entries (shared by render and browser tests)."""

from __future__ import annotations

from pathlib import Path

from cellbench.leaderboard.store import LeaderboardStore
from tests.leaderboard.helpers import make_entry

HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> | *x*'
CONFUSION = [[5, 1, 0], [2, 6, 1], [0, 0, 7]]


def _thresholds(base: float) -> dict[str, float]:
    out = {}
    for t in (0.5, 0.6, 0.7, 0.8, 0.9):
        out[f"matching/precision@{t:.2f}"] = round(base - 0.4 * (t - 0.5), 6)
        out[f"matching/recall@{t:.2f}"] = round(base - 0.5 * (t - 0.5), 6)
    return out


def build_store(root: Path) -> LeaderboardStore:
    """Three instance-segmentation entries (one hostile, three seeds) and two classifiers."""
    store = LeaderboardStore(root)
    groups = {"plate-0": {"matching/f1@0.50": 0.70}, "plate-1": {"matching/f1@0.50": 0.85}}
    for seed, value in enumerate((0.80, 0.83, 0.86)):
        store.add(
            make_entry(
                HOSTILE,
                value,
                seed,
                metrics={**_thresholds(value), "coco_ap/ap": value - 0.3},
                groups=groups,
                runtime_s=2.0 + seed,
                peak_memory_mb=500.0,
                manifest={"paper": "https://example.org/paper"},
            )
        )
    for name, value, ci in (("StarDist", 0.80, (0.78, 0.82)), ("Cellpose", 0.60, (0.55, 0.65))):
        store.add(
            make_entry(
                name,
                value,
                0,
                ci=ci,
                metrics={**_thresholds(value), "coco_ap/ap": value - 0.3},
                groups=groups,
            )
        )
    for name, value in (("ResNet", 0.9), ("ViT", 0.85)):
        store.add(
            make_entry(
                name,
                value,
                0,
                task="classification",
                headline="classification/balanced_accuracy",
                metrics={"classification/accuracy": value + 0.02},
                results=[
                    {
                        "metric": "classification",
                        "details": {
                            "confusion_matrix": CONFUSION,
                            "class_names": ["nucleus", "cytoplasm", "membrane"],
                        },
                    }
                ],
            )
        )
    return store
