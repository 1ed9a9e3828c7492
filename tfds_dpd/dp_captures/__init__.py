"""The user's own dual-pixel captures as a TFDS dataset."""

from tfds_dpd.dp_captures.dp_captures_dataset_builder import DpCaptures, DpCapturesConfig, DpCapturesError
