"""Shared infrastructure beneath every layer: the device mesh, shardings and process launch."""
