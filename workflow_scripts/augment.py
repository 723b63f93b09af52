"""Snakemake adapter for rule `augment`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.clips.augment import augment_all

augment_all(
    index_parquet=snakemake.input.index,
    out_csv=snakemake.output.clips,
    rejected_csv=snakemake.log.rejected,
    clips_dir=snakemake.params.clips_dir,
    journal=snakemake.params.journal,
    memory_log=snakemake.log.memory,
    index_rejected=snakemake.params.index_rejected,
    download_failed=snakemake.params.download_failed,
    decode_threads=snakemake.threads,
    **snakemake.params.settings,
)
