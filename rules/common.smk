"""Helpers shared by the rules: paths, the model table, and resources drawn from the config."""

import os
import time
from pathlib import Path

from snakemake.logging import logger

from fvc.core.config import model_specs
from fvc.core.paths import DEMO, Layout, job_logs, member
from fvc.core.joblog import SNAKEMAKE_PID_ENV
from fvc.core.shards import shard_count
from fvc.slurm.partitions import partition
from fvc.slurm.retry import Policy, Request, RetrySizer
from fvc.train.stopping import warning_lead_s, warning_signal_option

# Every stage's files, shared with the `fvc` command.
LAYOUT = Layout(config["results_dir"])
# Fields of a model's row that size its jobs (resources) rather than shape its results: editing them reruns nothing.
RESOURCE_FIELDS = (
    "mem_mb",
    "infer_mem_mb",
    "runtime",
    "gpus",
    "gpu_model",
    "cpus",
    "vram_mb",
)
MODEL_SPECS = model_specs(config, "config.yaml")
TRAIN_MODELS = config["train"]["models"]
# Partition of the jobs that never use a GPU (data stages, audit): fvc.slurm.partitions.
CPU_PARTITION = partition(config, "cpu")
FOLDS = list(range(config["folds"]["k"]))
# Training seeds: the grid is models x folds x SEEDS (train.seeds, else the top-level seed). With one seed the
# paths carry none (fvc.core.paths: results of runs before seeds stay valid); with several, `{seed}` does.
SEEDS = config["train"]["seeds"] or [config["seed"]]
SEED = "{seed}" if len(SEEDS) > 1 else None
# A member's name in the train rule's files: `fold{fold}`, or `fold{fold}-seed{seed}`.
MEMBER = member("{fold}", SEED)
# Shard jobs of download, index and augment (config `shards`; a video's shard: fvc.core.shards.shard_of).
SHARDS = shard_count(config)
# Wall time (minutes) of an infer job's first attempt.
INFER_RUNTIME = 10
# Jobs end when this snakemake process ends (fvc.core.joblog.exit_with_snakemake): no orphans of a killed run.
os.environ[SNAKEMAKE_PID_ENV] = str(os.getpid())
# Requests of retried jobs, sized by why the previous attempt failed (sacct), one line each in the output and in
# logs/retries.csv; only the driver decides (a job's own Snakemake runs within what the driver asked for).
RETRY = RetrySizer(
    ".",
    Policy.from_config(config),
    since=time.time(),
    log_csv=Path("logs", "retries.csv"),
    enabled=not (workflow.remote_exec or workflow.subprocess_exec),
    announce=logger.warning,
)


wildcard_constraints:
    model="|".join(MODEL_SPECS),
    fold=r"\d+",
    seed=r"\d+",
    shard=r"\d+",


def manifest_inputs():
    """The manifest files (dataset.manifest: one file or a list) and, for the demo dataset, the archive
    its manifest points into."""
    if config["dataset"]["demo"]["enabled"]:
        return {
            "manifest": [str(DEMO.manifest)],
            "archive": str(DEMO.archive),
        }
    manifest = config["dataset"]["manifest"]
    return {"manifest": [manifest] if isinstance(manifest, str) else list(manifest)}


def shards():
    """The shard numbers 0 .. SHARDS-1, for `expand`."""
    return list(range(SHARDS))


def rule_logs(rule, **wildcards):
    """A rule's `log:` files, `main` (its text log) and `memory` (its memory log), named as the audit finds
    them (fvc.core.paths.job_logs; a shard rule's name holds this run's shard count)."""
    logs = job_logs(rule, shards=SHARDS, **wildcards)
    return {"main": str(logs.main), "memory": str(logs.memory)}


def rule_request(name, wildcards, attempt, row=None):
    """Request of a rule outside the model table (config `resources`, its own row or else `row`, as a
    merge job takes its stage's), resized on retries."""
    first = config["resources"][row or name]
    return RETRY.request(
        name, wildcards, attempt, Request(first["mem_mb"], first["runtime"])
    )


def rule_mem_mb(name, row=None):
    """mem_mb of a rule outside the model table."""
    return lambda wildcards, attempt: rule_request(name, wildcards, attempt, row).mem_mb


def rule_runtime(name, row=None):
    """runtime (minutes) of a rule outside the model table."""
    return lambda wildcards, attempt: rule_request(
        name, wildcards, attempt, row
    ).runtime


def canonical(value):
    """`value` with every dict's keys sorted, so that its repr depends on the content alone."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def settings(**values):
    """One `params:` value holding every config key a stage reads. Snakemake records the repr of each plain
    params value with the job's outputs, so an edit of any of these keys reruns the stage (the params rerun
    trigger), and the plan's reason shows the keys with their old and new values."""
    return canonical(values)


def model_row(wildcards):
    """The model's row of the per-model table less its resources, as a params value: editing any other
    field (batch split, clip shape, epochs, lr, params...) reruns the model's jobs."""
    row = config["models"][wildcards.model]
    return canonical({k: v for k, v in row.items() if k not in RESOURCE_FIELDS})


def train_request(wildcards, attempt):
    """Training memory and wall time from the model's table row, resized on retries."""
    spec = MODEL_SPECS[wildcards.model]
    logs = rule_logs(
        "train",
        model=wildcards.model,
        member=MEMBER.format(**dict(wildcards.items())),
    )
    return RETRY.request(
        "train",
        wildcards,
        attempt,
        Request(spec.mem_mb, spec.runtime),
        log=logs["main"],
        memory_log=logs["memory"],
    )


def train_seed(wildcards):
    """The training seed of a train job: its `{seed}` in a grid over several seeds, else the one seed."""
    return int(wildcards.seed) if SEED else SEEDS[0]


def train_mem_mb(wildcards, attempt):
    return train_request(wildcards, attempt).mem_mb


def train_runtime(wildcards, attempt):
    return train_request(wildcards, attempt).runtime


def train_warning(wildcards, attempt):
    """sbatch's SIGUSR1 warning `train.signal_before_limit_s` before the time limit, none when that is more
    than a quarter of the limit (`fvc.train.stopping.warning_lead_s`)."""
    lead = config["train"]["signal_before_limit_s"]
    return warning_signal_option(
        warning_lead_s(lead, train_runtime(wildcards, attempt))
    )


def infer_request(wildcards, attempt):
    """Inference memory from the model's table row and INFER_RUNTIME, resized on retries."""
    spec = MODEL_SPECS[wildcards.model]
    return RETRY.request(
        "infer",
        wildcards,
        attempt,
        Request(spec.infer_mem_mb, INFER_RUNTIME),
        memory_log=f"logs/infer/{wildcards.model}.memory.jsonl",
    )


def infer_mem_mb(wildcards, attempt):
    return infer_request(wildcards, attempt).mem_mb


def infer_runtime(wildcards, attempt):
    return infer_request(wildcards, attempt).runtime


def model_gpus(wildcards):
    """GPUs of a model's train and infer jobs (sbatch --gpus; 0 asks for none)."""
    return MODEL_SPECS[wildcards.model].gpus


def model_tasks(wildcards):
    """Processes of a model's train job (sbatch --ntasks; DDP ranks: fvc.train.distributed)."""
    return MODEL_SPECS[wildcards.model].world_size


def model_tasks_per_gpu(wildcards):
    """One task per GPU for a model with GPUs (the plugin's default would be `tasks` per GPU); 0: unset."""
    return 1 if MODEL_SPECS[wildcards.model].gpus else 0


def model_gpu_model(wildcards):
    """The GPU type of a model's jobs (sbatch --gpus=<type>:<n>); empty: any GPU (or none)."""
    spec = MODEL_SPECS[wildcards.model]
    return spec.gpu_model if spec.gpus and spec.gpu_model else ""


def model_cpus(wildcards):
    """CPUs of a model's train and infer jobs (threads: sbatch --cpus-per-task)."""
    return MODEL_SPECS[wildcards.model].cpus


def model_partition(wildcards):
    """The GPU partition for a model with GPUs, else the CPU partition."""
    return partition(config, "gpu" if MODEL_SPECS[wildcards.model].gpus else "cpu")


def member_exports(models):
    """The fp16 exports of every member (fold x seed) of each of `models`, model by model, then fold by fold."""
    return expand(
        str(LAYOUT.exports("{model}").weights("{fold}", SEED)),
        model=models,
        fold=FOLDS,
        seed=SEEDS,
    )


def member_metrics(model):
    """The training metrics of every member (fold x seed) of one model."""
    return expand(
        str(LAYOUT.train(model, "{fold}", SEED).metrics), fold=FOLDS, seed=SEEDS
    )


def fold_exports(wildcards):
    """The fp16 exports of every member (fold x seed) of one model: its ensemble."""
    return member_exports([wildcards.model])


def final_targets():
    """Ensemble predictions of every trained model (and the audit when enabled)."""
    targets = expand(str(LAYOUT.infer("{model}").metrics), model=TRAIN_MODELS)
    if config["audit"]["enabled"]:
        targets.append(str(LAYOUT.audit.csv))
    return targets


def beside(output_name, name):
    """A params function: the path `name` in the folder of output `output_name` (e.g. a journal or work dir)."""
    return lambda wildcards, output: str(Path(output[output_name]).parent / name)


def predict_models():
    """The models `predict` scores with: predict.models, else train.models."""
    return list(config["predict"]["models"] or TRAIN_MODELS)


def predict_gpus():
    """GPUs of the `predict` job: the most any of its models' rows asks for."""
    return max(MODEL_SPECS[model].gpus for model in predict_models())


def predict_cpus():
    """CPUs of the `predict` job: the most any of its models' rows asks for."""
    return max(MODEL_SPECS[model].cpus for model in predict_models())


def predict_videos(wildcards):
    """predict.videos: what the `predict` target scores (asked for only when it runs)."""
    videos = config["predict"]["videos"]
    if videos is None:
        raise ValueError(
            "predict.videos is not set; e.g. "
            "snakemake predict --config 'predict={videos: new_videos}'"
        )
    return videos


def predict_exports(wildcards):
    """The fp16 exports of every member (fold x seed) of every model `predict` scores with, model by model."""
    return member_exports(predict_models())
