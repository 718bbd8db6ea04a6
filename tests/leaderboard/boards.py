"""A leaderboard root with one board per task, built from small synthetic datasets.

Every board gets real entries scored by cellbench from predictions kept beside the board (the
ground truth with errors put in on purpose), one entry with a hostile name, the task's controls,
and, on the instance board, a three-seed entry. Used by the picture tests and the browser tests;
nothing is downloaded (the synthetic datasets are generated locally).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cellbench.leaderboard import BoardKey, LeaderboardStore
from cellbench.leaderboard.controls import add_controls
from cellbench.leaderboard.entry import LeaderboardEntry, card_snapshot
from cellbench.predictions import Prediction, PredictionWriter, load_predictions
from cellbench.registry import pull
from cellbench.scoring import score
from cellbench.tasks.tracking.controls import link_nearest
from tests.leaderboard.helpers import make_manifest
from tests.leaderboard.site_fixture import HOSTILE

SMALL = {
    "synthetic-nuclei": {"n_images": 12},
    "synthetic-protein-localisation": {"n_images": 40},
    "synthetic-timelapse": {"n_sequences": 4, "n_frames": 8},
    "synthetic-label-free": {"n_images": 8},
}
TASKS = {
    "instance-segmentation": "synthetic-nuclei",
    "semantic-segmentation": "synthetic-nuclei",
    "classification": "synthetic-protein-localisation",
    "tracking": "synthetic-timelapse",
    "augmented-microscopy": "synthetic-label-free",
}


def _predict(task: str, store, sid: str, strength: float, rng) -> Prediction:
    s = store.sample(sid)
    if task == "instance-segmentation":
        labels = np.asarray(s.instances).astype(np.int32)
        ids = np.unique(labels)[1:]
        gone = rng.choice(ids, size=max(1, int(strength * ids.size)), replace=False)
        labels[np.isin(labels, gone)] = 0
        keep = np.unique(labels)[1:]
        return Prediction(
            sid, mask=labels, object_ids=keep, object_scores=rng.uniform(0.5, 1, keep.size)
        )
    if task == "semantic-segmentation":
        mask = np.asarray(s.semantic).copy()
        flip = rng.random(mask.shape) < strength * 0.3
        mask[flip & (mask > 0)] = 1
        return Prediction(sid, mask=mask.astype(np.uint8))
    if task == "classification":
        label = int(s.label) if rng.random() > strength else (int(s.label) + 1) % 4
        return Prediction(sid, label=label, scores=np.eye(4, dtype=np.float32)[label])
    if task == "tracking":
        movie, tracks = link_nearest(list(np.asarray(s.instances)))
        return Prediction(sid, mask=movie, tracks=tracks)
    target = np.asarray(s.target, dtype=np.float32)
    noise = rng.normal(0, strength * float(target.std() + 1e-6), target.shape)
    return Prediction(sid, image=(target + noise).astype(np.float32))


def add_entry(
    lb: LeaderboardStore, root: Path, key: BoardKey, store, name: str, seed: int, strength: float
) -> LeaderboardEntry:
    """Predict with errors of ``strength``, keep the predictions beside the board, score, add."""
    rng = np.random.default_rng(seed + int(100 * strength))
    digest = hashlib.sha256(f"{name}:{seed}:{strength}".encode()).hexdigest()
    rel = f"{key.path}/predictions/{digest[:12]}.zarr"
    with PredictionWriter(root / rel, key.task, store.id, store.version, key.split) as w:
        for sid in store.sample_ids(key.split):
            w.add(_predict(key.task, store, sid, strength, rng))
    report = score(key.task, store, key.split, load_predictions(root / rel, key.task))
    entry = LeaderboardEntry(
        manifest=make_manifest(
            name,
            seed,
            task=key.task,
            dataset=key.ref,
            weights_url="https://example.org/weights.zip",
        ),
        report=report,
        submission_sha256=digest,
        submitted=f"2024-05-0{1 + seed % 9}T12:00:00+00:00",
        predictions_uri=rel,
        dataset_card=card_snapshot(store.card),
    )
    lb.add(entry)
    return entry


def build_task_boards(root: Path) -> LeaderboardStore:
    """Every task's board under ``root`` (datasets pulled into the current cellbench home)."""
    lb = LeaderboardStore(root)
    for task, dataset in TASKS.items():
        store = pull(dataset, options=SMALL[dataset], progress=False)
        key = BoardKey(store.id, store.version, task, "test")
        add_entry(lb, root, key, store, "Good model", 0, 0.1)
        add_entry(lb, root, key, store, HOSTILE, 0, 0.4)
        if task == "instance-segmentation":
            for seed in (1, 2):
                add_entry(lb, root, key, store, "Good model", seed, 0.1 + 0.05 * seed)
        add_controls(lb, key, store)
    return lb
