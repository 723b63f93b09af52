rule demo_data:
    output:
        manifest=str(DEMO.manifest),
        archive=str(DEMO.archive),
    log:
        main="logs/demo_data/demo_data.log",
        memory="logs/demo_data/demo_data.memory.jsonl",
    benchmark:
        "logs/benchmarks/demo_data/demo_data.tsv"
    localrule: True
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("demo_data"),
        runtime=rule_runtime("demo_data"),
        slurm_partition=CPU_PARTITION,
    params:
        settings=settings(
            videos=config["dataset"]["demo"]["videos"],
            seed=config["dataset"]["demo"]["seed"],
        ),
    script:
        "../workflow_scripts/demo_data.py"


rule download:
    input:
        **manifest_inputs(),
    output:
        videos=str(LAYOUT.download.videos_csv),
    log:
        main="logs/download/download.log",
        memory="logs/download/download.memory.jsonl",
    benchmark:
        "logs/benchmarks/download/download.tsv"
    localrule: True
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("download"),
        runtime=rule_runtime("download"),
        slurm_partition=CPU_PARTITION,
    params:
        out_dir=beside("videos", "videos"),
        failed=beside("videos", "failed.csv"),  # and failed_summary.json beside it
        settings=settings(labels=config["dataset"]["labels"], **config["download"]),
    script:
        "../workflow_scripts/download.py"
