rule train:
    input:
        clips=results("augment/clips.csv"),
        folds=results("folds/folds.csv"),
    output:
        metrics=results("train/{model}/fold{fold}/metrics.json"),
        weights=results("models/{model}/fold{fold}.safetensors"),
        export_config=results("models/{model}/fold{fold}.json"),
    log:
        main="logs/train/{model}/fold{fold}.log",
        memory="logs/train/{model}/fold{fold}.memory.jsonl",
    benchmark:
        "logs/benchmarks/train/{model}/fold{fold}.tsv"
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        # Epoch checkpoints are not declared outputs: a killed or requeued job resumes from them.
        checkpoint_dir=beside("metrics", "checkpoints"),
        # The model's row less its resources (the job reads the same row from the config): Snakemake records
        # it, so an edit of any of its fields retrains the model.
        model=model_row,
        settings=settings(
            device=config["train"]["device"],
            gradient_checkpointing=config["train"]["gradient_checkpointing"],
            seed=config["seed"],
        ),
    script:
        "../workflow_scripts/train.py"
