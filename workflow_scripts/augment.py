"""Snakemake adapter for rule `augment`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.clips.augment import augment_all

augment_all(
    snakemake.input.index,
    snakemake.output.clips,
    snakemake.output.rejected,
    clips_dir=snakemake.params.clips_dir,
    journal=snakemake.params.journal,
    num_frames=snakemake.params.num_frames,
    size=snakemake.params.size,
    num_augmentations=snakemake.params.num_augmentations,
    seed=snakemake.params.seed,
    memory_log=snakemake.log.memory,
    decode_threads=snakemake.threads,
)
