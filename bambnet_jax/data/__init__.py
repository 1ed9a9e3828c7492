"""Data: synthetic DP scenes and the input pipeline."""
