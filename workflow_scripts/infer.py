"""Snakemake adapter for rule `infer`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.infer.inference import infer_model

infer_model(
    model_name=snakemake.wildcards.model,
    weights=list(snakemake.input.weights),
    index_parquet=snakemake.input.index,
    folds_csv=snakemake.input.folds,
    out_parquet=snakemake.output.parquet,
    out_csv=snakemake.output.csv,
    out_metrics=snakemake.output.metrics,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
