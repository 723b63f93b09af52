rule infer:
    input:
        # Each fold{fold}.safetensors is a valid safetensors file: the weights, or (sharded export) an empty
        # one whose metadata names fold{fold}.safetensors.index.json, the shards' index next to it.
        weights=fold_exports,
        clips=results("augment/clips.csv"),
        folds=results("folds/folds.csv"),
    output:
        parquet=results("infer/{model}/predictions.parquet"),
        csv=results("infer/{model}/predictions.csv"),
        metrics=results("infer/{model}/metrics.json"),
    log:
        main="logs/infer/{model}.log",
        memory="logs/infer/{model}.memory.jsonl",
    benchmark:
        "logs/benchmarks/infer/{model}.tsv"
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=infer_mem_mb,
        runtime=10,
    params:
        settings=settings(
            device=config["infer"]["device"],
            batch_size=config["infer"]["batch_size"],
            # MB of the job's cap left to its two Snakemake processes by the pre-flight memory check.
            reserved_mb=config["resources"]["snakemake_overhead_mb"],
        ),
    script:
        "../workflow_scripts/infer.py"
