"""Which config number sizes each rule's memory, and the per-job Snakemake overhead every request includes."""

from __future__ import annotations

#: Rules sized per model: the key of the model's row (`models.<model>.<key>`); other rules use
#: `resources.<rule>.mem_mb`.
MODEL_KEYS = {"train": "mem_mb", "infer": "infer_mem_mb"}
#: Shard rules sized by their stage's row (`resources.<stage>`), which their merge job shares.
SHARD_ROWS = {"download_shard": "download", "index_shard": "index", "augment_shard": "augment"}
#: Rules outside the model table whose CPUs (threads, sbatch --cpus-per-task) a config key sets: (table, key).
RULE_CPUS = {"augment": ("augment", "decode_threads")}


def resource_row(rule: str) -> str:
    """The `resources` row (or MODEL_KEYS rule) that sizes `rule`: its stage's for a shard rule."""
    return SHARD_ROWS.get(rule, rule)


def configured_mem_mb(config: dict, rule: str, model: str | None) -> int | None:
    """The first-attempt mem_mb the config asks for this rule (and model)."""
    if rule in MODEL_KEYS and model is not None:
        return config.get("models", {}).get(model, {}).get(MODEL_KEYS[rule])
    return config.get("resources", {}).get(resource_row(rule), {}).get("mem_mb")


def snakemake_overhead_mb(config: dict) -> int:
    """Memory (MB) every job carries besides its rule's work: the job step's Snakemake processes
    (`resources.snakemake_overhead_mb`, its default in the config schema)."""
    return config["resources"]["snakemake_overhead_mb"]
