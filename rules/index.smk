rule index:
    input:
        videos=str(LAYOUT.download.videos_csv),
    output:
        parquet=str(LAYOUT.index.parquet),
        csv=str(LAYOUT.index.csv),
    log:
        main="logs/index/index.log",
        memory="logs/index/index.memory.jsonl",
        # A log, not an output: Snakemake keeps it when the job fails, as it does when every video is
        # rejected, and the error points at it.
        rejected=str(LAYOUT.index.rejected),
    benchmark:
        "logs/benchmarks/index/index.tsv"
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("index"),
        runtime=rule_runtime("index"),
        slurm_partition=CPU_PARTITION,
    params:
        download_failed=str(LAYOUT.download.failed_csv),
        settings=settings(
            check_frames=config["index"]["check_frames"],
            min_frames=config["index"]["min_frames"],
            clip_frames=config["augment"]["num_frames"],
        ),
    script:
        "../workflow_scripts/index.py"
