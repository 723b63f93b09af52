"""Snakemake adapter for rule `train`."""

from fvc.train.stopping import hold_stop_signals

hold_stop_signals()  # a time-limit warning during start-up waits for training's handlers

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

import sys

from fvc.core.config import model_specs
from fvc.slurm.memory_keys import snakemake_overhead_mb
from fvc.train.stopping import TrainingStopped
from fvc.train.training import train_fold

try:
    train_fold(
        clips_csv=snakemake.input.clips,
        folds_csv=snakemake.input.folds,
        fold=int(snakemake.wildcards.fold),
        spec=model_specs(snakemake.config)[snakemake.wildcards.model],
        out_metrics=snakemake.output.metrics,
        out_weights=snakemake.output.weights,
        checkpoint_dir=snakemake.params.checkpoint_dir,
        memory_log=snakemake.log.memory,
        # Read here, not a param: a change of it alone retrains nothing (like mem_mb).
        snakemake_overhead_mb=snakemake_overhead_mb(snakemake.config),
        log=snakemake.log.main,  # the ranks' of a row with several processes
        **snakemake.params.settings,
    )
except TrainingStopped:  # logged by train_fold; the retry resumes from the checkpoint
    sys.exit(TrainingStopped.exit_code)
