"""Binary classification metrics of fake scores (1 = fake), shared by validation, inference and the report.

scikit-learn computes them; it is imported inside the functions: importing it costs seconds, which a stage's
start-up (and its `--help`) should not pay before it scores anything.
"""

from __future__ import annotations

import numpy as np

#: A score at or above this counts as "fake".
THRESHOLD = 0.5
#: The keys of `binary_metrics`, in the order the report shows them.
METRIC_KEYS = (
    "n",
    "auc",
    "average_precision",
    "eer",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "brier",
    "tn",
    "fp",
    "fn",
    "tp",
)
#: The metrics that need both classes: None when the labels hold one class only.
TWO_CLASS_KEYS = ("auc", "average_precision", "eer", "balanced_accuracy")


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | int | None]:
    """`n` (how many items), ROC AUC, average precision, equal error rate, and at score 0.5: accuracy,
    balanced accuracy, F1, confusion counts (tn, fp, fn, tp); Brier score of the scores. The metrics of
    TWO_CLASS_KEYS are None when one class only is present; all but `n` are None when empty."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        brier_score_loss,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    result: dict[str, float | int | None] = dict.fromkeys(METRIC_KEYS)
    result["n"] = len(labels)
    if len(labels) == 0:
        return result
    predicted = (scores >= THRESHOLD).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    result.update(
        accuracy=float(accuracy_score(labels, predicted)),
        f1=float(f1_score(labels, predicted, zero_division=0)),
        brier=float(brier_score_loss(labels, scores, pos_label=1)),
        tn=int(tn),
        fp=int(fp),
        fn=int(fn),
        tp=int(tp),
    )
    if len(np.unique(labels)) == 2:
        result.update(
            auc=float(roc_auc_score(labels, scores)),
            average_precision=float(average_precision_score(labels, scores)),
            eer=equal_error_rate(labels, scores),
            balanced_accuracy=float(balanced_accuracy_score(labels, predicted)),
        )
    return result


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The rate where false positives and false negatives are equal, on the ROC curve (`roc_curve`) taken as
    piecewise linear between its points. Needs both classes."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(np.asarray(labels).astype(int), np.asarray(scores, dtype=float))
    gap = fpr - (1 - tpr)  # rises from -1 (threshold +inf) to +1 (threshold -inf)
    i = int(np.argmax(gap >= 0))
    if gap[i] == 0 or i == 0:
        return float(fpr[i])
    t = -gap[i - 1] / (gap[i] - gap[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def group_scores(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) per group (e.g. a cascade: a video and its near-duplicates), in order of first
    appearance: a group's score is the mean score of its videos, its label its videos' label (fake when any
    of its videos is fake, should a group mix labels)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    names, first, index = np.unique(np.asarray(groups), return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.bincount(index, weights=scores, minlength=len(names))
    counts = np.bincount(index, minlength=len(names))
    fake = np.bincount(index, weights=labels, minlength=len(names)) > 0
    return fake[order].astype(int), (sums / counts)[order]
