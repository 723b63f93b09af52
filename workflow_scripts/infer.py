"""Snakemake adapter for rule `infer`."""

from fvc.core.joblog import log_to

log_to(snakemake.log.main)

from fvc.infer.inference import infer_model

infer_model(
    snakemake.wildcards.model,
    list(snakemake.input.weights),
    snakemake.input.clips,
    snakemake.input.folds,
    snakemake.output.parquet,
    snakemake.output.csv,
    snakemake.output.metrics,
    device=snakemake.params.device,
    batch_size=snakemake.params.batch_size,
    memory_log=snakemake.log.memory,
    reserved_mb=snakemake.params.reserved_mb,
)
