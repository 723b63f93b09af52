"""Snakemake adapter for rule `index`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.data.index import build_index

build_index(
    snakemake.input.videos,
    snakemake.output.parquet,
    snakemake.output.csv,
    snakemake.output.rejected,
    memory_log=snakemake.log.memory,
)
