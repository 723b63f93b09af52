"""Snakemake adapter for rule `index`."""

from fvc.joblog import log_to

log_to(snakemake.log.main)

from fvc.probe import build_index

build_index(
    snakemake.input.videos,
    snakemake.output.parquet,
    snakemake.output.csv,
    snakemake.output.rejected,
    memory_log=snakemake.log.memory,
)
