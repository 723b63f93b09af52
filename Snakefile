from snakemake.utils import min_version

import sys

from fvc.core.config import validate_config
from fvc.slurm.arrays import split_arrays_by_request
from fvc.slurm.plan import check_cached, plan_table
from fvc.slurm.plugin_status import cap_status_interval, recognise_cancelled_jobs
from fvc.slurm.runs import record_run
from fvc.slurm.summary import failure_summary, run_summary, stale_lock_hint

min_version("9.14")


configfile: "config.yaml"


validate_config(config, "config.yaml")
# A job cancelled by anyone (sacct: `CANCELLED by <uid>`) ends for the SLURM plugin too: fvc.slurm.plugin_status.
recognise_cancelled_jobs()
# Status checks at most slurm.max_status_interval_s apart (the plugin's own wait grows to 180 s).
cap_status_interval(config["slurm"]["max_status_interval_s"])
# A job array (profile `slurm-array-jobs`) holds jobs of one request (memory, time, GPUs): fvc.slurm.arrays.
split_arrays_by_request()
# A killed run's lock: say what to do before Snakemake refuses with LockException.
if workflow.is_main_process and (hint := stale_lock_hint()):
    print(hint, file=sys.stderr)


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


onstart:
    # The config this run really uses (config.yaml, --configfile, --config), for `fvc audit` (fvc.slurm.runs).
    record_run(config, workflow.configfiles, log)


onsuccess:
    # Each model's test scores, where the audit and report are, the biggest memory recommendations.
    print(run_summary(config), file=sys.stderr)


onerror:
    # Each failed job with its cause (out of memory, the exception's last line, sbatch's refusal, ...).
    print(failure_summary(log), file=sys.stderr)
