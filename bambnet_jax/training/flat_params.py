"""A parameter tree kept as one float32 vector in the train state (`FlatParams`).

With the ~450 parameter arrays as one vector, Adam is one kernel, the gradient norm one reduction
and the gradient sum one all-reduce (experiments/PERF.md); `tree()` splits it back for the model.
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

  def unravel(self, vector):
    """The tree back from the vector (jax or NumPy), by one split: a slice's gradient would be a
    zero-padded copy of the whole vector."""
    xp = np if isinstance(vector, np.ndarray) else jnp
    ends = np.cumsum([int(np.prod(shape)) for shape in self.shapes])
    parts = xp.split(vector, ends[:-1])
    return jax.tree_util.tree_unflatten(self.treedef, [p.reshape(s) for p, s in zip(parts, self.shapes)])


@flax.struct.dataclass
class FlatParams:
  """A float32 parameter tree as one vector: a pytree of one leaf, so Adam's moments are vectors too."""
  vector: Any
  spec: ParamSpec = flax.struct.field(pytree_node=False)

  @classmethod
  def from_tree(cls, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dtypes = {jnp.dtype(x.dtype) for x in leaves}
    if dtypes - {jnp.dtype(jnp.float32)}:
      raise ValueError(f"FlatParams holds float32 parameters; the tree has {sorted(map(str, dtypes))}")
    xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
    vector = xp.concatenate([xp.ravel(x) for x in leaves]).astype(xp.float32)
    return cls(vector, ParamSpec(treedef, tuple(tuple(int(d) for d in np.shape(x)) for x in leaves)))

  def tree(self):
    return self.spec.unravel(self.vector)


def flatten(params):
  """`params` as FlatParams (unchanged if they already are)."""
  return params if isinstance(params, FlatParams) else FlatParams.from_tree(params)
