"""Snakemake adapter for rule `download`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.data.download import download_all

download_all(
    snakemake.input.manifest,
    snakemake.params.out_dir,
    snakemake.output.videos,
    failed_csv=snakemake.params.failed,
    chunk_bytes=snakemake.params.chunk_bytes,
    retries=snakemake.params.retries,
    timeout_s=snakemake.params.timeout_s,
    max_failed_fraction=snakemake.params.max_failed_fraction,
    memory_log=snakemake.log.memory,
)
