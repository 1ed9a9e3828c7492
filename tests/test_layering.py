"""Packages import downward only: io, parallel <- models <- losses <- data <- training <- evaluation
<- convert, commands <- cli (../shared/DESIGN.md). Checked on the source, every import statement,
with no project import inside a function (hiding one there would dodge a cycle)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Rank of each package; a module may import packages of its own rank or below. tfds_dpd's builders
# sit beside the input pipeline (they render synthetic scenes; data.datasets prepares them).
LAYERS = {
    "bambnet_jax.io": 0, "bambnet_jax.parallel": 1, "bambnet_jax.models": 2, "bambnet_jax.losses": 3,
    "bambnet_jax.data": 4, "tfds_dpd": 4, "bambnet_jax.training": 5, "bambnet_jax.evaluation": 6,
    "bambnet_jax.convert": 7, "bambnet_jax.commands": 7, "bambnet_jax.cli": 8, "bambnet_jax": 8,
}


def _package(module):
  for name in sorted(LAYERS, key=len, reverse=True):
    if module == name or module.startswith(name + "."):
      return name
  return None


def _project_imports(tree):
  """(line, imported module, inside a function) for every import of a project module."""
  found = []
  functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if _package(name) is not None:
        found.append((node.lineno, name, id(node) in nested))
  return found


def _modules():
  for path in sorted((ROOT / "bambnet_jax").rglob("*.py")) + sorted((ROOT / "tfds_dpd").rglob("*.py")):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    yield path, module


def test_every_module_has_a_layer():
  for path, module in _modules():
    assert _package(module) is not None, f"{path}: in no layer of {sorted(LAYERS)}"


def test_packages_import_only_downward():
  violations = []
  for path, module in _modules():
    rank = LAYERS[_package(module)]
    for line, imported, _ in _project_imports(ast.parse(path.read_text())):
      if LAYERS[_package(imported)] > rank:
        violations.append(f"{path.relative_to(ROOT)}:{line} imports {imported} (a layer above)")
  assert not violations, "\n".join(violations)


def test_no_project_import_inside_a_function():
  hidden = [f"{path.relative_to(ROOT)}:{line} imports {imported} inside a function"
            for path, _ in _modules()
            for line, imported, inside in _project_imports(ast.parse(path.read_text())) if inside]
  assert not hidden, "\n".join(hidden)


def test_the_checker_sees_an_upward_import():
  tree = ast.parse("from bambnet_jax.training import stages\n\ndef f():\n  from bambnet_jax.cli import main\n")
  found = _project_imports(tree)
  assert [(n, inside) for _, n, inside in found] == [("bambnet_jax.training.stages", False),
                                                       ("bambnet_jax.cli.main", True)]
  assert LAYERS[_package(found[0][1])] > LAYERS["bambnet_jax.models"]
