"""Evaluation: feature extractors, metrics, and sweeps over loop counts."""
