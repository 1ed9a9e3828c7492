"""TFDS dataset builders for dual-pixel data (DPDD, synthetic DP, users' captures), without TensorFlow.

Importing this package registers the builders with TFDS (`tfds.data_source("dpdd/patches", ...)`).
"""

from tfds_dpd import dp_captures
from tfds_dpd import dp_synthetic
from tfds_dpd import dpdd
