rule audit:
    input:
        # After every other job, so the audit sees them all (sacct, or their benchmark files).
        predictions=expand(
            str(LAYOUT.infer("{model}").predictions_parquet), model=TRAIN_MODELS
        ),
        metrics=expand(str(LAYOUT.infer("{model}").metrics), model=TRAIN_MODELS),
        train=[path for model in TRAIN_MODELS for path in member_metrics(model)],
    output:
        csv=str(LAYOUT.audit.csv),
        parquet=str(LAYOUT.audit.parquet),
        plot=report(
            str(LAYOUT.audit.plot),
            caption="../report/audit.rst",
            category="Memory audit",
            labels={"figure": "memory per rule and model"},
        ),
        table=report(
            str(LAYOUT.audit.table_html),
            caption="../report/audit_table.rst",
            category="Memory audit",
            labels={"figure": "audit table"},
        ),
        recommended=str(LAYOUT.audit.recommended),
        roc=report(
            directory(str(LAYOUT.audit.roc_dir)),
            patterns=["{model}.svg"],
            caption="../report/roc.rst",
            category="Models",
            labels={"model": "{model}", "figure": "ROC curves"},
        ),
        training=report(
            directory(str(LAYOUT.audit.training_dir)),
            patterns=["{model}.svg"],
            caption="../report/training.rst",
            category="Models",
            labels={"model": "{model}", "figure": "training curves"},
        ),
        metrics=report(
            str(LAYOUT.audit.metrics_html),
            caption="../report/metrics.rst",
            category="Models",
            labels={"model": "all", "figure": "metrics table"},
        ),
    log:
        **rule_logs("audit"),
    benchmark:
        "logs/benchmarks/audit/audit.tsv"
    localrule: True
    conda:
        "../envs/fvc.yaml"
    resources:
        mem_mb=rule_mem_mb("audit"),
        runtime=rule_runtime("audit"),
        slurm_partition=CPU_PARTITION,
    params:
        settings=settings(safety_factor=config["audit"]["safety_factor"]),
        models=TRAIN_MODELS,
        train_metrics={model: member_metrics(model) for model in TRAIN_MODELS},
    script:
        "../workflow_scripts/audit.py"
