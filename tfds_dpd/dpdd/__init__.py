"""DPDD (manual download) as a TFDS dataset."""

from tfds_dpd.dpdd.dpdd_dataset_builder import Dpdd, DpddConfig
