from snakemake.utils import min_version

import sys

from fvc.core.config import validate_config
from fvc.slurm.plan import check_cached, plan_table
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


# Memory before the first run (`fvc plan`): the main process (not a job's) prints every job's mem_mb beside
# the predictions `fvc plan` cached under results_dir/plan/ (read only: no probe, milliseconds; nothing when
# none is cached) and stops before anything is submitted, dry run included, when a request is below one.
if workflow.is_main_process:
    if table := plan_table(config):
        print(table, file=sys.stderr)
    check_cached(config)


rule all:
    input:
        final_targets(),


onsuccess:
    # Each model's test scores, where the audit and report are, the biggest memory recommendations.
    print(run_summary(config), file=sys.stderr)
