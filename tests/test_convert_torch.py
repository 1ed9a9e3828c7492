"""Official-checkpoint import: forward parity with an independent PyTorch forward written from the SPEC.

The reference below is written from SPEC sections 1 and 2 alone (official key names, BGR channel
order, adaptive average pooling, nearest upsampling), not from the Flax code.
"""

import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bambnet_jax.io import weights as weights_io
from bambnet_jax.convert import torch_checkpoint
from bambnet_jax.models import masks
from bambnet_jax.models import networks

CAPACITIES = (1, 4, 7, 10)


def official_state_dict(width=64, capacities=CAPACITIES, seed=0):
  """Random tensors under the official key names and shapes (OIHW)."""
  gen = torch.Generator().manual_seed(seed)
  state = {}

  def conv(key, cin, cout, k, gain=1.0):
    # Scaled so activations neither vanish nor saturate the sigmoid through the deep body.
    state[key + ".weight"] = torch.randn(cout, cin, k, k, generator=gen) * gain / np.sqrt(cin * k * k)
    state[key + ".bias"] = torch.randn(cout, generator=gen) * 0.1

  conv("head.0", 6, width, 3)
  conv("tail_hard.0", width, 3, 3, gain=0.3)
  squeeze = max(1, width // 16)
  for s in range(1, 9):
    for i, k in enumerate(capacities):
      n = k // 3
      if n == 0:
        conv(f"layer{s}.{i}.0", width, width, 1)
        continue
      for j in range(n):
        rcab = f"layer{s}.{i}.0.body.{j}"
        conv(f"{rcab}.body.0", width, width, 3)
        conv(f"{rcab}.body.2", width, width, 3, gain=0.3)
        conv(f"{rcab}.body.3.conv_du.0", width, squeeze, 1)
        conv(f"{rcab}.body.3.conv_du.2", squeeze, width, 1)
      conv(f"layer{s}.{i}.0.body.{n}", width, width, 3, gain=0.3)
  return state


def torch_forward(sd, x_bgr, gates=None, capacities=CAPACITIES, coc=False):
  """BaMBNet's forward in NCHW/BGR, as SPEC section 1 describes it."""
  def conv(x, key):
    w = sd[key + ".weight"]
    return F.conv2d(x, w, sd[key + ".bias"], padding=w.shape[-1] // 2)

  def rcab(x, key):
    y = conv(F.relu(conv(x, key + ".body.0")), key + ".body.2")
    a = y.mean(dim=(2, 3), keepdim=True)
    a = torch.sigmoid(conv(F.relu(conv(a, key + ".body.3.conv_du.0")), key + ".body.3.conv_du.2"))
    return x + y * a

  f_enc = F.relu(conv(x_bgr, "head.0"))
  z = f_enc
  for i, k in enumerate(capacities):
    n = k // 3
    o = {}
    for s in range(1, 9):
      if s == 1:
        inp = f_enc
      else:
        inp = F.adaptive_avg_pool2d(f_enc, o[s - 1].shape[-2:]) + o[s - 1]
        inp = inp + {6: o.get(3), 7: o.get(2), 8: o.get(1)}.get(s, 0)
      key = f"layer{s}.{i}.0"
      if n == 0:
        o[s] = F.relu(conv(inp, key))
        continue
      y = inp
      for j in range(n):
        y = rcab(y, f"{key}.body.{j}")
      y = inp + conv(y, f"{key}.body.{n}")
      o[s] = F.max_pool2d(y, 2) if s <= 4 else F.interpolate(y, scale_factor=2, mode="nearest")
    z = z + (o[8] if gates is None else gates[:, i:i + 1] * o[8])
  out = conv(z, "tail_hard.0")
  return out.clamp(-24, 24) if coc else torch.sigmoid(out)


def rgb_views_to_torch_bgr(x_rgb):
  """(N, H, W, 6) RGB left+right -> (N, 6, H, W) BGR left+right, as the released code reads them."""
  x = x_rgb[..., [2, 1, 0, 5, 4, 3]]
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def bgr_to_rgb_nhwc(y):
  return y.detach().numpy().transpose(0, 2, 3, 1)[..., ::-1]


@pytest.fixture(scope="module")
def state_dict():
  return official_state_dict()


def test_official_layout_has_452_tensors(state_dict):
  assert len(state_dict) == 452


def test_deblur_net_parity_with_masks_and_annealing(state_dict):
  sd_np = {k: v.numpy() for k, v in state_dict.items()}
  config = torch_checkpoint.infer_model_config(sd_np)
  assert config.width == 64 and tuple(config.branch_capacities) == CAPACITIES
  params = torch_checkpoint.state_dict_to_params(sd_np, "deblur", config)
  rng = np.random.default_rng(0)
  x = rng.random((2, 32, 48, 6), np.float32)
  coc = rng.uniform(-8, 8, (2, 32, 48, 3)).astype(np.float32)
  step = 7_000
  # Gates computed independently: mask by max |COC| against [0, 1.9, 4.2, 6.2], weight exp(-(2t/T)^2).
  blur = np.abs(coc).max(-1)
  edges = [0.0, 1.9, 4.2, 6.2, np.inf]
  d = np.stack([(blur >= edges[i]) & (blur < edges[i + 1]) for i in range(4)], 1).astype(np.float32)
  w = np.exp(-(2 * step / 20_000) ** 2)
  gates_torch = torch.from_numpy((w * d + (1 - w)).astype(np.float32))
  want = bgr_to_rgb_nhwc(torch_forward(state_dict, rgb_views_to_torch_bgr(x), gates_torch))
  assert 0.05 < want.std() and 0.01 < want.mean() < 0.99  # not saturated: the comparison means something

  gates = masks.branch_gates(masks.defocus_masks(jnp.asarray(coc), masks.RELEASED_THRESHOLDS),
                             masks.annealing_weight(step))
  got = networks.build("deblur", config).apply({"params": params}, jnp.asarray(x), gates)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_coc_net_parity_at_an_odd_size(state_dict):
  sd_np = {k: v.numpy() for k, v in state_dict.items()}
  config = torch_checkpoint.infer_model_config(sd_np)
  params = torch_checkpoint.state_dict_to_params(sd_np, "coc", config)
  rng = np.random.default_rng(1)
  x = rng.random((1, 37, 45, 6), np.float32)
  # Reference pads by reflection to 48x48 (bottom/right), runs, and crops, as documented.
  x_t = F.pad(rgb_views_to_torch_bgr(x), (0, 3, 0, 11), mode="reflect")
  want = bgr_to_rgb_nhwc(torch_forward(state_dict, x_t, coc=True))[:, :37, :45]
  assert want.std() > 0.05
  got = networks.build("coc", config).apply({"params": params}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_convert_torch_command_writes_weights_the_project_loads(tmp_path):
  width, capacities = 8, (1, 4, 7)
  state = official_state_dict(width, capacities, seed=3)
  ckpt = tmp_path / "net_g.pth"
  # The official files carry optimizer and scheduler state beside the weights.
  torch.save({"state_dict": state, "optimizers": [], "schedulers": [], "epoch": 5}, ckpt)
  out = tmp_path / "weights"
  result = subprocess.run([sys.executable, "-m", "bambnet_jax.cli", "convert-torch", str(ckpt), str(out),
                           "--net", "coc"], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  params, net, config = weights_io.load_weights(out, expected_net="coc")
  assert net == "coc" and config.width == width and tuple(config.branch_capacities) == capacities
  x = np.random.default_rng(2).random((1, 16, 32, 6), np.float32)
  want = bgr_to_rgb_nhwc(torch_forward(state, rgb_views_to_torch_bgr(x), capacities=capacities, coc=True))
  got = networks.build("coc", config).apply({"params": params}, jnp.asarray(x))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)
  with pytest.raises(weights_io.WeightsError, match="holds the 'coc' network"):
    weights_io.load_weights(out, expected_net="deblur")


def _run_convert(args):
  return subprocess.run([sys.executable, "-m", "bambnet_jax.cli", "convert-torch", *map(str, args)],
                        capture_output=True, text=True)


def test_bad_checkpoints_get_clear_errors_and_write_nothing(tmp_path):
  good = official_state_dict(8, (1, 4), seed=4)
  cases = {
      "missing": {k: v for k, v in good.items() if k != "layer3.1.0.body.0.body.2.weight"},
      "extra": good | {"layer9.0.0.weight": torch.zeros(8, 8, 1, 1)},
      "shape": good | {"layer2.0.0.weight": torch.zeros(8, 8, 3, 3)},
      "not_bambnet": {"encoder.weight": torch.zeros(3)},
  }
  expected = {"missing": "missing \\['layer3.1.0.body.0.body.2.weight'\\]",
              "extra": "unexpected \\['layer9.0.0.bias', 'layer9.0.0.weight'\\]|unexpected",
              "shape": "layer2.0.0.weight has shape \\(8, 8, 3, 3\\).*needs \\(8, 8, 1, 1\\)", "not_bambnet": "not a BaMBNet checkpoint"}
  for name, state in cases.items():
    ckpt = tmp_path / f"{name}.pth"
    torch.save({"state_dict": state}, ckpt)
    out = tmp_path / f"out_{name}"
    result = _run_convert([ckpt, out, "--net", "deblur"])
    assert result.returncode != 0, name
    assert str(ckpt) in result.stderr, result.stderr
    assert any(re.search(p, result.stderr) for p in expected[name].split("|")), result.stderr
    assert not out.exists()
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"this is not a checkpoint")
  result = _run_convert([garbage, tmp_path / "out_garbage", "--net", "coc"])
  assert result.returncode != 0 and "not a readable PyTorch checkpoint" in result.stderr
  assert not (tmp_path / "out_garbage").exists()
