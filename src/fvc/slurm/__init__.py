"""The memory audit: sacct, the jobs of a run, per-job rows, right-sized mem_mb, plots."""
