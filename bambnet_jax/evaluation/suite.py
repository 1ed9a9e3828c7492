"""The metrics of one evaluation, computed together on the device in one jitted call per batch.

    suite = MetricSuite.load(("psnr", "ssim", "mae", "lpips_squeeze", "fid"), weights_dir=None)
    values = suite.per_image(restored, target)  # {"psnr": (N,), ..., "fid_restored": (N, 2048)}

Missing LPIPS or FID weights are an error naming every missing file, never a shorter table.
"""

import jax
import numpy as np

from bambnet_jax.evaluation import fid as fid_lib
from bambnet_jax.evaluation import inception
from bambnet_jax.evaluation import lpips
from bambnet_jax.evaluation import metric_weights
from bambnet_jax.evaluation import metrics

PIXEL_METRICS = ("psnr", "ssim", "mae")
LPIPS_METRICS = {f"lpips_{net}": net for net in lpips.NETS}
ALL_METRICS = PIXEL_METRICS + tuple(LPIPS_METRICS) + ("fid",)
# BaMBNet reports LPIPS with SqueezeNet, most other deblurring papers with AlexNet.
DEFAULT_METRICS = ("psnr", "ssim", "mae", "lpips_alex", "lpips_squeeze", "fid")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE", "lpips_alex": "LPIPS (alex)",
          "lpips_vgg": "LPIPS (vgg)", "lpips_squeeze": "LPIPS (squeeze)", "fid": "FID"}


def parse_metrics(text):
  """"psnr,ssim,lpips_squeeze" -> ("psnr", "ssim", "lpips_squeeze"), checked, in ALL_METRICS order."""
  names = [n.strip().lower() for n in text.split(",") if n.strip()] if isinstance(text, str) else list(text)
  unknown = sorted(set(names) - set(ALL_METRICS))
  if unknown or not names:
    raise ValueError(f"unknown metric(s) {unknown or text!r}; choose from {', '.join(ALL_METRICS)}")
  return tuple(n for n in ALL_METRICS if n in names)


class MetricSuite:
  """Per-image metrics of restored vs target batches, plus InceptionV3 features for FID."""

  def __init__(self, names, lpips_params=None, inception_variables=None, weight_files=None,
               precision=jax.lax.Precision.HIGHEST, fid_dims=2048):
    """fid_dims: 2048 (pool3, the literature's FID) or 64 / 192 / 768 (pytorch-fid's --dims)."""
    self.names = parse_metrics(names)
    self.weight_files = dict(weight_files or {})
    if fid_dims not in inception.BLOCK_BY_DIMS:
      raise ValueError(f"FID features come in {sorted(inception.BLOCK_BY_DIMS)} dimensions, not {fid_dims}")
    self.fid_dims = fid_dims
    nets = [LPIPS_METRICS[n] for n in self.names if n in LPIPS_METRICS]
    for net in nets:
      if net not in (lpips_params or {}):
        raise ValueError(f"LPIPS ({net}) was asked for but no parameters were given")
    if "fid" in self.names and inception_variables is None:
      raise ValueError("FID was asked for but no InceptionV3 variables were given")
    weights = {"lpips": {net: lpips_params[net] for net in nets},
               "inception": inception_variables if "fid" in self.names else None}
    lpips_models = {net: lpips.LPIPS(net, precision) for net in nets}
    feature_model = inception.FIDInceptionV3(inception.BLOCK_BY_DIMS[fid_dims], precision=precision)
    pixel_names = [n for n in self.names if n in PIXEL_METRICS]

    def compute(weights, restored, target):
      out = {name: getattr(metrics, name)(restored, target) for name in pixel_names}
      for net, model in lpips_models.items():
        out[f"lpips_{net}"] = model.apply({"params": weights["lpips"][net]}, restored, target)
      if weights["inception"] is not None:
        out["fid_restored"] = feature_model.apply(weights["inception"], restored)
        out["fid_target"] = feature_model.apply(weights["inception"], target)
      return out

    self._weights = jax.device_put(weights)
    self._compute = jax.jit(compute)

  @classmethod
  def load(cls, names, weights_dir=None, **kwargs):
    """Reads the pretrained weights the metrics need; one error lists every missing file."""
    names = parse_metrics(names)
    lpips_params, weight_files, missing, inception_variables = {}, {}, [], None
    for name in names:
      try:
        if name in LPIPS_METRICS:
          lpips_params[LPIPS_METRICS[name]], hashes = lpips.load_params(LPIPS_METRICS[name], weights_dir)
          weight_files.update(hashes)
        elif name == "fid":
          inception_variables, hashes = inception.load_variables(weights_dir)
          weight_files.update(hashes)
      except metric_weights.MissingMetricWeightsError as e:
        missing.append(str(e))
    if missing:
      raise metric_weights.MissingMetricWeightsError("\n".join(missing))
    return cls(names, lpips_params, inception_variables, weight_files, **kwargs)

  @property
  def image_metrics(self):
    """The per-image metrics (everything but FID, which is over a set)."""
    return tuple(n for n in self.names if n != "fid")

  def per_image(self, restored, target):
    """{metric: (N,)} and, with FID, {"fid_restored", "fid_target": (N, fid_dims)}, on the device."""
    return self._compute(self._weights, restored, target)

  def fid(self, restored_features, target_features):
    return fid_lib.fid(np.asarray(restored_features), np.asarray(target_features))
