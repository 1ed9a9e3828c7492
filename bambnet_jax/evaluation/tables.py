"""Results tables of an evaluation: indoor, outdoor and combined (the paper's Tables I and II), as
metrics.json (everything, with weight-file hashes), metrics.csv, per_image.csv and metrics.md."""

import csv
import io
import json
import pathlib

import numpy as np

from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import files

GROUPS = ("indoor", "outdoor", "combined")
INPUT_PREFIX = "input_"  # the blurred input (L + R) / 2 scored against the target: the baseline


def summarise(records, metric_names, fid_fn=None, restored_features=None, target_features=None):
  """{group: {metric: mean, "num_images": n, "fid": ...}} for indoor, outdoor (if any) and combined,
  from one record per image and FID features (N, D) aligned with them."""
  scene_types = np.array([r.get("scene_type", "unknown") for r in records])
  groups = {}
  for group in GROUPS:
    rows = np.ones(len(records), bool) if group == "combined" else scene_types == group
    if not rows.any():
      continue
    chosen = [r for r, keep in zip(records, rows) if keep]
    keys = [k for k, v in chosen[0].items() if isinstance(v, float)]  # not name / scene_type
    summary = {k: float(np.mean([r[k] for r in chosen])) for k in keys} | {"num_images": len(chosen)}
    if "fid" in metric_names and fid_fn is not None:
      # FID compares two sets; one image has no covariance (None: JSON has no NaN).
      summary["fid"] = fid_fn(restored_features[rows], target_features[rows]) if rows.sum() >= 2 else None
    groups[group] = summary
  return groups


def _format(value):
  return "-" if value is None else f"{value:.4f}"


def markdown(groups, metric_names, title="", notes=(), fid_dims=2048):
  """The groups as a Markdown table: one row per group, one column per metric."""
  columns = list(metric_names)
  lines = [f"## {title}", ""] if title else []
  lines.append("| | images | " + " | ".join(suite_lib.LABELS[m] for m in columns) + " |")
  lines.append("| --- " * (len(columns) + 2) + "|")
  for group, summary in groups.items():
    lines.append(f"| {group} | {summary['num_images']} | "
                 + " | ".join(_format(summary.get(m)) for m in columns) + " |")
  input_columns = [m for m in columns if INPUT_PREFIX + m in groups["combined"]]
  if input_columns:
    lines += ["", "Blurred input (L + R) / 2 against the target, for reference:", "",
              "| | " + " | ".join(suite_lib.LABELS[m] for m in input_columns) + " |",
              "| --- " * (len(input_columns) + 1) + "|"]
    for group, summary in groups.items():
      lines.append(f"| {group} | " + " | ".join(_format(summary.get(INPUT_PREFIX + m)) for m in input_columns) + " |")
  combined = groups["combined"]
  if "coc_mae" in combined:
    lines.append(f"\nCOC net signed-COC MAE: {combined['coc_mae']:.3f} px (all pixels), "
                 f"{combined['coc_mae_textured']:.3f} px (textured pixels)")
  if "fid" in metric_names and fid_dims != 2048:
    lines.append(f"\nFID over {fid_dims}-d InceptionV3 features (pytorch-fid --dims {fid_dims}), "
                 "not the literature's 2048-d pool3 features.")
  lines += [""] + list(notes)
  return "\n".join(lines).rstrip() + "\n"


def _csv(rows, fieldnames):
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue().encode()


def write(output_dir, groups, records, metric_names, extra=None, title="Test set", notes=(), fid_dims=2048):
  """Writes metrics.json, metrics.csv, per_image.csv and metrics.md into `output_dir`."""
  output_dir = pathlib.Path(output_dir)
  document = {"metrics": list(metric_names), "groups": groups, "per_image": records, **(extra or {})}
  files.atomic_write_bytes(output_dir / "metrics.json", json.dumps(document, indent=1).encode())
  value_keys = [k for k in groups["combined"] if k != "num_images"]
  files.atomic_write_bytes(output_dir / "metrics.csv",
                           _csv([{"group": g, **s} for g, s in groups.items()], ["group", "num_images"] + value_keys))
  image_keys = list(records[0]) if records else ["name"]
  files.atomic_write_bytes(output_dir / "per_image.csv", _csv(records, image_keys))
  files.atomic_write_bytes(output_dir / "metrics.md", markdown(groups, metric_names, title, notes, fid_dims).encode())
