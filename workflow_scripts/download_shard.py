"""Snakemake adapter for rule `download_shard`: one shard of the download."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.download import download_shard

manifest = snakemake.input.manifest  # a list of files (dataset.manifest)
download_shard(
    manifest=[manifest] if isinstance(manifest, str) else list(manifest),
    out_dir=snakemake.params.out_dir,
    table=snakemake.output.videos,
    failed_csv=snakemake.output.failed,
    sites_dir=snakemake.params.sites,
    shard=int(snakemake.wildcards.shard),
    count=snakemake.params.shards,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
