"""Snakemake adapter for rule `index`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.index import build_index

build_index(
    videos_csv=snakemake.input.videos,
    out_parquet=snakemake.output.parquet,
    out_csv=snakemake.output.csv,
    rejected_csv=snakemake.log.rejected,
    memory_log=snakemake.log.memory,
    download_failed=snakemake.params.download_failed,
    **snakemake.params.settings,
)
