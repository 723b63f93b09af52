"""Snakemake adapter for rule `train`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.train.training import train_fold

train_fold(
    snakemake.input.clips,
    snakemake.input.folds,
    int(snakemake.wildcards.fold),
    snakemake.params.spec,
    snakemake.output.metrics,
    snakemake.output.weights,
    snakemake.params.checkpoint_dir,
    device=snakemake.params.device,
    gradient_checkpointing=snakemake.params.gradient_checkpointing,
    seed=snakemake.params.seed,
    memory_log=snakemake.log.memory,
)
