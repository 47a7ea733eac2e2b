"""Evaluation: inference, metrics, threshold tuning and the JSON + HTML report."""
