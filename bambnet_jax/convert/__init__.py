"""Import of the official PyTorch checkpoints."""
