"""The one metrics module: hand-checked small cases, agreement with scikit-learn, and its lazy import."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

from fvc.core.metrics import binary_metrics, roc_points


def test_hand_checked_example():
    # Predicted fake at >= 0.5: [0, 0, 0, 1]; 3 of 4 right; tp 1, fp 0, fn 1 -> precision 1, recall 1/2.
    # Pairs (fake, real) ranked right: 0.35>0.1, 0.8>0.1, 0.8>0.4, not 0.35>0.4 -> AUC 3/4.
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert metrics == {"accuracy": 0.75, "auc": 0.75, "f1": pytest.approx(2 / 3)}


def test_a_score_of_one_half_counts_as_fake():
    metrics = binary_metrics(np.array([1, 0]), np.array([0.5, 0.49]))
    assert (metrics["accuracy"], metrics["f1"]) == (1.0, 1.0)


def test_one_class_has_no_auc_and_empty_has_nothing():
    # Predicted [1, 0, 1] against all fake: 2 of 3 right; tp 2, fn 1 -> F1 = 2*2 / (2*2 + 1) = 0.8.
    metrics = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert metrics == {"accuracy": pytest.approx(2 / 3), "auc": None, "f1": pytest.approx(0.8)}
    assert binary_metrics(np.array([]), np.array([])) == {"accuracy": None, "auc": None, "f1": None}
    assert roc_points(np.array([0, 0]), np.array([0.3, 0.6])) is None


def test_no_fake_predicted_gives_zero_f1_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binary_metrics(np.array([0, 1]), np.array([0.1, 0.2]))["f1"] == 0.0


def test_agrees_with_scikit_learn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    predicted = (scores >= 0.5).astype(int)
    assert binary_metrics(labels, scores) == {
        "accuracy": pytest.approx(accuracy_score(labels, predicted)),
        "auc": pytest.approx(roc_auc_score(labels, scores)),
        "f1": pytest.approx(f1_score(labels, predicted)),
    }
    fpr, tpr, _ = roc_curve(labels, scores)
    points = roc_points(labels, scores)
    assert points is not None
    np.testing.assert_array_equal(points[0], fpr)
    np.testing.assert_array_equal(points[1], tpr)


def test_training_and_inference_do_not_import_sklearn_at_start_up():
    code = (
        "import sys, fvc.core.metrics, fvc.train.training, fvc.infer.inference; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
