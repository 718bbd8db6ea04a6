"""Example error overlays for instance segmentation leaderboards.

For the top entries, one test image (the one where they make the most errors together) is
drawn with its ground-truth objects filled by error class (correct, missed, split, merge,
catastrophe) and the predicted objects outlined by class (correct, false positive, split,
merge, catastrophe). The classes are the DeepCell-style object
error classes that scoring computed: ``details["per_image"][sample_id]`` of the report's
``object_errors`` result (:class:`cellbench.metrics.object_errors.ObjectErrors`); when a report
lacks them (older reports), the same metric is computed for that one image.

Drawing needs the dataset store (``cellbench datasets pull``) and the entry's predictions at
``predictions_uri`` (a local path, or one relative to a local leaderboard root, which must stay
inside it); when either is missing the page says so instead of drawing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellbench._version import __version__
from cellbench.errors import CellbenchError
from cellbench.leaderboard import figcache
from cellbench.leaderboard.entry import LeaderboardEntry
from cellbench.leaderboard.html import FigureRef
from cellbench.leaderboard.pictures import ERROR_COLOURS, middle_plane, predictions_path
from cellbench.leaderboard.plots import file_stem, overlay_chart
from cellbench.leaderboard.ranking import Leaderboard

_EVENT_CLASSES = ("split", "merge", "catastrophe")
#: Error class -> code in per-pixel class images (0 = background), in
#: :data:`~cellbench.leaderboard.plots.ERROR_COLOURS` order, so viewers use the same colours.
ERROR_CODES = {name: i + 1 for i, name in enumerate(ERROR_COLOURS)}


def object_errors_of(entry: LeaderboardEntry) -> dict[str, Any] | None:
    """``{sample_id: ids by class}`` from the report's object-error details, if present."""
    for result in entry.report.results:
        if result.get("metric") != "object_errors":
            continue
        per_image = (result.get("details") or {}).get("per_image")
        if isinstance(per_image, Mapping):
            return dict(per_image)
    return None


def classes_from_ids(ids: Mapping[str, Any]) -> tuple[dict[int, str], dict[int, str]]:
    """Map object ids to error classes: ``(gt id -> class, predicted id -> class)``.

    Args:
        ids: One image's ``ObjectErrors`` ids: ``correct`` as ``[gt, pred]`` pairs, ``missed``
            (gt ids), ``false_positive`` (predicted ids), and ``split``/``merge``/
            ``catastrophe`` as lists of ``{"gt": [...], "pred": [...]}`` events.
    """
    gt: dict[int, str] = {}
    pred: dict[int, str] = {}
    for pair in ids.get("correct", []):
        gt[int(pair[0])] = "correct"
        pred[int(pair[1])] = "correct"
    for g in ids.get("missed", []):
        gt[int(g)] = "missed"
    for p in ids.get("false_positive", []):
        pred[int(p)] = "false_positive"
    for cls in _EVENT_CLASSES:
        for event in ids.get(cls, []):
            for g in event.get("gt", []):
                gt[int(g)] = cls
            for p in event.get("pred", []):
                pred[int(p)] = cls
    return gt, pred


def n_errors(ids: Mapping[str, Any]) -> int:
    """Number of error events in one image (missed, false positives, splits, merges, ...)."""
    return (
        len(ids.get("missed", []))
        + len(ids.get("false_positive", []))
        + sum(len(ids.get(c, [])) for c in _EVENT_CLASSES)
    )


def _compute_ids(gt: np.ndarray, pred: np.ndarray, sample_id: str) -> dict[str, Any]:
    from cellbench.metrics.instance import LabelPair
    from cellbench.metrics.object_errors import ObjectErrors

    return dict(ObjectErrors().measure(LabelPair(gt, pred), sample_id).ids)


def error_class_images(
    truth: np.ndarray, predicted: np.ndarray, sample_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth and predicted label images with each object painted by its error class code.

    Classes as the leaderboard's overlays draw them (:class:`~cellbench.metrics.object_errors.
    ObjectErrors`); codes are :data:`ERROR_CODES`.
    """
    gt_classes, pred_classes = classes_from_ids(_compute_ids(truth, predicted, sample_id))

    def paint(labels: np.ndarray, classes: Mapping[int, str]) -> np.ndarray:
        labels = np.asarray(labels).astype(np.int64)
        table = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.uint8)
        for obj, cls in classes.items():
            if 0 < obj < table.size:
                table[obj] = ERROR_CODES[cls]
        return table[labels]

    return paint(truth, gt_classes), paint(predicted, pred_classes)


def _pick_sample(
    entries: list[LeaderboardEntry], sample_ids: list[str], headline: str, direction: str
) -> str:
    """The test image where the drawn entries make the most object errors together.

    Falls back to the leader's worst per-sample headline value, then to the first image.
    """
    totals = dict.fromkeys(sample_ids, 0)
    found = False
    for entry in entries:
        per_image = object_errors_of(entry) or {}
        for sid in sample_ids:
            if sid in per_image:
                totals[sid] += n_errors(per_image[sid])
                found = True
    if found:
        # the most errors; among equals the first in the split (max keeps the first maximum)
        return max(sample_ids, key=totals.__getitem__)
    leader = entries[0].report.per_sample
    values = [
        (leader[s][headline], s)
        for s in sample_ids
        if headline in leader.get(s, {}) and leader[s][headline] == leader[s][headline]
    ]
    if values:
        pick = max if direction == "lower" else min
        return pick(values, key=lambda t: t[0])[1]
    return sample_ids[0]


class _Skip(Exception):  # noqa: N818 - an internal signal, not an error users see
    """A prediction that cannot be drawn (the message says why)."""


class _ControlPredictions:
    """A control's predictions, computed for one sample when first asked for."""

    def __init__(self, spec: Any, store: Any) -> None:
        self.spec, self.store = spec, store
        self.done: dict[str, Any] = {}

    def get(self, sid: str) -> Any:
        if sid not in self.done:
            self.done.update(self.spec.predict(self.store, [sid]))
        return self.done[sid]


def _control_sources(board: Leaderboard, store: Any) -> list[tuple[str, LeaderboardEntry, Any]]:
    """The board's classical reference controls, as (name, entry, predictions) to draw."""
    if not board.controls:
        return []
    from cellbench.tasks import get_task

    specs = {c.name: c for c in get_task(board.key.task).controls(store, board.key.split)}
    out = []
    for row in board.controls:
        spec = specs.get(row.name.removeprefix("control: "))
        if spec is not None and row.control == "reference":
            out.append((row.name, row.replicates[0], _ControlPredictions(spec, store)))
    return out


def render_overlays(
    board: Leaderboard, folder: Path, top_k: int = 3, base: Path | None = None
) -> tuple[list[FigureRef], list[str]]:
    """Draw error overlays of the top entries on the test image where they err the most.

    Args:
        board: An instance-segmentation leaderboard.
        folder: The board's output folder (PNGs go to ``plots/``).
        top_k: Number of entries drawn.
        base: Local leaderboard root that relative ``predictions_uri`` values are read from.

    Returns:
        The figures and notes explaining anything that could not be drawn.
    """
    from cellbench.leaderboard.pictures import load_store
    from cellbench.predictions import load_predictions

    key = board.key
    try:
        store = load_store(key.ref)
    except CellbenchError as err:
        return [], [f"error overlays need the dataset store: {err}"]
    if board.dataset_checksum and store.checksum != board.dataset_checksum:
        return [], [
            f"error overlays skipped: the local {key.ref} store (checksum {store.checksum[:12]}) "
            f"is not the build the entries were scored on ({board.dataset_checksum[:12]})"
        ]
    sample_ids = store.sample_ids(key.split)
    if not sample_ids:
        return [], [f"error overlays skipped: split {key.split!r} is empty"]

    notes: list[str] = []
    chosen: list[tuple[str, LeaderboardEntry, Any]] = []
    for row in board.rows[:top_k]:
        for entry in row.replicates:
            path = predictions_path(entry.predictions_uri, base)
            if path is None:
                continue
            try:
                preds = load_predictions(path, key.task)
            except CellbenchError as err:
                notes.append(
                    f"{row.name}: predictions at {entry.predictions_uri} unreadable ({err})"
                )
                continue
            chosen.append((row.name, entry, preds))
            break
        else:
            notes.append(f"{row.name}: no error overlay (its predictions are not available here)")
    chosen += _control_sources(board, store)
    if not chosen:
        return [], notes

    sid = _pick_sample([e for _, e, _ in chosen], sample_ids, board.headline, board.direction)
    spatial = len(store.labels(sid, "instances").shape)
    figures: list[FigureRef] = []
    for name, entry, preds in chosen:
        ids = (object_errors_of(entry) or {}).get(sid)
        source = "report details" if ids is not None else "computed with ObjectErrors"
        path = f"plots/overlay-{file_stem(entry.entry_id)}-{file_stem(sid)}.png"
        inputs = {
            "board": key.path,
            "checksum": store.checksum,
            "sample": sid,
            "entry": [name, entry.entry_id, entry.submission_sha256],
            "predictions": entry.report.provenance.predictions_sha256,
            "ids": ids,
            "cellbench": __version__,
        }

        def draw(target: Path, name: str = name, preds: Any = preds, ids: Any = ids) -> None:
            image = np.asarray(store.image(sid)[...])
            gt = np.asarray(store.labels(sid, "instances")[...])
            try:
                pred = preds.get(sid).mask
            except KeyError:
                raise _Skip(f"{name}: no prediction for sample {sid}") from None
            if pred is None or pred.shape != gt.shape:
                raise _Skip(f"{name}: prediction of {sid} has no label image of shape {gt.shape}")
            if ids is None:
                ids = _compute_ids(gt, np.asarray(pred), sid)
            gt_cls, pred_cls = classes_from_ids(ids)
            overlay_chart(
                middle_plane(image, spatial + 1),
                middle_plane(gt, 2),
                middle_plane(np.asarray(pred), 2),
                gt_cls,
                pred_cls,
                f"{name} — {sid}",
                target,
                pixel_size=store.pixel_size(sid),
            )

        try:
            figcache.draw(folder / path, "instance-overlay", inputs, draw)
        except _Skip as why:
            notes.append(str(why))
            continue
        if ids is None:  # drawn (not cached) with ids computed for the counts below
            gt = np.asarray(store.labels(sid, "instances")[...])
            ids = _compute_ids(gt, np.asarray(preds.get(sid).mask), sid)
        counts = ", ".join(
            f"{c.replace('_', ' ')} {len(ids.get(c, []))}"
            for c in ("correct", "missed", "false_positive", *_EVENT_CLASSES)
        )
        plane = " (middle z plane)" if spatial == 3 else ""
        origin = (
            " (a control, recomputed by cellbench)"
            if entry.manifest.get("kind") == "control"
            else ""
        )
        figures.append(
            FigureRef(
                "overlays",
                path,
                f"{name} (seed {entry.seed}){origin} on {sid}{plane}: {counts}. Fill: ground truth "
                f"by class; outline: prediction by class; classes from {source}.",
                f"error overlay of {name} on {sid}",
            )
        )
    return figures, notes
