"""The one metrics module: hand-checked small cases, agreement with scikit-learn, and its lazy import."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from fvc.core.metrics import (
    METRIC_KEYS,
    TWO_CLASS_KEYS,
    binary_metrics,
    equal_error_rate,
    group_scores,
)


def test_hand_checked_example():
    # Predicted fake at >= 0.5: [0, 0, 0, 1]; 3 of 4 right; tn 2, fp 0, fn 1, tp 1 -> F1 = 2/3, balanced
    # accuracy (1 + 1/2) / 2. Pairs (fake, real) ranked right: 0.35>0.1, 0.8>0.1, 0.8>0.4, not 0.35>0.4 ->
    # AUC 3/4. Ranked 0.8 (fake), 0.4 (real), 0.35 (fake): precision 1 at recall 1/2, 2/3 at recall 1 -> AP
    # 1/2 + 1/3. ROC points (0, 0), (0, 1/2), (1/2, 1/2), ...: fpr = fnr = 1/2 at the third -> EER 1/2.
    # Brier: (0.01 + 0.16 + 0.4225 + 0.04) / 4.
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert metrics == {
        "n": 4,
        "auc": 0.75,
        "average_precision": pytest.approx(1 / 2 + 1 / 3),
        "eer": 0.5,
        "accuracy": 0.75,
        "balanced_accuracy": 0.75,
        "f1": pytest.approx(2 / 3),
        "brier": pytest.approx(0.158125),
        "tn": 2,
        "fp": 0,
        "fn": 1,
        "tp": 1,
    }
    assert list(metrics) == list(METRIC_KEYS)


def test_equal_error_rate_interpolates_between_roc_points():
    # Scores rank real 0.9 above every fake: ROC (0, 0), (1/2, 0), (1/2, 1), (1, 1); fnr - fpr changes sign
    # on the vertical segment from (1/2, 0) to (1/2, 1), where fpr = fnr = 1/2.
    assert equal_error_rate(np.array([0, 1, 1, 0]), np.array([0.9, 0.6, 0.7, 0.1])) == pytest.approx(0.5)
    # Perfect ranking: no error at the threshold between the classes.
    assert equal_error_rate(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9])) == 0.0
    # Every fake below every real: all wrong.
    assert equal_error_rate(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.9])) == 1.0


def test_a_score_of_one_half_counts_as_fake():
    metrics = binary_metrics(np.array([1, 0]), np.array([0.5, 0.49]))
    assert (metrics["accuracy"], metrics["f1"], metrics["tp"], metrics["tn"]) == (1.0, 1.0, 1, 1)


def test_one_class_gives_none_for_two_class_metrics_and_empty_gives_nothing():
    # Predicted [1, 0, 1] against all fake: 2 of 3 right; tp 2, fn 1 -> F1 = 2*2 / (2*2 + 1) = 0.8.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
        real_only = binary_metrics(np.array([0, 0]), np.array([0.3, 0.6]))
    assert all(metrics[key] is None for key in TWO_CLASS_KEYS)
    assert (metrics["n"], metrics["accuracy"], metrics["f1"]) == (3, pytest.approx(2 / 3), pytest.approx(0.8))
    assert (metrics["tn"], metrics["fp"], metrics["fn"], metrics["tp"]) == (0, 0, 1, 2)
    assert metrics["brier"] == pytest.approx((0.01 + 0.64 + 0.09) / 3)
    assert all(real_only[key] is None for key in TWO_CLASS_KEYS) and real_only["fp"] == 1
    assert binary_metrics(np.array([]), np.array([])) == {"n": 0} | dict.fromkeys(METRIC_KEYS[1:])


def test_no_fake_predicted_gives_zero_f1_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert binary_metrics(np.array([0, 1]), np.array([0.1, 0.2]))["f1"] == 0.0


def test_agrees_with_scikit_learn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(labels * 0.3 + rng.random(200) * 0.7, 0, 1)
    predicted = (scores >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted).ravel()
    fpr, tpr, _ = roc_curve(labels, scores)
    closest = np.argmin(np.abs(fpr - (1 - tpr)))
    metrics = binary_metrics(labels, scores)
    assert metrics == {
        "n": 200,
        "accuracy": pytest.approx(accuracy_score(labels, predicted)),
        "auc": pytest.approx(roc_auc_score(labels, scores)),
        "average_precision": pytest.approx(average_precision_score(labels, scores)),
        "eer": pytest.approx((fpr[closest] + 1 - tpr[closest]) / 2, abs=0.01),
        "balanced_accuracy": pytest.approx(balanced_accuracy_score(labels, predicted)),
        "f1": pytest.approx(f1_score(labels, predicted)),
        "brier": pytest.approx(brier_score_loss(labels, scores)),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def test_a_group_is_scored_by_the_mean_of_its_videos():
    # Groups in first-seen order b, a, c: b = (0.2 + 0.6) / 2 real, a = 0.9 fake, c mixes labels -> fake.
    labels, scores = group_scores(
        np.array([0, 1, 0, 0, 1]), np.array([0.2, 0.9, 0.6, 0.1, 0.5]), np.array(["b", "a", "b", "c", "c"])
    )
    np.testing.assert_array_equal(labels, [0, 1, 1])
    np.testing.assert_allclose(scores, [0.4, 0.9, 0.3])
    grouped = binary_metrics(labels, scores)
    assert (grouped["n"], grouped["auc"], grouped["tp"], grouped["fn"]) == (3, 0.5, 1, 1)


def test_training_and_inference_do_not_import_sklearn_at_start_up():
    code = (
        "import sys, fvc.core.metrics, fvc.train.training, fvc.infer.inference; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_infer_scores_each_group_from_its_test_videos(tiny_local_run: Path):
    folds = pl.read_csv(tiny_local_run / "results" / "folds" / "folds.csv").select("video_id", "group")
    for metrics_path in (tiny_local_run / "results" / "infer").glob("*/metrics.json"):
        metrics = json.loads(metrics_path.read_text())
        videos = pl.read_parquet(metrics_path.with_name("predictions.parquet")).join(folds, on="video_id")
        labels, groups = videos["label"].to_numpy(), videos["group"].to_numpy()
        assert (metrics["videos"], metrics["groups"]) == (videos.height, videos["group"].n_unique())
        assert metrics["ensemble"] == binary_metrics(labels, videos["prob_ensemble"].to_numpy())
        per_group = binary_metrics(*group_scores(labels, videos["prob_ensemble"].to_numpy(), groups))
        assert metrics["per_group"]["ensemble"] == per_group and per_group["n"] == metrics["groups"]
        fold1 = binary_metrics(*group_scores(labels, videos["prob_fold1"].to_numpy(), groups))
        assert metrics["per_group"]["folds"][1] == {"fold": 1, "member": "fold1", "seed": None, **fold1}
