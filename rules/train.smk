from fvc.train.stopping import forward_stop_signals_to_jobs

# SLURM signals a job step's task only: on a node, the snakemake running the job. It passes SIGUSR1 and SIGTERM
# on to the job (docs/slurm.md "Time limits and preemption").
forward_stop_signals_to_jobs()


rule train:
    input:
        clips=str(LAYOUT.augment.clips_csv),
        folds=str(LAYOUT.folds.folds_csv),
    output:
        metrics=str(LAYOUT.train("{model}", "{fold}", SEED).metrics),
        weights=str(LAYOUT.exports("{model}").weights("{fold}", SEED)),
        export_config=str(LAYOUT.exports("{model}").config("{fold}", SEED)),
    log:
        # MEMBER: fold{fold}, or fold{fold}-seed{seed} in a grid over several seeds (rules/common.smk).
        **rule_logs("train", model="{model}", member=MEMBER),
    benchmark:
        f"logs/benchmarks/train/{{model}}/{MEMBER}.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: model_cpus
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        # The model row's GPUs and type (sbatch --gpus), on the GPU partition when it has GPUs.
        gpu=model_gpus,
        gpu_model=model_gpu_model,
        # Processes of the job (a row's tasks, or one per GPU): srun starts them inside the allocation.
        tasks=model_tasks,
        tasks_per_gpu=model_tasks_per_gpu,
        slurm_partition=model_partition,
        # SIGUSR1 to the job's steps (not `B:`, the batch shell only) before the time limit: training writes a
        # step checkpoint and exits; the retry resumes from it (docs/slurm.md "Time limits and preemption").
        slurm_extra=train_warning,
    params:
        # Epoch checkpoints are not declared outputs: a killed or requeued job resumes from them.
        checkpoint_dir=beside("metrics", "checkpoints"),
        # The model's row less its resources (the job reads the same row from the config): Snakemake records
        # it, so an edit of any of its fields retrains the model.
        model=model_row,
        # The job's training seed (init, data order; clips and folds keep the top-level seed): an edit retrains.
        settings=lambda wildcards: settings(
            device=config["train"]["device"],
            precision=config["train"]["precision"],
            seed=train_seed(wildcards),
        ),
    script:
        "../workflow_scripts/train.py"
