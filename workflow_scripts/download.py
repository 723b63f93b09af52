"""Snakemake adapter for rule `download`: the merge of the download shards' tables."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.download import merge_shards

manifest = snakemake.input.manifest  # a list of files (dataset.manifest)
merge_shards(
    manifest=[manifest] if isinstance(manifest, str) else list(manifest),
    out_dir=snakemake.params.out_dir,
    shards=list(zip(snakemake.input.videos, snakemake.input.failed, strict=True)),
    table=snakemake.output.videos,
    failed_csv=snakemake.params.failed,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
