# One `augment_shard` job per shard, from its shard of the index: each writes its videos' clips into the one clips
# folder and resumes from its own journal; `augment` writes clips.csv (any shard count: the same bytes).
AUGMENT_SHARD = LAYOUT.augment.shard("{shard}", SHARDS)


rule augment_shard:
    input:
        index=str(INDEX_SHARD.parquet),
    output:
        clips=str(AUGMENT_SHARD.clips_csv),
        rejected=str(AUGMENT_SHARD.rejected),
    log:
        **rule_logs("augment_shard", shard="{shard}"),
    benchmark:
        "logs/benchmarks/augment_shard/{shard}.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: config["augment"]["decode_threads"]
    resources:
        mem_mb=rule_mem_mb("augment_shard", row="augment"),
        runtime=rule_runtime("augment_shard", row="augment"),
        slurm_partition=CPU_PARTITION,
    params:
        # Clips and the row-by-row journal live outside the declared outputs, so a failed or killed
        # job keeps them and the rerun resumes where it stopped.
        clips_dir=str(LAYOUT.augment.clips_dir),
        journal=beside("clips", "clips.partial.csv"),
        settings=settings(
            num_frames=config["augment"]["num_frames"],
            size=config["augment"]["size"],
            num_augmentations=config["augment"]["num_augmentations"],
            seed=config["seed"],
        ),
    script:
        "../workflow_scripts/augment_shard.py"


rule augment:
    input:
        # The merged index: its merge has checked that some video is left, and it lists every video.
        index=str(LAYOUT.index.parquet),
        clips=expand(str(AUGMENT_SHARD.clips_csv), shard=shards()),
        rejected=expand(str(AUGMENT_SHARD.rejected), shard=shards()),
    output:
        clips=str(LAYOUT.augment.clips_csv),
    log:
        **rule_logs("augment"),
        # A log, not an output: Snakemake keeps it when the job fails, as it does when every video is
        # rejected, and the error points at it.
        rejected=str(LAYOUT.augment.rejected),
    benchmark:
        "logs/benchmarks/augment/augment.tsv"
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("augment"),
        runtime=rule_runtime("augment"),
        slurm_partition=CPU_PARTITION,
    params:
        num_augmentations=config["augment"]["num_augmentations"],
        # Counted in the error when every video is rejected.
        index_rejected=str(LAYOUT.index.rejected),
        download_failed=str(LAYOUT.download.failed_csv),
    script:
        "../workflow_scripts/augment.py"
