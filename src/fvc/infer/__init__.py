"""Inference: pre-flight memory check, fold models one at a time, the ensemble."""
