"""The HTML report of a training workdir, written by `bambnet quickstart` as one self-contained file.

Test metrics (restored vs. blurred input), training curves, the threshold search's rounds, and the
test scenes and Canon DP captures as `bambnet deblur` restores them (report_figures.py).
"""

import html
import json
import pathlib

import numpy as np

from bambnet_jax.commands import deblur
from bambnet_jax.commands import report_figures
from bambnet_jax.data import pipeline
from bambnet_jax.data import records
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import figures
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.parallel import sharding

# The curves worth a glance per stage; other logged keys (rates, times) are bookkeeping.
_SKIPPED_CURVE_KEYS = ("stage", "step", "steps_per_s", "time", "nonfinite")


def write_report(workdir, config, canon=(), num_examples=3):
  """Writes `<workdir>/report.html` of a finished training workdir; canon: `deblur.run_deblur`'s
  results for the Canon DP captures. Returns the page's path."""
  workdir = pathlib.Path(workdir)
  summary = json.loads((workdir / "eval" / "metrics.json").read_text())
  sections = [
      _section("Test metrics: restored vs. blurred input", _metrics_table(summary["groups"])),
      _section("Training curves", _curves_html(workdir / "metrics.jsonl")),
      _section("Threshold search", _rounds_html(workdir / "search")),
      _section("Test scenes", _examples_html(workdir, config, num_examples)),
      _section("Real Canon DP captures", _canon_html(canon)),
  ]
  title = f"BaMBNet report: {html.escape(workdir.name)}"
  document = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
              f"<style>{_STYLE}</style></head><body><h1>{title}</h1>\n" + "\n".join(sections) + "\n</body></html>\n")
  path = workdir / "report.html"
  files.atomic_write_bytes(path, document.encode())
  return path


_STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #999;padding:4px 8px;text-align:right}"
          "figure{display:inline-block;vertical-align:top;margin:4px;text-align:center}"
          "img.big{max-width:380px}img.curve{max-width:100%}" + report_figures.CSS)


def _section(heading, body):
  return f"<section><h2>{html.escape(heading)}</h2>\n{body}\n</section>"


def _metrics_table(groups):
  """One row per group (combined first), input vs. restored for each pixel metric."""
  rows = ["<table id='metrics'><tr><th>group</th><th>images</th>"
          "<th>input PSNR</th><th>restored PSNR</th><th>gain (dB)</th>"
          "<th>input SSIM</th><th>restored SSIM</th><th>input MAE</th><th>restored MAE</th></tr>"]
  for name in sorted(groups, key=lambda g: g != "combined"):
    g = groups[name]
    cells = [html.escape(name), str(g.get("num_images", ""))]
    cells += [f"{g['input_psnr']:.2f}", f"{g['psnr']:.2f}", f"{g['psnr'] - g['input_psnr']:+.2f}"]
    cells += [f"{g[k]:.4f}" for k in ("input_ssim", "ssim", "input_mae", "mae")]
    rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
  return "\n".join(rows) + "</table>"


def read_curves(path):
  """metrics.jsonl as {stage: {key: (steps, values)}}, in the order the stages ran."""
  curves = {}
  if not path.exists():
    return curves
  for line in path.read_text().splitlines():
    record = json.loads(line)
    stage = curves.setdefault(record["stage"], {})
    for key, value in record.items():
      if key not in _SKIPPED_CURVE_KEYS and isinstance(value, (int, float)):
        stage.setdefault(key, ([], []))
        stage[key][0].append(record["step"])
        stage[key][1].append(value)
  return curves


def curve_png(stage, curves):
  """One panel per logged quantity of a stage, against the step."""
  plt = figures.pyplot()
  keys = sorted(curves, key=lambda k: k != "loss")  # the loss first: it is what was optimised
  fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6), squeeze=False)
  for ax, key in zip(axes[0], keys):
    ax.plot(*curves[key], marker=".")  # (steps, values)
    ax.set_title(f"{stage}: {key}", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  return figures.png_bytes(fig)


def _curves_html(path):
  curves = read_curves(path)
  if not curves:
    return "<p>No training curves (metrics.jsonl is missing).</p>"
  return "\n".join(f"<div>{report_figures.img(curve_png(stage, c), 'curve', stage)}</div>"
                   for stage, c in curves.items())


def _rounds_html(search_dir):
  png = search_dir / "rounds.png"
  if not png.exists():
    return "<p>No threshold search rounds (search disabled or not yet run).</p>"
  text = ""
  if (search_dir / "rounds.json").exists():
    fmt = lambda values: ", ".join(f"{float(v):g}" for v in values)
    shares = lambda values: " / ".join(f"{100 * float(v):.1f}" for v in values)
    rows = "".join(f"<tr><td>{r.get('round', i + 1)}</td><td>{r.get('step', '')}</td>"
                   f"<td>{html.escape(fmt(r.get('thresholds_before', [])))}</td>"
                   f"<td>{html.escape(fmt(r.get('thresholds', [])))}</td>"
                   f"<td>{shares(r.get('branch_shares', []))}</td></tr>"
                   for i, r in enumerate(json.loads((search_dir / "rounds.json").read_text())))
    text = ("<table id='rounds'><tr><th>round</th><th>step</th><th>thresholds before (px)</th>"
            f"<th>thresholds after (px)</th><th>meta pixels per branch (%)</th></tr>{rows}</table>")
  return report_figures.img(png.read_bytes(), "big", "threshold rounds") + text


def first_test_scenes(config, count):
  """The first `count` test scenes as dicts of float32 host arrays (`pipeline.EVAL_KEYS`) and name."""
  scenes = []
  for batch in evaluate.test_batches(config, sharding.make_mesh()):
    for i in np.flatnonzero(np.asarray(batch["mask"])):
      height, width = pipeline.real_size(batch["pixel_mask"][i])  # mixed-size splits are padded
      scenes.append({k: np.asarray(batch[k][i, :height, :width], np.float32) for k in pipeline.EVAL_KEYS}
                    | {"name": records.text(batch["name"][i])})
      if len(scenes) == count:
        return scenes
  return scenes


def _examples_html(workdir, config, count):
  """Restores `count` test scenes with `bambnet deblur` and shows each beside its ground truth."""
  out_dir, in_dir = workdir / "examples", workdir / "examples" / "inputs"
  scenes = first_test_scenes(config, count)
  if not scenes:
    return "<p>No test scenes.</p>"
  for index, scene in enumerate(scenes):
    # 16-bit inputs keep the test scene's precision.
    images.write_png(in_dir / f"scene{index}_L.png", images.from_float(scene["left"], 16))
    images.write_png(in_dir / f"scene{index}_R.png", images.from_float(scene["right"], 16))
  # One folder run: the networks compile once, and the page shows what a user of the command sees.
  results = {r["name"]: r for r in deblur.run_deblur(out_dir, input_dir=in_dir, weights=workdir, show_progress=False)}
  return "\n".join(report_figures.capture_html(s["name"], results[f"scene{i}"], [("ground truth", s["sharp"])])
                   for i, s in enumerate(scenes))


def _canon_html(results):
  if not results:
    return "<p>No Canon DP captures were restored (tests/data not present).</p>"
  return "\n".join(report_figures.capture_html(r["name"], r) for r in results)
