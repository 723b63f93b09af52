"""The report: ROC curves with AUCs and every fold, training curves, the metrics and audit tables, and the
whole `snakemake --report` page rendered in headless Chromium (screenshots kept under the test's tmp_path)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from workflow_runner import snakemake

from fvc.infer.report import metrics_table, plot_roc, plot_training, write_metrics_html
from fvc.slurm.recommend import Recommendation
from fvc.slurm.render import render_html


def _predictions(tmp_path: Path) -> tuple[Path, pl.DataFrame]:
    rng = np.random.default_rng(3)
    labels = np.array([0, 1] * 10)
    folds = {f"prob_fold{i}": np.clip(labels * 0.4 + rng.random(20) * 0.6, 0, 1) for i in range(3)}
    table = pl.DataFrame({"video_id": [f"v{i}" for i in range(20)], "label": labels, **folds})
    table = table.with_columns(pl.mean_horizontal(list(folds)).alias("prob_ensemble"))
    path = tmp_path / "predictions.parquet"
    table.write_parquet(path)
    return path, table


def test_roc_legend_gives_each_fold_and_the_ensemble_with_its_auc(tmp_path: Path):
    path, table = _predictions(tmp_path)
    plot_roc(path, tmp_path / "roc.svg", "naive_cnn")
    svg = (tmp_path / "roc.svg").read_text()
    labels = table["label"].to_numpy()
    curves = [("prob_fold0", "fold 0"), ("prob_fold2", "fold 2"), ("prob_ensemble", "fold ensemble")]
    for column, name in curves:
        assert f"{name} (AUC = {roc_auc_score(labels, table[column].to_numpy()):.2f})" in svg
    assert "naive_cnn: ROC on 20 held-out test videos" in svg
    # Each fold its own dash pattern (three distinct), beside the ensemble's solid band and the chance line.
    assert len(set(re.findall(r"stroke-dasharray: ([\d.,\s]+)", svg))) >= 3


def test_roc_of_a_one_class_test_set_says_so(tmp_path: Path):
    path, table = _predictions(tmp_path)
    table.with_columns(pl.lit(1).alias("label")).write_parquet(path)
    plot_roc(path, tmp_path / "roc.svg", "svm")
    assert "one class only" in (tmp_path / "roc.svg").read_text()


def _train_metrics(tmp_path: Path, fold: int, epochs: int) -> Path:
    history = [
        {"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_loss": 0.69 - 0.05 * e, "val_auc": 0.5 + 0.1 * e}
        for e in range(epochs)
    ]
    path = tmp_path / f"fold{fold}" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"fold": fold, "best_epoch": epochs - 1, "history": history}))
    return path


def test_training_curves_draw_loss_and_auc_per_fold(tmp_path: Path):
    paths = [_train_metrics(tmp_path, fold, epochs=3) for fold in (0, 1)]
    plot_training(paths, tmp_path / "training.svg", "vit_gru")
    svg = (tmp_path / "training.svg").read_text()
    for text in ("vit_gru: training curves per fold", "fold 0 train", "fold 1 val", "validation AUC"):
        assert text in svg, text


def _infer_metrics(tmp_path: Path) -> Path:
    def scores(auc: float | None) -> dict:
        return {"n": 8, "auc": auc, "accuracy": 0.75, "f1": 0.5, "tn": 4, "fp": 1, "fn": 1, "tp": 2}

    data = {
        "videos": 8,
        "groups": 5,
        "folds": [{"fold": 0, **scores(0.8)}, {"fold": 1, **scores(0.7)}],
        "ensemble": scores(0.9),
        "per_group": {"folds": [scores(0.6), scores(None)], "ensemble": {**scores(1.0), "n": 5}},
    }
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    return path


def test_metrics_table_gives_the_test_videos_and_groups(tmp_path: Path):
    table = metrics_table({"naive_cnn": _infer_metrics(tmp_path)})
    assert table["fold"].to_list() == ["0", "1", "ensemble"]
    assert set(table["videos"]) == {8} and set(table["groups"]) == {5}
    assert table["auc"].to_list() == [0.8, 0.7, 0.9] and table["group_auc"].to_list() == [0.6, None, 1.0]
    page = tmp_path / "metrics.html"
    write_metrics_html({"naive_cnn": _infer_metrics(tmp_path)}, page)
    text = page.read_text()
    assert "test videos</th><th class='num'>groups</th>" in text and "<tr class='ensemble'>" in text


def test_audit_page_highlights_flagged_jobs_and_lists_recommendations():
    row = {
        "job_id": "12",
        "source": "sacct",
        "rule": "train",
        "wildcards": "model=naive_cnn,fold=0",
        "attempt": 1,
        "state": "OUT_OF_MEMORY",
        "req_mem_mb": 1000.0,
        "peak_mem_mb": 1000.0,
        "mem_eff": 100.0,
        "elapsed_s": 61.0,
        "cpu_eff": 80.0,
        "gpus": 0,
        "gpu_peak_mb": None,
        "gpu_util": None,
        "flag": "OOM",
    }
    ok = {**row, "job_id": "13", "rule": "index", "state": "COMPLETED", "mem_eff": 75.0, "flag": ""}
    rec = Recommendation("models", "naive_cnn", "mem_mb", 1000, 1500, "raise-oom", "out of memory")
    page = render_html([row, ok], [rec])
    assert page.count("<tr class='flagged'>") == 1 and page.count("<tr class='ok'>") == 1
    assert "<td class='text'>OOM</td>" in page and "models.naive_cnn.mem_mb" in page and "0:01:01" in page


def chromium() -> str:
    """A chromium on PATH, installed by scripts/install_chromium.sh when there is none (it waits for apt's
    lock; tests/test_apt_scripts.py runs its decision on a PATH without one)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "install_chromium.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr
    return shutil.which("chromium") or pytest.fail(f"{script} ran, but chromium is not on PATH")


def _headless(browser: str, *args: str, tries: int = 3) -> subprocess.CompletedProcess:
    """One headless Chromium call with its own profile folder (two calls sharing one hand the page to a
    lingering browser and wait on it); a call that hangs (seen once in CI under load) is killed with its
    whole process group and tried again."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=8000"]
    flags += ["--no-first-run", "--no-default-browser-check", "--disable-extensions"]
    flags += ["--disable-dev-shm-usage"]
    attempt = 1
    while True:
        with tempfile.TemporaryDirectory() as profile:
            command = [browser, *flags, f"--user-data-dir={profile}", *args]
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
            )
            try:
                out, err = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                if attempt == tries:
                    raise
                attempt += 1
                continue
        assert proc.returncode == 0, err[-2000:]
        return subprocess.CompletedProcess(command, proc.returncode, out, err)


#: Clicks through the report like a user once it loaded: a menu entry by its text, or `eye:N` the N-th
#: "show" button of the open category.
CLICKS = """<script>window.addEventListener('load', () => {
  const steps = %s; let i = 0;
  function next() {
    if (i >= steps.length) return;
    const step = steps[i++];
    const el = step.startsWith('eye:') ? document.querySelectorAll('a[iconname=eye]')[+step.slice(4)]
      : [...document.querySelectorAll('a,li,span,div,td')].filter(e => e.textContent.trim() === step).pop();
    if (el) el.click();
    setTimeout(next, 700);
  }
  setTimeout(next, 700);
});</script>"""


def _clicked(report: Path, steps: list[str], out: Path) -> Path:
    """A copy of the report that clicks `steps` once loaded."""
    text = report.read_text()
    end = text.rfind("</body>")
    out.write_text(text[:end] + CLICKS % json.dumps(steps) + text[end:])
    return out


#: The report's items as a user opens them: per category, (menu label, shown file) in menu order.
ITEMS = {
    "Models": [
        ("metrics table", "metrics.html"),
        ("ROC curves", "logistic_regression.svg"),
        ("training curves", "logistic_regression.svg"),
        ("ROC curves", "naive_cnn.svg"),
        ("training curves", "naive_cnn.svg"),
    ],
    "Memory audit": [("audit table", "audit.html"), ("memory per rule and model", "audit.svg")],
}


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_section(tiny_local_run: Path, tmp_path: Path):
    browser = chromium()
    report = tmp_path / "report.html"
    result = snakemake(tiny_local_run, "--profile", "profiles/local", "--report", str(report))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _headless(browser, f"--screenshot={tmp_path / 'report.png'}", "--window-size=1400,900", report.as_uri())
    for category, items in ITEMS.items():
        menu = _headless(browser, "--dump-dom", _clicked(report, [category], tmp_path / "menu.html").as_uri())
        for label, _ in items:
            assert label in menu.stdout, (category, label)
        for n, (label, name) in enumerate(items):
            page = _clicked(report, [category, f"eye:{n}"], tmp_path / f"{category}-{n}.html")
            dom = _headless(browser, "--dump-dom", page.as_uri()).stdout
            # The item is shown: an SVG figure as an image, an HTML table in a frame.
            tag = "iframe" if name.endswith(".html") else "img"
            assert re.search(rf'<{tag} src="data:[^"]*filename={re.escape(name)};', dom), (category, label)
            shot = tmp_path / f"{category.replace(' ', '_')}-{n}.png"
            _headless(browser, f"--screenshot={shot}", "--window-size=1400,900", page.as_uri())
            assert shot.stat().st_size > 10_000, shot
