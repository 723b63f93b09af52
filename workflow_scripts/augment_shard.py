"""Snakemake adapter for rule `augment_shard`: the clips of one shard's videos."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.clips.augment import augment_shard

augment_shard(
    index_parquet=snakemake.input.index,
    out_csv=snakemake.output.clips,
    rejected_csv=snakemake.output.rejected,
    clips_dir=snakemake.params.clips_dir,
    journal=snakemake.params.journal,
    memory_log=snakemake.log.memory,
    decode_threads=snakemake.threads,
    **snakemake.params.settings,
)
