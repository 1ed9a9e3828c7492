"""The Flax LPIPS against the published `lpips` package, with random torchvision backbones.

Each backbone is made by torchvision with random weights (biases randomised too), saved under
its published file name and converted through the same path as the real file; the reference is
`lpips.LPIPS(net=..., pretrained=True, pnet_rand=True)` given the very same backbone weights, with
the linear layers shipped inside the lpips package on both sides. No download.
"""

import jax
import lpips as lpips_reference
import numpy as np
import pytest
import torch
import torchvision

from bambnet_jax.evaluation import lpips
from bambnet_jax.evaluation import metric_weights
from bambnet_jax.io import images

TORCHVISION_MODELS = {"alex": torchvision.models.alexnet, "vgg": torchvision.models.vgg16,
                      "squeeze": torchvision.models.squeezenet1_1}


def random_backbone_file(net, folder, seed=0):
  """A random torchvision backbone saved as its published weights file; returns its state dict."""
  torch.manual_seed(seed)
  model = TORCHVISION_MODELS[net](weights=None)
  with torch.no_grad():
    for name, tensor in model.named_parameters():
      if name.endswith("bias"):
        tensor.normal_(0.0, 0.05)
  state = model.state_dict()
  if net == "vgg":  # the 120M-parameter classifier is not part of LPIPS: keep the file small
    state = {k: v for k, v in state.items() if k.startswith("features.")}
  torch.save(state, folder / metric_weights.BACKBONE_FILES[net])
  return state


def reference_lpips(net, backbone_state):
  """The lpips package's model with its shipped v0.1 linear layers and our random backbone."""
  model = lpips_reference.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
  # lpips keeps torchvision's layer indices inside its slices: slice2.3.weight is features.3.weight.
  renamed = {name: backbone_state["features." + name.split(".", 1)[1]]
             for name in model.net.state_dict()}
  model.net.load_state_dict(renamed)
  return model.eval()


def image_pairs(real_dp_dir):
  rng = np.random.default_rng(0)
  x = rng.random((2, 67, 93, 3)).astype(np.float32)
  yield "random", x, np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  left, right = images.read_dp_pair(real_dp_dir / "0600/f4/l.png", real_dp_dir / "0600/f4/r.png")
  crop = (slice(100, 181), slice(200, 317))  # odd size, 16-bit
  yield "real 16-bit", images.to_float(left)[crop][None], images.to_float(right)[crop][None]


@pytest.mark.parametrize("net", lpips.NETS)
def test_lpips_matches_the_lpips_package(net, tmp_path, real_dp_dir):
  backbone_state = random_backbone_file(net, tmp_path)
  params, hashes = lpips.load_params(net, weights_dir=tmp_path)
  assert str(tmp_path / metric_weights.BACKBONE_FILES[net]) in hashes
  distance = jax.jit(lambda x, y: lpips.LPIPS(net).apply({"params": params}, x, y))
  reference = reference_lpips(net, backbone_state)
  for name, x, y in image_pairs(real_dp_dir):
    got = np.asarray(distance(x, y))
    with torch.no_grad():
      to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
      want = reference(to_torch(x), to_torch(y), normalize=True).numpy().reshape(-1)
    assert got.shape == (len(x),)
    # The issue asks for 1e-4; random backbones give small distances, so hold them relatively too.
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=1e-4, err_msg=f"{net}, {name} images")
    assert want.min() > 1e-3  # a real difference, not two zeros agreeing


def test_missing_backbone_file_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  monkeypatch.delenv(metric_weights.ENV_VAR, raising=False)
  monkeypatch.setattr(metric_weights, "DEFAULT_DIR", tmp_path / "default")
  with pytest.raises(metric_weights.MissingMetricWeightsError) as error:
    lpips.load_params("alex", weights_dir=tmp_path / "weights")
  message = str(error.value)
  assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path / "weights") in message
  assert "--metrics" in message


def test_a_file_of_the_wrong_network_is_refused(tmp_path):
  state = random_backbone_file("squeeze", tmp_path)
  (tmp_path / metric_weights.BACKBONE_FILES["alex"]).write_bytes(
      (tmp_path / metric_weights.BACKBONE_FILES["squeeze"]).read_bytes())
  linear = metric_weights.read_torch_file(metric_weights.find_file(metric_weights.LPIPS_LINEAR_FILES["alex"], "t"))
  with pytest.raises(metric_weights.MetricWeightsError, match="does not fit|has shape"):
    lpips.convert_weights({k: v.numpy() for k, v in state.items()}, linear, "alex")
