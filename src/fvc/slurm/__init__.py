"""The memory audit: which jobs a run made (`jobs`), their sacct records (`sacct`), per-job rows (`rows`),
right-sized mem_mb (`recommend`, `memory_keys`), the terminal table (`render`), the plot (`plots`), and the
orchestration (`audit`)."""
