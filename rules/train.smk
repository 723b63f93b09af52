import contextlib
import signal

import psutil


def stop_signal_option(seconds):
    """sbatch's warning signal before the time limit, none for 0."""
    return f"--signal=USR1@{seconds}" if seconds else ""


def forward_to_jobs(signum, frame):
    """Pass a signal on to the Python processes this snakemake started (the job's training)."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "python" in child.name():
                child.send_signal(signum)


# SLURM sends the warning to the job step's task only: on a node that is the snakemake running the job
# (measured: USR1's default action ended it, and the step with it, and never reached the training process
# it started). This snakemake passes it on to its jobs; training handles it (fvc.train.stopping).
signal.signal(signal.SIGUSR1, forward_to_jobs)


rule train:
    input:
        clips=str(LAYOUT.augment.clips_csv),
        folds=str(LAYOUT.folds.folds_csv),
    output:
        metrics=str(LAYOUT.train("{model}", "{fold}").metrics),
        weights=str(LAYOUT.exports("{model}").weights("{fold}")),
        export_config=str(LAYOUT.exports("{model}").config("{fold}")),
    log:
        main="logs/train/{model}/fold{fold}.log",
        memory="logs/train/{model}/fold{fold}.memory.jsonl",
    benchmark:
        "logs/benchmarks/train/{model}/fold{fold}.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: model_cpus
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        # The model row's GPUs and type (sbatch --gpus), on the GPU partition when it has GPUs.
        gpu=model_gpus,
        gpu_model=model_gpu_model,
        slurm_partition=model_partition,
        # SIGUSR1 to the job's steps (not `B:`, the batch shell only) before the time limit: training writes a
        # step checkpoint and exits; the retry resumes from it (docs/slurm.md "Time limits and preemption").
        slurm_extra=stop_signal_option(config["train"]["signal_before_limit_s"]),
    params:
        # Epoch checkpoints are not declared outputs: a killed or requeued job resumes from them.
        checkpoint_dir=beside("metrics", "checkpoints"),
        # The model's row less its resources (the job reads the same row from the config): Snakemake records
        # it, so an edit of any of its fields retrains the model.
        model=model_row,
        settings=settings(
            device=config["train"]["device"],
            precision=config["train"]["precision"],
            seed=config["seed"],
        ),
    script:
        "../workflow_scripts/train.py"
