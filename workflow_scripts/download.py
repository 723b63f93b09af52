"""Snakemake adapter for rule `download`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.download import download_all

manifest = snakemake.input.manifest  # a list of files (dataset.manifest)
download_all(
    manifest=[manifest] if isinstance(manifest, str) else list(manifest),
    out_dir=snakemake.params.out_dir,
    table=snakemake.output.videos,
    failed_csv=snakemake.params.failed,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
