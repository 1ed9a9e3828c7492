"""Losses: the DP reblur loss that trains the COC net without labels (paper section III-B)."""
