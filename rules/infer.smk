rule infer:
    input:
        # Each fold{fold}.safetensors is a valid safetensors file: the weights, or (split export) an empty one
        # whose metadata names fold{fold}.safetensors.index.json, the index of its parts (and shared/ files).
        weights=fold_exports,
        # The test videos' files: each is scored from infer.clips_per_video clips decoded from it.
        index=str(LAYOUT.index.parquet),
        folds=str(LAYOUT.folds.folds_csv),
    output:
        parquet=str(LAYOUT.infer("{model}").predictions_parquet),
        csv=str(LAYOUT.infer("{model}").predictions_csv),
        metrics=str(LAYOUT.infer("{model}").metrics),
    log:
        **rule_logs("infer", model="{model}"),
    benchmark:
        "logs/benchmarks/infer/{model}.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: model_cpus
    resources:
        mem_mb=infer_mem_mb,
        runtime=infer_runtime,
        # The model row's GPUs and type (sbatch --gpus), on the GPU partition when it has GPUs.
        gpu=model_gpus,
        gpu_model=model_gpu_model,
        slurm_partition=model_partition,
    params:
        settings=settings(
            device=config["infer"]["device"],
            batch_size=config["infer"]["batch_size"],
            precision=config["infer"]["precision"],
            clips_per_video=config["infer"]["clips_per_video"],
            # MB of the job's cap left to its two Snakemake processes by the pre-flight memory check.
            reserved_mb=config["resources"]["snakemake_overhead_mb"],
        ),
    script:
        "../workflow_scripts/infer.py"
