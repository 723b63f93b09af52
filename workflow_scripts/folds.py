"""Snakemake adapter for rule `folds`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.clips.folds import make_folds

make_folds(
    snakemake.input.clips,
    snakemake.output.folds,
    k=snakemake.params.k,
    test_fraction=snakemake.params.test_fraction,
    seed=snakemake.params.seed,
    memory_log=snakemake.log.memory,
)
