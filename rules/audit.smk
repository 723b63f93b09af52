rule audit:
    output:
        csv=results("audit/audit.csv"),
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
        safety_factor=config["audit"]["safety_factor"],
    script:
        "../workflow_scripts/audit.py"
