"""The workflow's file layout: the files each stage reads and writes, from the results folder.

The same paths serve the rules and the `fvc` command. Arguments may be Snakemake wildcards:
`Layout("results").train("{model}", "{fold}").metrics` is `results/train/{model}/fold{fold}/metrics.json`.

A training grid over several seeds (`train.seeds`) adds the seed to each member's name:
`fold{fold}-seed{seed}` (its training folder, export and logs); with one seed (the default) the names are
`fold{fold}`, as before seeds existed, so that existing results stay valid.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: A member's name (`fold0`, `fold0-seed7`), the stem of its export.
MEMBER_RE = re.compile(r"fold(?P<fold>\d+)(?:-seed(?P<seed>\d+))?")


def member(fold: int | str, seed: int | str | None = None) -> str:
    """The name of one ensemble member (a fold's model trained with one seed): `fold{fold}`, or
    `fold{fold}-seed{seed}` in a grid over several seeds (`seed` None)."""
    return f"fold{fold}" if seed is None else f"fold{fold}-seed{seed}"


def parse_member(path: str | os.PathLike[str]) -> tuple[int, int | None] | None:
    """(fold, seed) of an export (`.../fold0-seed7.safetensors` -> (0, 7); seed None without one); None
    when the name is no member's."""
    match = MEMBER_RE.fullmatch(Path(path).name.split(".", 1)[0])
    if match is None:
        return None
    return int(match["fold"]), None if match["seed"] is None else int(match["seed"])


@dataclass(frozen=True)
class DemoFiles:
    """`demo_data`'s folder: the manifest and the archive it points into."""

    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.csv"

    @property
    def archive(self) -> Path:
        return self.path / "fvc_demo.tar.gz"


DEMO = DemoFiles(Path("resources/demo"))


def shard_folder(stage: Path, shard: int | str, count: int) -> Path:
    """Shard `shard` of `count`'s folder in a stage's folder: `shards/<shard>of<count>`. The count is part of
    the name, so a run with another count never takes a shard of the old one for its own."""
    return stage / "shards" / f"{shard}of{count}"


#: The shard jobs' rules and their stages: a shard job's logs are `logs/<stage>/shard<k>of<N>.*`.
SHARD_RULES = {"download_shard": "download", "index_shard": "index", "augment_shard": "augment"}


@dataclass(frozen=True)
class JobLogs:
    """One job's logs: its text log and its memory log (fvc.core.memory), `<stem>.log` and
    `<stem>.memory.jsonl`."""

    stem: Path

    @property
    def main(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}.log")

    @property
    def memory(self) -> Path:
        return self.stem.with_name(f"{self.stem.name}.memory.jsonl")


def job_logs(
    rule: str,
    *,
    model: str | None = None,
    member: str | None = None,
    shard: int | str | None = None,
    shards: int | str | None = None,
) -> JobLogs:
    """The logs of a job of `rule` under `logs/` (the rules' `log:` and the audit read the same names):
    `train/<model>/<member>`, `infer/<model>`, a shard job's `<stage>/shard<shard>of<shards>` (SHARD_RULES:
    the count is in the name, as in its folder), any other rule's `<rule>/<rule>`. Arguments may be
    Snakemake wildcards (`shard="{shard}"`) or glob patterns (`shards="*"`)."""
    if rule == "train":
        stem = Path("logs", "train", str(model), str(member))
    elif rule == "infer":
        stem = Path("logs", "infer", str(model))
    elif rule in SHARD_RULES:
        stem = Path("logs", SHARD_RULES[rule], f"shard{shard}of{shards}")
    else:
        stem = Path("logs", rule, rule)
    return JobLogs(stem)


@dataclass(frozen=True)
class DownloadShardFiles:
    """One download shard's tables: its stored videos and its failed entries with their reasons."""

    path: Path

    @property
    def videos_csv(self) -> Path:
        return self.path / "videos.csv"

    @property
    def failed_csv(self) -> Path:
        return self.path / "failed.csv"


@dataclass(frozen=True)
class DownloadFiles:
    """`download`'s folder: the videos, their table, the entries that failed, the shards' tables and the
    per-site politeness state the shards share."""

    path: Path

    @property
    def videos_csv(self) -> Path:
        return self.path / "videos.csv"

    @property
    def videos_dir(self) -> Path:
        return self.path / "videos"

    @property
    def failed_csv(self) -> Path:
        return self.path / "failed.csv"

    @property
    def sites_dir(self) -> Path:
        return self.path / "sites"

    def shard(self, shard: int | str, count: int) -> DownloadShardFiles:
        return DownloadShardFiles(self.path / "shards" / f"{shard}-of-{count}")


@dataclass(frozen=True)
class IndexFiles:
    """`index`'s folder: the video index (parquet and csv) and the rejected files."""

    path: Path

    @property
    def parquet(self) -> Path:
        return self.path / "video_index.parquet"

    @property
    def csv(self) -> Path:
        return self.path / "video_index.csv"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected.csv"

    def shard(self, shard: int | str, count: int) -> IndexShardFiles:
        return IndexShardFiles(shard_folder(self.path, shard, count))


@dataclass(frozen=True)
class IndexShardFiles:
    """One `index` shard's folder: the index of its videos (parquet) and its rejected files."""

    path: Path

    @property
    def parquet(self) -> Path:
        return self.path / "video_index.parquet"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected.csv"


@dataclass(frozen=True)
class AugmentShardFiles:
    """One `augment` shard's folder: the clip rows of its videos, its rejected videos and the journal it
    resumes from (its clips go to the stage's one clips folder)."""

    path: Path

    @property
    def clips_csv(self) -> Path:
        return self.path / "clips.csv"

    @property
    def rejected(self) -> Path:
        return self.path / "rejected.csv"

    @property
    def journal(self) -> Path:
        return self.path / "clips.partial.csv"


@dataclass(frozen=True)
class AugmentFiles(AugmentShardFiles):
    """`augment`'s folder: the clip table, the rejected videos, the clips and the journal they resume from."""

    @property
    def clips_dir(self) -> Path:
        return self.path / "clips"

    def shard(self, shard: int | str, count: int) -> AugmentShardFiles:
        return AugmentShardFiles(shard_folder(self.path, shard, count))


@dataclass(frozen=True)
class FoldsFiles:
    """`folds`'s folder: the fold table."""

    path: Path

    @property
    def folds_csv(self) -> Path:
        return self.path / "folds.csv"


@dataclass(frozen=True)
class TrainFiles:
    """One (model, fold)'s training folder: its metrics and the epoch checkpoints it resumes from."""

    path: Path

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"


@dataclass(frozen=True)
class ExportFiles:
    """One model's fp16 exports, one per member (fold, and seed in a grid over seeds), each with its config
    JSON."""

    path: Path

    def weights(self, fold: int | str, seed: int | str | None = None) -> Path:
        return self.path / f"{member(fold, seed)}.safetensors"

    def config(self, fold: int | str, seed: int | str | None = None) -> Path:
        return self.path / f"{member(fold, seed)}.json"


@dataclass(frozen=True)
class PredictionFiles:
    """A folder of per-video predictions (parquet + CSV)."""

    path: Path

    @property
    def predictions_parquet(self) -> Path:
        return self.path / "predictions.parquet"

    @property
    def predictions_csv(self) -> Path:
        return self.path / "predictions.csv"


@dataclass(frozen=True)
class InferFiles(PredictionFiles):
    """One model's inference folder: predictions and metrics."""

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"


@dataclass(frozen=True)
class PredictFiles(PredictionFiles):
    """`predict`'s folder: each new video's probability and label per model, and the videos it rejected."""

    @property
    def rejected_csv(self) -> Path:
        return self.path / "rejected.csv"


@dataclass(frozen=True)
class AuditFiles:
    """`audit`'s folder: the table, its plot, the right-sized memory, ROC curves and the metrics page."""

    path: Path

    @property
    def csv(self) -> Path:
        return self.path / "audit.csv"

    @property
    def parquet(self) -> Path:
        return self.path / "audit.parquet"

    @property
    def plot(self) -> Path:
        return self.path / "audit.svg"

    @property
    def recommended(self) -> Path:
        return self.path / "recommended.yaml"

    @property
    def roc_dir(self) -> Path:
        return self.path / "roc"

    @property
    def metrics_html(self) -> Path:
        return self.path / "metrics.html"

    @property
    def training_dir(self) -> Path:
        return self.path / "training"

    @property
    def table_html(self) -> Path:
        return self.path / "audit.html"


@dataclass(frozen=True)
class Layout:
    """Every stage's folder under one results folder (the config's `results_dir`)."""

    results: str | Path

    @property
    def download(self) -> DownloadFiles:
        return DownloadFiles(Path(self.results) / "download")

    @property
    def index(self) -> IndexFiles:
        return IndexFiles(Path(self.results) / "index")

    @property
    def augment(self) -> AugmentFiles:
        return AugmentFiles(Path(self.results) / "augment")

    @property
    def folds(self) -> FoldsFiles:
        return FoldsFiles(Path(self.results) / "folds")

    def train(self, model: str, fold: int | str, seed: int | str | None = None) -> TrainFiles:
        return TrainFiles(Path(self.results) / "train" / model / member(fold, seed))

    def exports(self, model: str) -> ExportFiles:
        return ExportFiles(Path(self.results) / "models" / model)

    def infer(self, model: str) -> InferFiles:
        return InferFiles(Path(self.results) / "infer" / model)

    @property
    def predict(self) -> PredictFiles:
        return PredictFiles(Path(self.results) / "predict")

    @property
    def audit(self) -> AuditFiles:
        return AuditFiles(Path(self.results) / "audit")
