"""A parameter tree kept as one float32 vector in the train state (`FlatParams`).

Why one vector: the net has ~450 parameter arrays, and the train state (parameters and two Adam
moments) ~1,350. The host then spends most of a step's launch handling arrays one by one, and
the GPU runs one tiny Adam kernel per array. As one vector, Adam is one kernel, the gradient
norm one reduction and the data-parallel gradient sum one all-reduce (experiments/PERF.md has the
step times). The model still sees the tree:
`tree()` splits the vector (inside jit, XLA folds the pieces into the ops that read them).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """The tree structure and leaf shapes of a FlatParams: static, hashable, compared by value."""
  treedef: Any
  shapes: tuple

  @classmethod
  def of(cls, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return cls(treedef, tuple(tuple(int(d) for d in np.shape(x)) for x in leaves))

  def ravel(self, tree):
    """The tree's leaves, raveled and concatenated (jax or NumPy arrays alike)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if treedef != self.treedef:
      raise ValueError(f"parameter tree structure {treedef} does not match {self.treedef}")
    xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
    parts = []
    for leaf, shape in zip(leaves, self.shapes):
      if tuple(leaf.shape) != shape:
        raise ValueError(f"parameter of shape {tuple(leaf.shape)} where {shape} was expected")
      parts.append(xp.ravel(leaf))
    return xp.concatenate(parts).astype(xp.float32)

  def unravel(self, vector):
    """The tree back from the vector (jax or NumPy).

    One split, not a slice per leaf: the gradient of a split is one concatenation, while each
    slice's is a zero-padded copy of the whole vector, which XLA then sums (0.6 ms per bfloat16
    step on an H100).
    """
    xp = np if isinstance(vector, np.ndarray) else jnp
    ends = np.cumsum([int(np.prod(shape)) for shape in self.shapes])
    parts = xp.split(vector, ends[:-1])
    return jax.tree_util.tree_unflatten(self.treedef, [p.reshape(s) for p, s in zip(parts, self.shapes)])


@flax.struct.dataclass
class FlatParams:
  """A float32 parameter tree as one vector. A pytree of one leaf, so optax's transformations
  (Adam's moments, updates) are single vectors too, with the same structure."""
  vector: Any
  spec: ParamSpec = flax.struct.field(pytree_node=False)

  @classmethod
  def from_tree(cls, tree):
    dtypes = {jnp.dtype(x.dtype) for x in jax.tree_util.tree_leaves(tree)}
    if dtypes - {jnp.dtype(jnp.float32)}:
      raise ValueError(f"FlatParams holds float32 parameters; the tree has {sorted(map(str, dtypes))}")
    spec = ParamSpec.of(tree)
    return cls(spec.ravel(tree), spec)

  def tree(self):
    return self.spec.unravel(self.vector)


def flatten(params):
  """`params` as FlatParams (unchanged if they already are)."""
  return params if isinstance(params, FlatParams) else FlatParams.from_tree(params)
