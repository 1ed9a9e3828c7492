"""TFDS dataset builders for dual-pixel data (DPDD, synthetic DP, users' captures).

Importing this package registers the builders with TFDS (`tfds.data_source("dpdd/patches", ...)`).
They prepare and read without TensorFlow: images are stored as PNG bytes in array_record files.
"""

from tfds_dpd import dp_captures
from tfds_dpd import dp_synthetic
from tfds_dpd import dpdd
