"""Snakemake adapter for rule `predict`."""

from fvc.core.joblog import exit_with_snakemake, log_to

log_to(snakemake.log.main)
exit_with_snakemake()

from pathlib import Path

from fvc.core.paths import PredictFiles
from fvc.infer.predict import format_predictions, predict_all

folds = len(snakemake.input.weights) // len(snakemake.params.models)
weights = list(snakemake.input.weights)
exports = {model: weights[i * folds : (i + 1) * folds] for i, model in enumerate(snakemake.params.models)}
table, rejected = predict_all(
    inputs=[snakemake.input.videos],
    exports=exports,
    out=PredictFiles(Path(snakemake.output.parquet).parent),
    memory_log=snakemake.log.memory,
    **snakemake.params.settings,
)
print(format_predictions(table, rejected))
