"""Snakemake adapter for rule `demo_data`."""

from pathlib import Path

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from fvc.data.demo import make_demo_dataset

make_demo_dataset(
    out_dir=Path(snakemake.output.manifest).parent,
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
