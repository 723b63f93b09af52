# One `index_shard` job per shard (shards.count: a video's shard comes from its id), each capped, logged and rerun
# on its own; `index` writes the one index with rows in the order of videos.csv (any shard count: the
# same bytes).
INDEX_SHARD = LAYOUT.index.shard("{shard}", SHARDS)


rule index_shard:
    input:
        videos=str(LAYOUT.download.videos_csv),
    output:
        parquet=str(INDEX_SHARD.parquet),
        rejected=str(INDEX_SHARD.rejected),
    log:
        **rule_logs("index_shard", shard="{shard}"),
    benchmark:
        "logs/benchmarks/index_shard/{shard}.tsv"
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("index_shard", row="index"),
        runtime=rule_runtime("index_shard", row="index"),
        slurm_partition=CPU_PARTITION,
    params:
        shards=SHARDS,
        settings=settings(
            check_frames=config["index"]["check_frames"],
            min_frames=config["index"]["min_frames"],
            clip_frames=config["augment"]["num_frames"],
        ),
    script:
        "../workflow_scripts/index_shard.py"


rule index:
    input:
        videos=str(LAYOUT.download.videos_csv),
        parquets=expand(str(INDEX_SHARD.parquet), shard=shards()),
        rejected=expand(str(INDEX_SHARD.rejected), shard=shards()),
    output:
        parquet=str(LAYOUT.index.parquet),
        csv=str(LAYOUT.index.csv),
    log:
        **rule_logs("index"),
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
    script:
        "../workflow_scripts/index.py"
