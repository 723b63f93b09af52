rule augment:
    input:
        index=str(LAYOUT.index.parquet),
    output:
        clips=str(LAYOUT.augment.clips_csv),
        rejected=str(LAYOUT.augment.rejected),
    log:
        main="logs/augment/augment.log",
        memory="logs/augment/augment.memory.jsonl",
    benchmark:
        "logs/benchmarks/augment/augment.tsv"
    conda:
        "../envs/fvc.yaml"
    threads: config["augment"]["decode_threads"]
    resources:
        mem_mb=rule_mem_mb("augment"),
        runtime=rule_runtime("augment"),
    params:
        # Clips and the row-by-row journal live outside the declared outputs, so a failed or killed
        # job keeps them and the rerun resumes where it stopped.
        clips_dir=beside("clips", "clips"),
        journal=beside("clips", "clips.partial.csv"),
        settings=settings(
            num_frames=config["augment"]["num_frames"],
            size=config["augment"]["size"],
            num_augmentations=config["augment"]["num_augmentations"],
            seed=config["seed"],
        ),
    script:
        "../workflow_scripts/augment.py"
