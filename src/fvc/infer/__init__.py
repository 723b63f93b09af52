"""Inference: pre-flight memory check, fold models one at a time, the ensemble; ROC curves and the metrics
table for the report."""
