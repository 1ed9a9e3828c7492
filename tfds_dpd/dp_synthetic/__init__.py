"""Synthetic dual-pixel scenes with ground-truth COC as a TFDS dataset."""

from tfds_dpd.dp_synthetic.dp_synthetic_dataset_builder import DpSynthetic, DpSyntheticConfig
