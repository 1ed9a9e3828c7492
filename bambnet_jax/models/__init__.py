"""BaMBNet's networks (paper section III): blocks, branches, the deblurring and COC networks."""
