"""Loads `configs/<name>.py[:arg]` and applies `field.sub=value` overrides from the command line."""

import ast
import importlib.util
import pathlib


class ConfigError(ValueError):
  """A config file or an override that cannot be used."""


def load_config(spec):
  """`path/to/config.py` or `path/to/config.py:arg` -> the module's get_config(arg)."""
  path, _, arg = str(spec).partition(":")
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"{path}: config file not found")
  module_spec = importlib.util.spec_from_file_location(f"bambnet_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: has no get_config(arg) function")
  return module.get_config(arg or None)


def apply_overrides(config, overrides):
  """Applies `a.b=value` strings (Python literals, else bare strings such as paths); unknown fields are an error."""
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep:
      raise ConfigError(f"override {item!r} is not of the form field=value")
    current = config
    for part in key.split("."):
      if part not in current:
        raise ConfigError(f"override {item!r}: no field {part!r}")
      node, current = current, current[part]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    try:
      node[part] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    except TypeError as e:
      raise ConfigError(f"override {item!r}: {e}") from e
  return config
