"""The paper's Tables I and II: PSNR, SSIM, MAE, LPIPS and FID on indoor, outdoor and all test scenes.

    # a run trained here (trained or resumed first), on DPDD:
    python experiments/table1_2.py --config configs/dpdd.py --workdir workdirs/dpdd \\
        data.manual_dir=/data/dd_dp_dataset_png
    # a converted official checkpoint (bambnet convert-torch ... weights/official --net deblur):
    python experiments/table1_2.py --config configs/dpdd.py --weights weights/official --workdir results/official
    # seconds on a CPU: the smoke config's synthetic scenes
    python experiments/table1_2.py --workdir /tmp/table1_2 --metrics psnr,ssim,mae

Writes <workdir>/table1_2/: the restored test images, `bambnet eval`'s tables and table1_2.md (the
paper's rows beside this run's).
"""

import pathlib

from bambnet_jax.evaluation import evaluate
from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import files
import runs

# BaMBNet's published numbers (Tables I and II; LPIPS with SqueezeNet, as its code computes it).
PAPER = {
    "indoor": {"psnr": 28.60, "ssim": 0.872, "mae": 0.026, "lpips_squeeze": 0.124, "fid": 46.75},
    "outdoor": {"psnr": 24.30, "ssim": 0.772, "mae": 0.045, "lpips_squeeze": 0.157, "fid": 39.92},
    "combined": {"psnr": 26.40, "ssim": 0.821, "mae": 0.036, "lpips_squeeze": 0.141, "fid": 40.28},
}
TABLE_I = ("psnr", "ssim", "mae")
TABLE_II = ("lpips_alex", "lpips_vgg", "lpips_squeeze", "fid")


def paper_layout(groups, metric_names, label):
  """Markdown of Tables I and II: one row per method, a column block per scene group."""
  cell = lambda value, metric: "-" if value is None else (f"{value:.2f}" if metric in ("psnr", "fid") else
                                                           f"{value:.3f}")
  lines = []
  for title, wanted in (("Table I", TABLE_I), ("Table II", TABLE_II)):
    chosen = [m for m in wanted if m in metric_names]
    if not chosen:
      continue
    group_names = [g for g in ("indoor", "outdoor", "combined") if g in groups]
    lines += [f"### {title}", "",
              "| method | " + " | ".join(f"{g} {suite_lib.LABELS[m]}" for g in group_names for m in chosen) + " |",
              "| --- " * (1 + len(group_names) * len(chosen)) + "|"]
    for method, source in (("BaMBNet (paper)", PAPER), (label, groups)):
      lines.append(f"| {method} | " + " | ".join(cell(source.get(g, {}).get(m), m) for g in group_names
                                                 for m in chosen) + " |")
    lines.append("")
  return "\n".join(lines)


def main(argv=None):
  p = runs.parser(__doc__)
  p.add_argument("--weights", help="evaluate this deblurring-net weights directory instead of training one")
  p.add_argument("--save-images", type=int, default=-1, help="restored 16-bit PNGs to write (-1: all)")
  args = p.parse_args(argv)
  config = runs.load_config(args)
  workdir = pathlib.Path(args.workdir)
  output_dir = workdir / "table1_2"
  suite = runs.metric_suite(args)
  if args.weights is None:
    runs.train(config, workdir)
  summary = evaluate.evaluate_checkpoint(
      config, workdir=None if args.weights else workdir, weights=args.weights, output_dir=output_dir,
      suite=suite, save_images=None if args.save_images < 0 else args.save_images)
  label = "official checkpoint" if args.weights else "this run"
  text = f"# Tables I and II: {config.data.test_dataset} / {config.data.test_split}\n\n"
  text += paper_layout(summary["groups"], suite.names, label)
  if "lpips_squeeze" not in suite.names and "fid" not in suite.names:
    text += "\nThe paper's Table II (LPIPS with SqueezeNet, FID) was not asked for (--metrics).\n"
  files.atomic_write_bytes(output_dir / "table1_2.md", text.encode())
  print(text)
  return summary


if __name__ == "__main__":
  main()
