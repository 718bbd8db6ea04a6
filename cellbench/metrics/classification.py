"""Image classification: confusion matrix, accuracy, balanced accuracy, F1, top-k, ROC-AUC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric


@dataclass(frozen=True)
class ClassificationSampleStats:
    """One classified sample.

    Attributes:
        y_true: True class index.
        y_pred: Predicted class index.
        scores: Per-class scores (``(n_classes,)`` float64) or None.
    """

    y_true: int
    y_pred: int
    scores: np.ndarray | None


class ClassificationMetrics(Metric[ClassificationSampleStats]):
    r"""Multi-class classification metrics, pooled over all samples.

    With :math:`C` the confusion matrix (rows = true class, columns = predicted class, the
    scikit-learn convention), :math:`TP_k = C_{kk}`, :math:`FP_k = \sum_j C_{jk} - TP_k`,
    :math:`FN_k = \sum_j C_{kj} - TP_k`:

    * ``accuracy`` = :math:`\sum_k TP_k / N`;
    * ``balanced_accuracy`` = mean over classes present in ``y_true`` of recall
      (scikit-learn ``balanced_accuracy_score``);
    * ``precision/<class>`` = :math:`TP/(TP+FP)`, ``recall/<class>`` = :math:`TP/(TP+FN)`,
      ``f1/<class>`` = :math:`2TP/(2TP+FP+FN)`; each is **0 when its denominator is 0**
      (scikit-learn ``zero_division=0``);
    * ``macro_f1`` = mean of ``f1/<class>`` over the classes that occur in ``y_true`` or
      ``y_pred`` (scikit-learn's default label set; classes absent from both are left out and a
      note says so); ``micro_f1`` = :math:`2\sum TP / (2\sum TP + \sum FP + \sum FN)`
      (= accuracy for single-label data);
    * ``top<k>_accuracy``: the true class is among the k highest scores (ties: the higher class
      index ranks first, as scikit-learn ``top_k_accuracy_score``); only for k < n_classes;
    * ``roc_auc/<class>``: one-vs-rest area under the ROC curve of that class's score
      (Mann-Whitney statistic, ties count 1/2; equals scikit-learn ``roc_auc_score``);
      a class absent from ``y_true`` (or present in every sample) has no ROC curve: it is
      skipped (NaN) and a note says so; ``roc_auc_macro`` is the mean over the other classes.

    All values are in [0, 1], higher is better. Pooling: dataset-pooled over samples.
    Per-sample values (``per_sample``) are 0/1 correctness.

    Glossary:
        accuracy (fraction 0-1; quality): Accuracy. Fraction of samples whose predicted class is the
            true class.
        balanced_accuracy (fraction 0-1; quality): Balanced accuracy. Recall averaged over the true
            classes, so rare classes count as much as common ones.
        macro_f1 (fraction 0-1; quality): Macro F1. F1 of each class, averaged over the classes.
        micro_f1 (fraction 0-1; quality): Micro F1. F1 from counts summed over classes (equals
            accuracy for single-label data).
        precision/<class> (fraction 0-1; quality): Precision, <class>. Of the samples predicted as
            <class>, the fraction that are <class>.
        recall/<class> (fraction 0-1; quality): Recall, <class>. Of the <class> samples, the
            fraction predicted as <class>.
        f1/<class> (fraction 0-1; quality): F1, <class>. Harmonic mean of precision and recall of
            <class>.
        roc_auc/<class> (fraction 0-1; quality): ROC AUC, <class>. Area under the one-vs-rest ROC
            curve of the <class> score.
        roc_auc_macro (fraction 0-1; quality): Macro ROC AUC. One-vs-rest ROC AUC averaged over the
            classes.
        top<k>_accuracy (fraction 0-1; quality): Top-<k> accuracy. Fraction of samples whose true
            class is among the <k> highest scores.

    Reference:
        Pedregosa et al., "Scikit-learn: Machine Learning in Python", JMLR 2011 (definitions
        and conventions cross-checked in the tests); Hand & Till, Machine Learning 2001 (OvR AUC).

    Args:
        class_names: Name of each class, in class-index order.
        top_k: The k of the top-k accuracies (needs scores).
    """

    name = "classification"

    def __init__(self, class_names: Sequence[str], top_k: Sequence[int] = (1, 5)) -> None:
        super().__init__()
        names = [str(c) for c in class_names]
        problems = []
        if len(names) < 2:
            problems.append(f"need at least 2 classes, got {names}")
        if len(set(names)) != len(names):
            problems.append(f"class names must be unique, got {names}")
        ks = [int(k) for k in top_k]
        if any(k < 1 for k in ks):
            problems.append(f"top_k values must be >= 1, got {ks}")
        if problems:
            raise ValidationError(problems, "ClassificationMetrics parameters")
        self.class_names = tuple(names)
        self.top_k = tuple(ks)
        self._set_params(class_names=list(names), top_k=list(ks))

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def sample_stats(
        self,
        y_true: Sequence[int] | np.ndarray,
        y_pred: Sequence[int] | np.ndarray,
        scores: np.ndarray | None = None,
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[ClassificationSampleStats]:
        """One record per sample.

        Args:
            y_true: True class indices, shape ``(n,)``.
            y_pred: Predicted class indices, shape ``(n,)``.
            scores: Optional class scores (probabilities or logits), shape ``(n, n_classes)``.
            sample_ids: Optional ids, used in error messages.

        Returns:
            The per-sample records.

        Raises:
            ValidationError: Listing every problem (shapes, dtypes, out-of-range classes,
                non-finite scores).
        """
        t = np.asarray(y_true)
        p = np.asarray(y_pred)
        problems = []
        k = self.n_classes
        for name, arr in (("y_true", t), ("y_pred", p)):
            if arr.ndim != 1:
                problems.append(f"{name} must have shape (n,), got {arr.shape}")
            elif arr.size and arr.dtype.kind not in "ui":
                problems.append(f"{name} must hold integer class indices, got {arr.dtype}")
            elif arr.size and (arr.min() < 0 or arr.max() >= k):
                bad = np.flatnonzero((arr < 0) | (arr >= k))
                where = _where(bad, sample_ids)
                problems.append(f"{name} has class indices outside [0, {k}) at {where}")
        if t.shape != p.shape and t.ndim == 1 and p.ndim == 1:
            problems.append(f"y_true has {t.size} samples but y_pred has {p.size}")
        s = None
        if scores is not None:
            s = np.asarray(scores)
            if s.ndim != 2 or s.shape != (t.size, k):
                problems.append(
                    f"scores must have shape (n, n_classes) = ({t.size}, {k}), got {s.shape}"
                )
            elif s.dtype.kind not in "uif":
                problems.append(f"scores must be numeric, got {s.dtype}")
            elif not np.isfinite(s).all():
                bad = np.flatnonzero(~np.isfinite(s).all(axis=1))
                problems.append(
                    f"scores contain NaN or infinite values at {_where(bad, sample_ids)}"
                )
        if sample_ids is not None and len(sample_ids) != t.size:
            problems.append(f"{len(sample_ids)} sample ids for {t.size} samples")
        if problems:
            raise ValidationError(problems, "ClassificationMetrics inputs")
        s64 = None if s is None else s.astype(np.float64)
        return [
            ClassificationSampleStats(
                y_true=int(t[i]), y_pred=int(p[i]), scores=None if s64 is None else s64[i]
            )
            for i in range(t.size)
        ]

    # -- helpers -----------------------------------------------------------------------------

    def _arrays(
        self, stats: Sequence[ClassificationSampleStats]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        t = np.fromiter((s.y_true for s in stats), dtype=np.int64, count=len(stats))
        p = np.fromiter((s.y_pred for s in stats), dtype=np.int64, count=len(stats))
        if stats and all(s.scores is not None for s in stats):
            sc = np.stack([s.scores for s in stats])  # type: ignore[misc]
        else:
            sc = None
        return t, p, sc

    def confusion_matrix(self, stats: Sequence[ClassificationSampleStats]) -> np.ndarray:
        """Counts, rows = true class, columns = predicted class, ``(n_classes, n_classes)``."""
        t, p, _ = self._arrays(stats)
        k = self.n_classes
        return np.bincount(t * k + p, minlength=k * k).reshape(k, k)

    def _roc_auc(self, t: np.ndarray, sc: np.ndarray) -> np.ndarray:
        """One-vs-rest AUC per class (NaN where a class has no positives or no negatives)."""
        n = t.size
        ranks = rankdata(sc, axis=0)  # average ranks for ties
        pos = t[:, None] == np.arange(self.n_classes)[None, :]
        n_pos = pos.sum(axis=0).astype(np.float64)
        n_neg = n - n_pos
        rank_sum = (ranks * pos).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        auc[(n_pos == 0) | (n_neg == 0)] = np.nan
        return auc

    def _top_k(self, t: np.ndarray, sc: np.ndarray, k: int) -> float:
        # scikit-learn: argsort (mergesort) ascending, reversed -> ties favour higher index.
        ranked = np.argsort(sc, axis=1, kind="mergesort")[:, ::-1][:, :k]
        return float((ranked == t[:, None]).any(axis=1).mean())

    # -- contract ----------------------------------------------------------------------------

    def aggregate(self, stats: Sequence[ClassificationSampleStats]) -> dict[str, float]:
        """Compute every value from the pooled confusion matrix (and scores).

        Args:
            stats: Per-sample records (any subset or multiset).

        Returns:
            Accuracy, balanced accuracy, macro/micro F1, per-class precision/recall/F1,
            top-k accuracies and ROC-AUC (when all records carry scores).
        """
        nan = float("nan")
        cm = self.confusion_matrix(stats).astype(np.float64)
        n = cm.sum()
        tp = np.diag(cm)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        fp = predicted - tp
        fn = support - tp
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        f1_den = 2 * tp + fp + fn
        f1 = np.divide(2 * tp, f1_den, out=np.zeros_like(tp), where=f1_den > 0)
        seen = (support > 0) | (predicted > 0)
        values: dict[str, float] = {
            "accuracy": float(tp.sum() / n) if n else nan,
            "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else nan,
            "macro_f1": float(f1[seen].mean()) if seen.any() else nan,
            "micro_f1": float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())) if n else nan,
        }
        for i, c in enumerate(self.class_names):
            values[f"precision/{c}"] = float(precision[i]) if n else nan
            values[f"recall/{c}"] = float(recall[i]) if n else nan
            values[f"f1/{c}"] = float(f1[i]) if n else nan
        t, _, sc = self._arrays(stats)
        if sc is not None:
            for k in self.top_k:
                if k < self.n_classes:
                    values[f"top{k}_accuracy"] = self._top_k(t, sc, k)
            auc = self._roc_auc(t, sc)
            for i, c in enumerate(self.class_names):
                values[f"roc_auc/{c}"] = float(auc[i])
            values["roc_auc_macro"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else nan
        return values

    def sample_values(self, stats: ClassificationSampleStats) -> dict[str, float]:
        """Per sample: whether the prediction is correct (1.0 or 0.0)."""
        return {"correct": float(stats.y_true == stats.y_pred)}

    def details(self, stats: Sequence[ClassificationSampleStats]) -> dict[str, Any]:
        """Confusion matrix (counts and row-normalised) with class names, supports."""
        cm = self.confusion_matrix(stats)
        rows = cm.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(rows > 0, cm / np.maximum(rows, 1), np.nan)
        return {
            "class_names": list(self.class_names),
            "confusion_matrix": cm.tolist(),
            "confusion_matrix_normalized": norm.tolist(),
            "confusion_matrix_axes": "rows = true class, columns = predicted class",
            "support": cm.sum(axis=1).tolist(),
            "n_samples": int(cm.sum()),
        }

    def notes(self, stats: Sequence[ClassificationSampleStats]) -> list[str]:
        """Classes left out of macro averages or AUC, trivial top-k, missing scores."""
        notes = ["precision/recall/F1 are 0 when undefined (scikit-learn zero_division=0)."]
        cm = self.confusion_matrix(stats)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        absent = [
            c
            for c, s, p in zip(self.class_names, support, predicted, strict=True)
            if s == 0 and p == 0
        ]
        if absent:
            notes.append(f"Classes absent from y_true and y_pred, left out of macro_f1: {absent}")
        no_true = [c for c, s in zip(self.class_names, support, strict=True) if s == 0]
        if no_true:
            notes.append(
                f"Classes absent from y_true, left out of balanced_accuracy and ROC-AUC "
                f"(roc_auc/<class> is NaN): {no_true}"
            )
        everywhere = [
            c for c, s in zip(self.class_names, support, strict=True) if s == cm.sum() and s > 0
        ]
        if everywhere:
            notes.append(
                f"Classes that are the true class of every sample have no ROC-AUC: {everywhere}"
            )
        _, _, sc = self._arrays(stats)
        if sc is None:
            notes.append("No scores given: top-k accuracy and ROC-AUC not computed.")
        else:
            skipped = [k for k in self.top_k if k >= self.n_classes]
            if skipped:
                notes.append(
                    f"top-k accuracy for k >= n_classes is trivially 1 and left out: k = {skipped}"
                )
        return notes


def _where(indices: np.ndarray, sample_ids: Sequence[str] | None) -> str:
    idx = indices[:5].tolist()
    names = [repr(sample_ids[i]) for i in idx] if sample_ids is not None else [str(i) for i in idx]
    more = f" and {indices.size - 5} more" if indices.size > 5 else ""
    return "samples " + ", ".join(names) + more
