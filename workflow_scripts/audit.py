"""Snakemake adapter for rule `audit`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.slurm.audit import audit_workflow

audit_workflow(
    workdir=".",
    out_csv=snakemake.output.csv,
    out_parquet=snakemake.output.parquet,
    config=dict(snakemake.config),
    config_name="the running workflow's config",
    plot=snakemake.output.plot,
    snippet_path=snakemake.output.recommended,
    memory_log=snakemake.log.memory,
    predictions=dict(zip(snakemake.params.models, snakemake.input.predictions, strict=True)),
    roc_dir=snakemake.output.roc,
    metrics_html=snakemake.output.metrics,
    train_metrics=snakemake.params.train_metrics,
    training_dir=snakemake.output.training,
    audit_html=snakemake.output.table,
    **snakemake.params.settings,
)
