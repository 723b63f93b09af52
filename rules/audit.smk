rule audit:
    input:
        # After every other job, so the audit sees them all (sacct, or their benchmark files).
        predictions=expand(
            results("infer/{model}/predictions.parquet"), model=TRAIN_MODELS
        ),
        metrics=expand(results("infer/{model}/metrics.json"), model=TRAIN_MODELS),
    output:
        csv=results("audit/audit.csv"),
        parquet=results("audit/audit.parquet"),
        plot=report(
            results("audit/audit.svg"),
            caption="../report/audit.rst",
            category="Memory audit",
        ),
        recommended=results("audit/recommended.yaml"),
        roc=report(
            directory(results("audit/roc")),
            patterns=["{model}.svg"],
            caption="../report/roc.rst",
            category="Models",
            labels={"model": "{model}", "figure": "ROC curves"},
        ),
        metrics=report(
            results("audit/metrics.html"),
            caption="../report/metrics.rst",
            category="Models",
            labels={"model": "all", "figure": "metrics table"},
        ),
    log:
        main="logs/audit/audit.log",
        memory="logs/audit/audit.memory.jsonl",
    benchmark:
        "logs/benchmarks/audit/audit.tsv"
    localrule: True
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("audit"),
        runtime=rule_runtime("audit"),
    params:
        settings=settings(safety_factor=config["audit"]["safety_factor"]),
        models=TRAIN_MODELS,
    script:
        "../workflow_scripts/audit.py"
