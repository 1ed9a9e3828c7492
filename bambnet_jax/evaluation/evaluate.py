"""Test-set evaluation (the paper's Tables I and II): every image restored at full resolution and scored.

    bambnet eval --config configs/dpdd.py --workdir workdirs/dpdd  # or --weights DIR --output-dir DIR
"""

import concurrent.futures
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.io import weights as weights_io
from bambnet_jax.data import datasets
from bambnet_jax.data import pipeline
from bambnet_jax.data import records as records_lib
from bambnet_jax.evaluation import metrics
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.evaluation import tables
from bambnet_jax.io import images
from bambnet_jax.losses import coc_search
from bambnet_jax.models import networks
from bambnet_jax.parallel import sharding
from tfds_dpd import common as tfds_common

_RESTORE_FNS = {}  # one compiled function per architecture, shared by repeated evaluations


def make_restore_fn(model_config):
  """Jitted (deblur params, coc params or None, batch, branch gates (M,) or None) -> the restored batch,
  the blurred input's metrics (the baseline) and the COC map; gates of 0 drop branches (Fig. 7)."""
  key = model_config.to_json()
  if key in _RESTORE_FNS:
    return _RESTORE_FNS[key]
  deblur, coc_net = networks.build("deblur", model_config), networks.build("coc", model_config)

  @jax.jit
  def restore(deblur_params, coc_params, batch, branch_gates):
    views = jnp.concatenate([batch["left"], batch["right"]], axis=-1)
    gates = None
    if branch_gates is not None:
      gates = jnp.broadcast_to(branch_gates.astype(jnp.float32), views.shape[:3] + branch_gates.shape)
    out = {"restored": deblur.apply({"params": deblur_params}, views, gates)}
    baseline = metrics.image_metrics(batch["combined"], batch["sharp"])
    out.update({f"{tables.INPUT_PREFIX}{k}": v for k, v in baseline.items()})
    if coc_params is not None:
      out["coc"] = coc_net.apply({"params": coc_params}, views)
    return out

  _RESTORE_FNS[key] = restore
  return restore


def _file_name(name, index):
  safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")
  return f"{safe or f'{index:03d}'}.png"


class _ImageWriter:
  """16-bit PNGs written by a thread (OpenCV's encoder releases the GIL)."""

  def __init__(self, directory, limit):
    self.directory, self.limit, self.count = pathlib.Path(directory), limit, 0
    self._pool, self._pending = concurrent.futures.ThreadPoolExecutor(max_workers=2), []

  def add(self, image, name, rotated):
    if self.limit is not None and self.count >= self.limit:
      return
    pixels = images.from_float(np.clip(image, 0.0, 1.0), 16)
    if rotated:  # back to the capture's portrait orientation (see tfds_dpd.common.to_landscape)
      pixels = np.ascontiguousarray(np.rot90(pixels, -tfds_common.PORTRAIT_ROTATION_K))
    self._pending.append(self._pool.submit(images.write_png, self.directory / name, pixels))
    self.count += 1

  def close(self):
    self._pool.shutdown(wait=True)
    for future in self._pending:
      future.result()  # re-raises a failed write


def evaluate(deblur_params, coc_params, model_config, batches, output_dir=None, save_images=4,
             suite=None, branch_gates=None, title="Test set", notes=()):
  """Scores every real image of `batches` (default suite: PSNR, SSIM, MAE), writes `save_images` (None: all)
  and the tables into `output_dir`; returns the combined summary, every group under "groups"."""
  suite = suite or suite_lib.MetricSuite(suite_lib.PIXEL_METRICS)
  restore = make_restore_fn(model_config)
  gates = None if branch_gates is None else jnp.asarray(branch_gates, jnp.float32)
  writer = None
  if output_dir is not None and save_images != 0 and jax.process_index() == 0:
    writer = _ImageWriter(pathlib.Path(output_dir) / "restored", save_images)
  records, restored_features, target_features = [], [], []
  seconds = {"restore": 0.0, "metrics": 0.0}
  for batch in batches:
    start = time.perf_counter()
    images_only = {k: batch[k] for k in pipeline.EVAL_KEYS}  # names and labels stay on the host
    out = jax.block_until_ready(restore(deblur_params, coc_params, images_only, gates))
    middle = time.perf_counter()
    real = sharding.local_rows(batch["mask"]) if "mask" in batch else np.ones(len(out["restored"]), bool)
    sizes = _real_sizes(batch, real)
    if sizes is None:
      # With several processes, each scores the rows it fed; the records are gathered at the end.
      scores = jax.tree_util.tree_map(sharding.local_rows, suite.per_image(out["restored"], batch["sharp"]))
      out = jax.tree_util.tree_map(sharding.local_rows, out)
    else:
      out, scores = _score_cropped(suite, jax.tree_util.tree_map(sharding.local_rows, out),
                                   sharding.local_rows(batch["sharp"]), sharding.local_rows(batch["combined"]),
                                   sizes, real)
    seconds["restore"] += middle - start
    seconds["metrics"] += time.perf_counter() - middle
    host = {k: sharding.local_rows(batch[k]) for k in ("scene_type", "rotated", "coc", "combined")
            if k in batch and (k != "combined" or "coc" in out)}
    if sizes is not None:
      host = {k: [v[i][:h, :w] for i, (h, w) in enumerate(sizes)] if k in ("coc", "combined") else v
              for k, v in host.items()}
    for i in np.flatnonzero(real):
      name = records_lib.text(batch["name"][i]) if "name" in batch else f"{len(records):03d}"
      scene_type = tfds_common.SCENE_TYPES[int(host["scene_type"][i])] if "scene_type" in host else "unknown"
      record = {"name": name, "scene_type": scene_type}
      record.update({k: float(scores[k][i]) for k in suite.image_metrics})
      record.update({f"{tables.INPUT_PREFIX}{k}": float(out[f"{tables.INPUT_PREFIX}{k}"][i])
                     for k in suite_lib.PIXEL_METRICS})
      if "coc" in out and "coc" in host:
        record.update(coc_errors(out["coc"][i], host["coc"][i], host["combined"][i]))
      if "fid_restored" in scores:
        restored_features.append(scores["fid_restored"][i])
        target_features.append(scores["fid_target"][i])
      if writer is not None:
        writer.add(out["restored"][i], _file_name(name, len(records)), "rotated" in host and bool(host["rotated"][i]))
      records.append(record)
  if writer is not None:
    writer.close()
  if jax.process_count() > 1:
    everyone = sharding.gather_from_processes({"records": records, "restored": np.asarray(restored_features).tolist(),
                                               "target": np.asarray(target_features).tolist()})
    records, restored_features, target_features = (
        [x for part in everyone for x in part[k]] for k in ("records", "restored", "target"))
  if not records:
    raise ValueError("the test split has no images")
  groups = tables.summarise(records, suite.names, suite.fid, np.asarray(restored_features),
                            np.asarray(target_features))
  if output_dir is not None and jax.process_index() == 0:
    extra = {"weight_files": suite.weight_files, "seconds": seconds, "fid_dims": suite.fid_dims,
             "branch_gates": None if branch_gates is None else [float(g) for g in branch_gates]}
    tables.write(output_dir, groups, records, suite.names, extra, title, notes, suite.fid_dims)
  return {**groups["combined"], "groups": groups, "seconds": seconds}


def _real_sizes(batch, real):
  """Each local row's (height, width) when a mixed-size split was padded, else None."""
  if "pixel_mask" not in batch:
    return None
  pixels = sharding.local_rows(batch["pixel_mask"])
  if pixels[real].all():
    return None
  return [pipeline.real_size(p) for p in pixels]


def _score_cropped(suite, out, sharp, combined, sizes, real):
  """(outputs cropped, scores) of a padded batch, each real image at its own size (a compile per size)."""
  out = {k: [v[i][:h, :w] for i, (h, w) in enumerate(sizes)] for k, v in out.items() if k in ("restored", "coc")}
  scores, baseline = {}, {}
  for i in np.flatnonzero(real):
    h, w = sizes[i]
    target = sharp[i][None, :h, :w]
    for k, v in suite.per_image(out["restored"][i][None], target).items():
      scores.setdefault(k, {})[i] = np.asarray(v)[0]
    for k, v in metrics.image_metrics(combined[i][None, :h, :w], target).items():
      baseline.setdefault(f"{tables.INPUT_PREFIX}{k}", {})[i] = np.asarray(v)[0]
  return out | baseline, scores


def coc_errors(predicted, truth, combined):
  """Signed-COC mean absolute errors of one image's (H, W, 3) prediction, over all and over textured
  pixels (where the DP views constrain the COC)."""
  predicted = np.asarray(predicted).mean(-1)
  error = np.abs(predicted - np.asarray(truth).reshape(predicted.shape))
  return {"coc_mae": float(error.mean()),
          "coc_mae_textured": float(error[coc_search.textured_mask(np.asarray(combined))].mean())}


def test_batches(config, mesh):
  """The config's test split in order, config.eval.batch_size images per device, on `mesh`."""
  return datasets.DataSources(config.data, mesh).test_batches(config.eval.batch_size)


def evaluate_checkpoint(config, workdir=None, weights=None, output_dir=None, metric_names=None,
                        metric_weights_dir=None, save_images=None, fid_dims=2048, suite=None):
  """`bambnet eval` of a training workdir or a deblurring-net `weights` directory on config.data's test
  split, into output_dir (default <workdir>/evaluation). A loaded `suite` replaces the metric arguments."""
  if (workdir is None) == (weights is None):
    raise ValueError("give either a training workdir or a weights directory, not both or neither")
  # Weights of the metrics first: a missing file should fail before minutes of inference.
  suite = suite or suite_lib.MetricSuite.load(metric_names or suite_lib.DEFAULT_METRICS, metric_weights_dir,
                                              fid_dims=fid_dims)
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    weights, output_dir = workdir / "deblur" / "weights", output_dir or workdir / "evaluation"
  deblur_params, _, model_config = weights_io.load_weights(weights, expected_net="deblur")
  if output_dir is None:
    raise ValueError("with --weights, say where the results go (--output-dir)")
  coc_params = None
  if workdir is not None and (workdir / "coc" / "weights").is_dir():
    coc_params = weights_io.load_weights(workdir / "coc" / "weights", expected_net="coc")[0]
  mesh = sharding.make_mesh()
  notes = [f"Test data: {config.data.test_dataset} / {config.data.test_split}; weights: {weights}."]
  summary = evaluate(sharding.put_replicated(deblur_params, mesh),
                     None if coc_params is None else sharding.put_replicated(coc_params, mesh),
                     model_config, test_batches(config, mesh), output_dir, save_images=save_images, suite=suite,
                     notes=notes)
  table = tables.markdown(summary["groups"], suite.names, "Test set", notes, suite.fid_dims)
  return summary | {"output_dir": str(output_dir), "table": table}
