"""The HTML report of a training workdir (written by `bambnet quickstart`).

The report (`<workdir>/report.html`) is self-contained (every image is a base64 data URI), so it
can be mailed or attached to an issue as one file. It shows the test metrics of the restored
images against the blurred combined input, the training curves of every stage, the threshold
search's rounds, side-by-side test scenes (input, COC map, branch masks, output, ground truth)
and the restored Canon DP captures of tests/data.
"""

import base64
import html
import json
import pathlib

import numpy as np

from bambnet_jax.commands import deblur
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import figures
from bambnet_jax.io import files
from bambnet_jax.io import images
from bambnet_jax.parallel import sharding

# The curves worth a glance per stage; other logged keys (rates, times) are bookkeeping.
_SKIPPED_CURVE_KEYS = ("stage", "step", "steps_per_s", "time", "nonfinite")
_EXAMPLE_COLUMNS = ("input (L+R)/2", "COC map", "branch masks", "restored", "ground truth")


def write_report(workdir, config, num_examples=3):
  """Writes `<workdir>/report.html` from a finished training workdir and returns its path."""
  workdir = pathlib.Path(workdir)
  summary = json.loads((workdir / "eval" / "metrics.json").read_text())
  sections = [
      _section("Test metrics: restored vs. blurred input", _metrics_table(summary["groups"])),
      _section("Training curves", _curves_html(workdir / "metrics.jsonl")),
      _section("Threshold search", _rounds_html(workdir / "search")),
      _section("Test scenes", _examples_html(workdir, config, num_examples)),
      _section("Real Canon DP captures", _canon_html(workdir / "canon")),
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
          "img.px{image-rendering:pixelated;width:160px}img.big{max-width:380px}img.curve{max-width:100%}")


def _section(heading, body):
  return f"<section><h2>{html.escape(heading)}</h2>\n{body}\n</section>"


def data_uri(png):
  """A PNG's bytes as an <img> source that needs no file beside the page."""
  return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png, css_class="big", alt=""):
  return f"<img class='{css_class}' alt='{html.escape(alt)}' src='{data_uri(png)}'>"


def _figure(png, caption, css_class="big"):
  return f"<figure>{_img(png, css_class, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


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
    steps, values = curves[key]
    ax.plot(steps, values, marker=".")
    ax.set_title(f"{stage}: {key}", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  return figures.png_bytes(fig)


def _curves_html(path):
  curves = read_curves(path)
  if not curves:
    return "<p>No training curves (metrics.jsonl is missing).</p>"
  return "\n".join(f"<div>{_img(curve_png(stage, c), 'curve', stage)}</div>" for stage, c in curves.items())


def _rounds_html(search_dir):
  png = search_dir / "rounds.png"
  if not png.exists():
    return "<p>No threshold search rounds (search disabled or not yet run).</p>"
  text = ""
  if (search_dir / "rounds.json").exists():
    # One row per round; the per-bin errors behind each choice are in rounds.json and the plot.
    fmt = lambda values: ", ".join(f"{float(v):g}" for v in values)
    rows = "".join(f"<tr><td>{r.get('round', i + 1)}</td><td>{r.get('step', '')}</td>"
                   f"<td>{html.escape(fmt(r.get('thresholds_before', [])))}</td>"
                   f"<td>{html.escape(fmt(r.get('thresholds', [])))}</td></tr>"
                   for i, r in enumerate(json.loads((search_dir / "rounds.json").read_text())))
    text = ("<table><tr><th>round</th><th>step</th><th>thresholds before (px)</th>"
            f"<th>thresholds after (px)</th></tr>{rows}</table>")
  return _img(png.read_bytes(), "big", "threshold rounds") + text


def _to_png8(image):
  """A float [0, 1] image as 8-bit PNG bytes (the report is for looking, not for measuring)."""
  return images.encode_png(images.from_float(np.clip(image, 0.0, 1.0), 8))


def _test_scenes(config, count):
  """The first `count` test scenes as host arrays (left, right, combined, sharp, name)."""
  scenes = []
  for batch in evaluate.test_batches(config, sharding.make_mesh()):
    mask = np.asarray(batch["mask"])
    for i in np.flatnonzero(mask):
      name = batch["name"][i]
      name = name.decode() if isinstance(name, bytes) else str(name)
      scenes.append({k: np.asarray(batch[k][i], np.float32) for k in ("left", "right", "combined", "sharp")}
                    | {"name": name})
      if len(scenes) == count:
        return scenes
  return scenes


def _examples_html(workdir, config, count):
  """Restores `count` test scenes with `bambnet deblur` and lays them out side by side."""
  out_dir, in_dir = workdir / "examples", workdir / "examples" / "inputs"
  scenes = _test_scenes(config, count)
  if not scenes:
    return "<p>No test scenes.</p>"
  names = [f"scene{index}" for index in range(len(scenes))]
  for name, scene in zip(names, scenes):
    # 16-bit inputs keep the test scene's precision.
    images.write_png(in_dir / f"{name}_L.png", images.from_float(scene["left"], 16))
    images.write_png(in_dir / f"{name}_R.png", images.from_float(scene["right"], 16))
  # One folder run: the networks are loaded and compiled once, and the COC map and masks are
  # exactly what a user of the command sees.
  deblur.run_deblur(out_dir, input_dir=in_dir, weights=workdir, show_progress=False)
  rows = []
  for name, scene in zip(names, scenes):
    pngs = [_to_png8(scene["combined"]), (out_dir / f"{name}_coc.png").read_bytes(),
            (out_dir / f"{name}_masks.png").read_bytes(),
            _to_png8(images.to_float(images.read_image(out_dir / f"{name}_restored.png"))),
            _to_png8(scene["sharp"])]
    cells = "".join(_figure(p, c, "px") for p, c in zip(pngs, _EXAMPLE_COLUMNS))
    rows.append(f"<div class='example'><h3>{html.escape(scene['name'])}</h3>{cells}</div>")
  return "\n".join(rows)


def _canon_html(canon_dir):
  restored = sorted(canon_dir.glob("*_restored.png")) if canon_dir.is_dir() else []
  if not restored:
    return "<p>No Canon DP captures were restored (tests/data not present).</p>"
  rows = []
  for path in restored:
    name = path.name[:-len("_restored.png")]
    # 8 bits for display: a 16-bit capture's restored file would double its share of the page.
    cells = [_figure(_to_png8(images.to_float(images.read_image(path))), "restored")]
    for suffix, caption in (("_coc.png", "COC map"), ("_masks.png", "branch masks")):
      if (canon_dir / f"{name}{suffix}").exists():
        cells.append(_figure((canon_dir / f"{name}{suffix}").read_bytes(), caption))
    rows.append(f"<div class='canon'><h3>{html.escape(name)}</h3>{''.join(cells)}</div>")
  return "\n".join(rows)
