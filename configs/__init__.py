"""Experiment configs: each module has `get_config(arg=None)`; override any field on the command line."""
