rule augment:
    input:
        index=str(LAYOUT.index.parquet),
    output:
        clips=str(LAYOUT.augment.clips_csv),
    log:
        main="logs/augment/augment.log",
        memory="logs/augment/augment.memory.jsonl",
        # A log, not an output: Snakemake keeps it when the job fails, as it does when every video is
        # rejected, and the error points at it.
        rejected=str(LAYOUT.augment.rejected),
    benchmark:
        "logs/benchmarks/augment/augment.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: config["augment"]["decode_threads"]
    resources:
        mem_mb=rule_mem_mb("augment"),
        runtime=rule_runtime("augment"),
        slurm_partition=CPU_PARTITION,
    params:
        # Clips and the row-by-row journal live outside the declared outputs, so a failed or killed
        # job keeps them and the rerun resumes where it stopped.
        clips_dir=beside("clips", "clips"),
        journal=beside("clips", "clips.partial.csv"),
        # Counted in the error when every video is rejected.
        index_rejected=str(LAYOUT.index.rejected),
        download_failed=str(LAYOUT.download.failed_csv),
        settings=settings(
            num_frames=config["augment"]["num_frames"],
            size=config["augment"]["size"],
            num_augmentations=config["augment"]["num_augmentations"],
            seed=config["seed"],
        ),
    script:
        "../workflow_scripts/augment.py"
