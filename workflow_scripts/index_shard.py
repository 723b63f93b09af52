"""Snakemake adapter for rule `index_shard`: one shard of the videos."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.index import index_shard

index_shard(
    videos_csv=snakemake.input.videos,
    shard=int(snakemake.wildcards.shard),
    count=snakemake.params.shards,
    out_parquet=snakemake.output.parquet,
    rejected_csv=snakemake.output.rejected,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
