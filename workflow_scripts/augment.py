"""Snakemake adapter for rule `augment`: the shards' clip rows and rejected videos as one table each."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.clips.augment import merge_clips

merge_clips(
    index_parquet=snakemake.input.index,
    shard_clips=list(snakemake.input.clips),
    shard_rejected=list(snakemake.input.rejected),
    out_csv=snakemake.output.clips,
    rejected_csv=snakemake.log.rejected,
    num_augmentations=snakemake.params.num_augmentations,
    memory_log=snakemake.log.memory,
    index_rejected=snakemake.params.index_rejected,
    download_failed=snakemake.params.download_failed,
)
