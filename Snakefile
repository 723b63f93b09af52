from snakemake.utils import min_version

from fvc.core.config import validate_config

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
include: "rules/audit.smk"


rule all:
    input:
        final_targets(),
