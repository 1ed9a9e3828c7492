"""The paper's Table III: the deblurring net trained with and without the defocus masks.

    python experiments/table3_masks.py --config configs/dpdd.py --workdir workdirs/table3 \\
        data.manual_dir=/data/dd_dp_dataset_png
    python experiments/table3_masks.py --workdir /tmp/table3 --metrics psnr,ssim,mae   # CPU, seconds

Two runs of one config, <workdir>/with_masks (or --with-masks-workdir) and <workdir>/without_masks
(deblur.use_masks=False, no search, no COC net), scored on the test split into
<workdir>/table3.{md,json} beside the paper's numbers.
"""

import json
import pathlib

from bambnet_jax.evaluation import suite as suite_lib
from bambnet_jax.io import files
import runs

PAPER = {"without masks": {"psnr": 26.22, "ssim": 0.815, "mae": 0.036, "lpips_squeeze": 0.151, "fid": 42.34},
         "with masks": {"psnr": 26.40, "ssim": 0.821, "mae": 0.036, "lpips_squeeze": 0.141, "fid": 40.28}}
WITHOUT_MASKS = ("deblur.use_masks=False", "search.enabled=False")


def markdown(results, columns):
  lines = ["# Table III: with and without the defocus masks (combined test set)", "",
           "| model | " + " | ".join(suite_lib.LABELS[m] for m in columns) + " |",
           "| --- " * (len(columns) + 1) + "|"]
  for source, rows in (("paper", PAPER), ("this run", results)):
    for name, values in rows.items():
      cells = ["-" if values.get(m) is None else f"{values[m]:.4f}" for m in columns]
      lines.append(f"| {name} ({source}) | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  p = runs.parser(__doc__)
  p.add_argument("--with-masks-workdir", help="an existing (or to be trained) run with masks "
                                              "(default <workdir>/with_masks)")
  args = p.parse_args(argv)
  workdir = pathlib.Path(args.workdir)
  suite = runs.metric_suite(args)
  masked_dir = pathlib.Path(args.with_masks_workdir or workdir / "with_masks")
  unmasked_dir = workdir / "without_masks"
  masked_config = runs.load_config(args)
  unmasked_config = runs.load_config(args, WITHOUT_MASKS)
  runs.train(masked_config, masked_dir)
  runs.train(unmasked_config, unmasked_dir)
  results = {}
  for name, run_dir, config in (("without masks", unmasked_dir, unmasked_config),
                                ("with masks", masked_dir, masked_config)):
    summary = runs.evaluate_run(runs.Run(run_dir), config, suite, workdir / "table3" / name.replace(" ", "_"),
                                title=f"Deblurring net trained {name}")
    results[name] = {k: v for k, v in summary.items() if k not in ("groups", "seconds")}
  text = markdown(results, suite.names)
  files.atomic_write_bytes(workdir / "table3.md", text.encode())
  document = {"this_run": results, "paper": PAPER}
  files.atomic_write_bytes(workdir / "table3.json", json.dumps(document, indent=1).encode())
  print(text)
  return results


if __name__ == "__main__":
  main()
