"""Snakemake adapter for rule `folds`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.clips.folds import make_folds

make_folds(
    clips_csv=snakemake.input.clips,
    out_csv=snakemake.output.folds,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
