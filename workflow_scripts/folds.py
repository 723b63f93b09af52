"""Snakemake adapter for rule `folds`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.clips.folds import make_folds

make_folds(
    clips_csv=snakemake.input.clips,
    out_csv=snakemake.output.folds,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
