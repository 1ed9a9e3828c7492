"""Test-set evaluation: restore every image at full resolution, score it, write the tables.

Per image: PSNR, SSIM and MAE of the restored image and, as the baseline, of the blurred
combined input (L + R) / 2 against the sharp target. Where the data has a ground-truth COC map
(synthetic scenes), the COC net's signed-COC mean absolute error too, over all pixels and over
textured pixels (where the DP views constrain the COC at all).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.evaluation import metrics
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.losses import coc_search
from bambnet_jax.models import networks

TABLE_KEYS = ("psnr", "ssim", "mae")


def make_eval_fn(model_config):
  """Jitted (deblur params, coc params or None, batch) -> per-image metrics and outputs."""
  deblur = networks.build("deblur", model_config)
  coc_net = networks.build("coc", model_config)

  @jax.jit
  def evaluate_batch(deblur_params, coc_params, batch):
    views = jnp.concatenate([batch["left"], batch["right"]], axis=-1)
    restored = deblur.apply({"params": deblur_params}, views)
    out = {"restored": restored, **metrics.image_metrics(restored, batch["sharp"]),
           **{f"input_{k}": v for k, v in metrics.image_metrics(batch["combined"], batch["sharp"]).items()}}
    if coc_params is not None:
      out["coc"] = coc_net.apply({"params": coc_params}, views)
    return out

  return evaluate_batch


def evaluate(deblur_params, coc_params, model_config, batches, output_dir=None, save_images=4):
  """Scores every real (unpadded) image of `batches`; writes metrics.json / metrics.md."""
  evaluate_batch = make_eval_fn(model_config)
  per_image = {k: [] for k in TABLE_KEYS + tuple(f"input_{k}" for k in TABLE_KEYS)}
  coc_errors, saved = {"all": [], "textured": []}, 0
  for batch in batches:
    out = jax.device_get(evaluate_batch(deblur_params, coc_params, batch))
    real = np.asarray(jax.device_get(batch["mask"])) if "mask" in batch else np.ones(len(out["psnr"]), bool)
    for key in per_image:
      per_image[key].extend(np.asarray(out[key])[real].tolist())
    if "coc" in out and "coc" in batch:
      truth = np.asarray(jax.device_get(batch["coc"]))
      combined = np.asarray(jax.device_get(batch["combined"]))
      for i in np.flatnonzero(real):
        predicted = out["coc"][i].mean(-1)  # the net predicts per colour channel; the truth is one map
        error = np.abs(predicted - truth[i].reshape(predicted.shape))
        coc_errors["all"].append(float(error.mean()))
        coc_errors["textured"].append(float(error[coc_search.textured_mask(combined[i])].mean()))
    if output_dir is not None:
      for i in np.flatnonzero(real):
        if saved < save_images:
          images.write_png(pathlib.Path(output_dir) / f"restored_{saved:03d}.png",
                           images.from_float(out["restored"][i], 16))
          saved += 1
  summary = {k: float(np.mean(v)) for k, v in per_image.items() if v}
  summary["num_images"] = len(per_image["psnr"])
  if coc_errors["all"]:
    summary["coc_mae"] = float(np.mean(coc_errors["all"]))
    summary["coc_mae_textured"] = float(np.mean(coc_errors["textured"]))
  if output_dir is not None and jax.process_index() == 0:
    write_tables(summary, per_image, output_dir)
  return summary


def write_tables(summary, per_image, output_dir):
  output_dir = pathlib.Path(output_dir)
  files.atomic_write_bytes(output_dir / "metrics.json",
                           json.dumps({"summary": summary, "per_image": per_image}, indent=1).encode())
  rows = ["| | PSNR (dB) | SSIM | MAE |", "| --- | --- | --- | --- |"]
  for label, prefix in (("restored", ""), ("blurred input (L+R)/2", "input_")):
    rows.append(f"| {label} | " + " | ".join(f"{summary[prefix + k]:.4f}" for k in TABLE_KEYS) + " |")
  if "coc_mae" in summary:
    rows.append(f"\nCOC net signed-COC MAE: {summary['coc_mae']:.3f} px (all pixels), "
                f"{summary['coc_mae_textured']:.3f} px (textured pixels)")
  rows.append(f"\n{summary['num_images']} images.")
  files.atomic_write_bytes(output_dir / "metrics.md", ("\n".join(rows) + "\n").encode())
