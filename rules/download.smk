# Download shard jobs (SHARDS, rules/common.smk) run as local rules, like the merge (compute nodes often have no
# internet; on one node the shards' per-site politeness always holds).
# The shards' settings: every download key but the merge's max_failed_fraction.
FETCH_SETTINGS = {
    key: value
    for key, value in config["download"].items()
    if key != "max_failed_fraction"
}


rule demo_data:
    output:
        manifest=str(DEMO.manifest),
        archive=str(DEMO.archive),
    log:
        **rule_logs("demo_data"),
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


rule download_shard:
    input:
        **manifest_inputs(),
    output:
        videos=str(LAYOUT.download.shard("{shard}", SHARDS).videos_csv),
        failed=str(LAYOUT.download.shard("{shard}", SHARDS).failed_csv),
    log:
        **rule_logs("download_shard", shard="{shard}"),
    benchmark:
        "logs/benchmarks/download_shard/{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    localrule: True
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("download_shard", row="download"),
        runtime=rule_runtime("download_shard", row="download"),
        slurm_partition=CPU_PARTITION,
    params:
        out_dir=str(LAYOUT.download.videos_dir),
        sites=str(LAYOUT.download.sites_dir),
        shards=SHARDS,
        settings=settings(labels=config["dataset"]["labels"], **FETCH_SETTINGS),
    script:
        "../workflow_scripts/download_shard.py"


rule download:
    input:
        **manifest_inputs(),
        videos=expand(
            str(LAYOUT.download.shard("{shard}", SHARDS).videos_csv),
            shard=shards(),
        ),
        failed=expand(
            str(LAYOUT.download.shard("{shard}", SHARDS).failed_csv),
            shard=shards(),
        ),
    output:
        videos=str(LAYOUT.download.videos_csv),
    log:
        **rule_logs("download"),
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
        settings=settings(
            labels=config["dataset"]["labels"],
            max_failed_fraction=config["download"]["max_failed_fraction"],
        ),
    script:
        "../workflow_scripts/download.py"
