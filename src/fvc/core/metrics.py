"""Binary classification metrics of fake scores (1 = fake), shared by validation, inference and the report.

scikit-learn is imported inside the functions: importing it costs seconds, which a stage's start-up (and
its `--help`) should not pay before it scores anything.
"""

from __future__ import annotations

import numpy as np

#: A score at or above this counts as "fake".
THRESHOLD = 0.5


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """Accuracy and F1 at score 0.5, ROC AUC (None with one class present); all None when empty."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if len(labels) == 0:
        return {"accuracy": None, "auc": None, "f1": None}
    predicted = (scores >= THRESHOLD).astype(int)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "auc": float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None,
        "f1": float(f1_score(labels, predicted, zero_division=0)),
    }


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(false positive rates, true positive rates) of the ROC curve; None unless both classes are present."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return None
    fpr, tpr, _ = roc_curve(labels, np.asarray(scores, dtype=float))
    return fpr, tpr
