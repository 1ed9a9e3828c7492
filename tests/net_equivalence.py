"""Two configs of one network that must compute the same function from the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.models import networks


def assert_same_function(net, reference_config, other_config, image_size=32, gradient_error=None):
  """Same loss and gradients from one set of parameters; returns each config's conv count (jaxpr).

  gradient_error: instead of elementwise closeness, each parameter's gradient need only be within
  this relative Frobenius distance of the reference's (for configs that round gradients otherwise).
  """
  params = networks.init_params(net, reference_config, jax.random.key(3))
  # A random tail: the real one starts at zero, which would hide differences in the body.
  params["tail"]["kernel"] = 0.05 * jax.random.normal(jax.random.key(4), params["tail"]["kernel"].shape)
  x = jax.random.uniform(jax.random.key(5), (2, image_size, image_size, 6))

  def loss(p, config):
    return jnp.mean(networks.build(net, config).apply({"params": p}, x) ** 2)

  convs = [str(jax.make_jaxpr(lambda p, c=c: loss(p, c))(params)).count("conv_general_dilated")
           for c in (reference_config, other_config)]
  value_a, grads_a = jax.value_and_grad(loss)(params, reference_config)
  value_b, grads_b = jax.value_and_grad(loss)(params, other_config)
  np.testing.assert_allclose(float(value_a), float(value_b), rtol=1e-5)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads_a), jax.tree_util.tree_leaves(grads_b)):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if gradient_error is None:
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    else:
      assert np.linalg.norm(a - b) <= gradient_error * np.linalg.norm(a), jax.tree_util.keystr(path)
  return convs
