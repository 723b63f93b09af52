"""Snakemake adapter for rule `index`: the shards' index and rejected files as one, in input order."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.index import merge_index

merge_index(
    videos_csv=snakemake.input.videos,
    shard_parquets=list(snakemake.input.parquets),
    shard_rejected=list(snakemake.input.rejected),
    out_parquet=snakemake.output.parquet,
    out_csv=snakemake.output.csv,
    rejected_csv=snakemake.log.rejected,
    memory_log=snakemake.log.memory,
    download_failed=snakemake.params.download_failed,
)
