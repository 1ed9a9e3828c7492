"""The Flax FID InceptionV3 and Fréchet distance against the published pytorch-fid package.

The weights file is made here: torchvision's Inception3 with pytorch-fid's FIDInception blocks,
random weights and batch-norm statistics measured on random images, saved under the published
name and converted through the same path as the real file. The reference is pytorch-fid's own
`InceptionV3` loading that same file (its download function is pointed at it). No download.
"""

import functools

import jax
import numpy as np
import pytest
from scipy import linalg
import torch
import torchvision
from pytorch_fid import fid_score
from pytorch_fid import inception as fid_inception_reference

from bambnet_jax.evaluation import fid
from bambnet_jax.evaluation import inception
from bambnet_jax.evaluation import metric_weights
from bambnet_jax.io import images


def random_fid_inception_state(seed=0):
  """pytorch-fid's network layout (fid_inception_v3) with random weights and BN statistics."""
  torch.manual_seed(seed)
  net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
  blocks = fid_inception_reference
  net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = (blocks.FIDInceptionA(192, 32), blocks.FIDInceptionA(256, 64),
                                              blocks.FIDInceptionA(288, 64))
  net.Mixed_6b, net.Mixed_6c = blocks.FIDInceptionC(768, 128), blocks.FIDInceptionC(768, 160)
  net.Mixed_6d, net.Mixed_6e = blocks.FIDInceptionC(768, 160), blocks.FIDInceptionC(768, 192)
  net.Mixed_7b, net.Mixed_7c = blocks.FIDInceptionE_1(1280), blocks.FIDInceptionE_2(2048)
  batch_norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  with torch.no_grad():
    for bn in batch_norms:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
      bn.reset_running_stats()
      bn.momentum = None  # a cumulative average: after one batch, exactly that batch's statistics
    # Statistics of the batch: every layer's outputs stay well scaled, as with trained weights.
    net.train()
    net(torch.rand(4, 3, 299, 299) * 2 - 1)
  return net.eval().state_dict()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("fid_weights")
  torch.save(random_fid_inception_state(), folder / metric_weights.INCEPTION_FILE)
  return folder


def reference_model(weights_dir, dims, monkeypatch):
  path = weights_dir / metric_weights.INCEPTION_FILE
  monkeypatch.setattr(fid_inception_reference, "load_state_dict_from_url",
                      lambda url, **kwargs: torch.load(path, weights_only=True))
  return fid_inception_reference.InceptionV3([fid_inception_reference.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval()


def reference_features(model, batch):
  with torch.no_grad():
    out = model(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))[0]
  return out.mean(dim=(2, 3)).numpy().astype(np.float64)  # what get_activations does for dims < 2048


def test_pool3_features_match_pytorch_fid(weights_dir, monkeypatch, real_dp_dir):
  variables, hashes = inception.load_variables(weights_dir)
  assert list(hashes) == [str(weights_dir / metric_weights.INCEPTION_FILE)]
  rng = np.random.default_rng(0)
  left = images.to_float(images.read_dp_pair(real_dp_dir / "0600/f4/l.png", real_dp_dir / "0600/f4/r.png")[0])
  batch = np.stack([rng.random((203, 317, 3)), left[:203, :317]]).astype(np.float32)  # odd size, downscaled
  got = np.asarray(jax.jit(inception.FIDInceptionV3().apply)(variables, batch))
  want = reference_features(reference_model(weights_dir, 2048, monkeypatch), batch)
  assert got.shape == (2, 2048)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).mean())


def test_fid_matches_pytorch_fid(weights_dir, monkeypatch):
  """Fewer images than dimensions, like 76 test images and 2048 features: singular covariances.

  64-d features (pytorch-fid --dims 64) keep SciPy's sqrtm cheap here; the 2048-d features
  themselves are compared above.
  """
  dims = 64
  variables, _ = inception.load_variables(weights_dir)
  rng = np.random.default_rng(dims)
  sharp = rng.random((32, 40, 56, 3)).astype(np.float32)  # upscaled to 299, as small images are
  blurred = (sharp + np.roll(sharp, 1, axis=1) + np.roll(sharp, 1, axis=2)) / 3
  features = functools.partial(jax.jit(inception.FIDInceptionV3(inception.BLOCK_BY_DIMS[dims]).apply), variables)
  got = fid.fid(np.asarray(features(blurred)), np.asarray(features(sharp)))
  model = reference_model(weights_dir, dims, monkeypatch)
  stats = [(np.mean(a, axis=0), np.cov(a, rowvar=False)) for a in
           (reference_features(model, blurred), reference_features(model, sharp))]
  want = fid_score.calculate_frechet_distance(*stats[0], *stats[1])
  assert got == pytest.approx(want, rel=1e-3)
  assert want > 1e-3


@pytest.mark.parametrize("samples", [20, 76, 400])
def test_fid_from_features_matches_pytorch_fid(samples):
  """No D x D matrix, for fewer and for more samples than dimensions."""
  rng = np.random.default_rng(samples)
  a = rng.normal(size=(samples, 48)) @ rng.normal(size=(48, 48))
  b = rng.normal(0.3, 1.0, size=(samples + 7, 48)) @ rng.normal(size=(48, 48))
  want = fid_score.calculate_frechet_distance(np.mean(a, axis=0), np.cov(a, rowvar=False),
                                              np.mean(b, axis=0), np.cov(b, rowvar=False))
  assert fid.fid(a, b) == pytest.approx(want, rel=1e-4 if samples < 48 else 1e-6)
  assert fid.fid(a, a) == pytest.approx(0.0, abs=1e-6 * want)


def test_fid_matches_scipy_sqrtm_on_small_matrices():
  """Against the textbook formula with SciPy's sqrtm, independent of pytorch-fid."""
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(30, 6)), rng.normal(0.5, 2.0, size=(25, 6)) @ rng.normal(size=(6, 6))
  (s1, s2), (m1, m2) = (np.cov(x, rowvar=False) for x in (a, b)), (a.mean(0), b.mean(0))
  want = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2.0 * linalg.sqrtm(s1 @ s2).real)
  assert fid.fid(a, b) == pytest.approx(want, rel=1e-9)


def test_bilinear_resize_matches_torch():
  rng = np.random.default_rng(4)
  for height, width in ((37, 53), (299, 299), (400, 301)):
    x = rng.random((1, height, width, 3)).astype(np.float32)
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2)), size=(299, 299),
                                           mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(np.asarray(inception.resize_bilinear(x, 299)), want, atol=1e-5)


def test_missing_inception_file_says_where_to_put_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
  monkeypatch.delenv(metric_weights.ENV_VAR, raising=False)
  monkeypatch.setattr(metric_weights, "DEFAULT_DIR", tmp_path / "default")
  with pytest.raises(metric_weights.MissingMetricWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
    inception.load_variables(tmp_path / "empty")
