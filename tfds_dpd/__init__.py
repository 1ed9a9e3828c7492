"""TFDS dataset builders for dual-pixel data (DPDD, synthetic DP, users' captures)."""
