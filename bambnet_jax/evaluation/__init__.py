"""Evaluation: metrics as the literature computes them, and test-set evaluation."""
