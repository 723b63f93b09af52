from snakemake.utils import min_version

import sys

from fvc.core.config import validate_config
from fvc.slurm.runs import record_run
from fvc.slurm.summary import run_summary

min_version("9.14")


configfile: "config.yaml"


validate_config(config, "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/index.smk"
include: "rules/augment.smk"
include: "rules/folds.smk"
include: "rules/train.smk"
include: "rules/infer.smk"
include: "rules/predict.smk"
include: "rules/audit.smk"


rule all:
    input:
        final_targets(),


onstart:
    # The config this run really uses (config.yaml, --configfile, --config), for `fvc audit` (fvc.slurm.runs).
    record_run(config, workflow.configfiles, log)


onsuccess:
    # Each model's test scores, where the audit and report are, the biggest memory recommendations.
    print(run_summary(config), file=sys.stderr)
