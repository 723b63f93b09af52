rule predict:
    # Not part of `all`: `snakemake predict --config 'predict={videos: new_videos}'` scores a folder of new
    # videos (or a video, or a CSV with a `path` column) with every fold of predict.models (else train.models).
    input:
        videos=predict_videos,
        weights=predict_exports,
    output:
        parquet=str(LAYOUT.predict.predictions_parquet),
        csv=str(LAYOUT.predict.predictions_csv),
        rejected=str(LAYOUT.predict.rejected_csv),
    log:
        **rule_logs("predict"),
    benchmark:
        "logs/benchmarks/predict/predict.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: predict_cpus()
    resources:
        mem_mb=rule_mem_mb("predict"),
        runtime=rule_runtime("predict"),
        # Like infer: the models' GPUs (sbatch --gpus), on the GPU partition when they have any.
        gpu=predict_gpus(),
        slurm_partition=partition(config, "gpu" if predict_gpus() else "cpu"),
    params:
        models=predict_models(),
        settings=settings(
            device=config["infer"]["device"],
            batch_size=config["infer"]["batch_size"],
            precision=config["infer"]["precision"],
            clips_per_video=config["infer"]["clips_per_video"],
            ensemble_models=config["predict"]["ensemble_models"],
            check_frames=config["index"]["check_frames"],
            reserved_mb=config["resources"]["snakemake_overhead_mb"],
        ),
    script:
        "../workflow_scripts/predict.py"
