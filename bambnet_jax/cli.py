"""The `bambnet` command: parses arguments and calls library functions, nothing more."""

import argparse
import sys

from bambnet_jax.commands import coc
from bambnet_jax.commands import deblur
from bambnet_jax.commands import quickstart
from bambnet_jax.commands import train
from bambnet_jax.convert import torch_checkpoint
from bambnet_jax.evaluation import evaluate
from bambnet_jax.io import config_files
from bambnet_jax.parallel import launch
from bambnet_jax.parallel import sharding


def _train(args):
  if args.local_processes > 1:  # this process only starts and watches the others
    commands = launch.train_commands(args.config, args.workdir, args.overrides, args.local_processes,
                                     stop_after=args.stop_after)
    sys.exit(launch.run_processes(commands, name=f"bambnet train --local-processes {args.local_processes}"))
  config = config_files.apply_overrides(config_files.load_config(args.config), args.overrides)
  train.train_and_evaluate(config, args.workdir, stop_after=args.stop_after)


def _raw_options(args):
  """The raw-view keyword arguments shared by `coc` and `deblur`."""
  given = (args.flat_field_left, args.flat_field_right)
  return {"black_level": args.black_level, "white_level": args.white_level,
          "flat_field": given if any(p is not None for p in given) else None}


def _add_raw_arguments(p):
  p.add_argument("--black-level", type=float, help="raw views: the sensor's black level; pixels map to "
                 "(v - black) / (white - black) (default: dp_raw.json beside the views, if any)")
  p.add_argument("--white-level", type=float,
                 help="raw views: the saturation level, e.g. 1023 or 16383 for 10 or 14 bits")
  p.add_argument("--flat-field-left", help="left view of a uniform bright surface (same levels): removes the left "
                 "view's vignetting (with --flat-field-right)")
  p.add_argument("--flat-field-right", help="right view of the same flat field")


def _coc(args):
  result = coc.run_coc(args.left, args.right, args.output_dir, weights=args.weights, per_channel=args.per_channel,
                       **_raw_options(args))
  print(f"wrote {result['npy']} and {result['png']} (median COC {result['median']:+.2f} px, "
        f"colours span +-{result['vmax']:.2f} px)")


def _float_list(text):
  try:
    return [float(r) for r in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _deblur(args):
  done = deblur.run_deblur(args.output_dir, left=args.left, right=args.right, input_dir=args.input_dir,
                           weights=args.weights, coc_weights=args.coc_weights, coc=args.coc,
                           thresholds=args.thresholds, dtype=args.dtype, tile=args.tile, overlap=args.overlap,
                           batch_size=args.batch_size, show_progress=not args.no_progress, **_raw_options(args))
  print(f"restored {len(done)} pair(s) into {args.output_dir}")


def _eval(args):
  config = config_files.apply_overrides(config_files.load_config(args.config), args.overrides)
  summary = evaluate.evaluate_checkpoint(
      config, workdir=args.workdir, weights=args.weights, output_dir=args.output_dir,
      metric_names=args.metrics, metric_weights_dir=args.metric_weights,
      save_images=None if args.save_images < 0 else args.save_images, fid_dims=args.fid_dims)
  print(summary["table"] + f"\n(tables and images in {summary['output_dir']})")


def _quickstart(args):
  print(f"wrote {quickstart.run_quickstart(args.workdir, args.overrides)}")


def build_parser():
  parser = argparse.ArgumentParser(prog="bambnet", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("convert-torch", help="import an official PyTorch checkpoint (.pth)")
  p.add_argument("checkpoint", help="the .pth file")
  p.add_argument("output", help="directory of the orbax checkpoint to write (use as --weights)")
  p.add_argument("--net", required=True, choices=("deblur", "coc"), help="the net it holds (one key layout for both)")
  p.set_defaults(run=lambda args: torch_checkpoint.convert_file(args.checkpoint, args.output, net=args.net))

  p = commands.add_parser("train", help="run (or resume) all stages: COC net, threshold search, deblurring net, "
                          "evaluation")
  p.add_argument("--config", required=True, help="configs/<name>.py, optionally with :arg")
  p.add_argument("--workdir", required=True, help="checkpoints, logs and results go here")
  p.add_argument("--stop-after", choices=("coc", "search", "deblur"), help="stop after this stage")
  p.add_argument("--local-processes", type=int, default=1, help="N > 1: one process per GPU of this host (process i "
                 "on GPU i), one jax.distributed run; scales better than one process driving all GPUs")
  p.add_argument("overrides", nargs="*", help="config overrides, e.g. coc.num_steps=100")
  p.set_defaults(run=_train)

  p = commands.add_parser("coc", help="signed COC map of a DP pair (px; > 0 in front of focus)")
  p.add_argument("--left", required=True, help="left view image")
  p.add_argument("--right", required=True, help="right view image")
  p.add_argument("--output-dir", required=True, help="where coc.npy and coc.png are written")
  how = p.add_mutually_exclusive_group()
  how.add_argument("--method", choices=("search",),  # no default: argparse then sees a clash
                   help="classical reblur-residual search, no training needed (the default)")
  how.add_argument("--weights", help="a trained or converted COC net's weights directory")
  p.add_argument("--per-channel", action="store_true", help="one COC per colour channel: coc.npy is H x W x 3")
  _add_raw_arguments(p)
  p.set_defaults(run=_coc)

  p = commands.add_parser("deblur", help="restore DP captures: restored image, signed COC map, branch masks")
  p.add_argument("--left", help="left view image (with --right)")
  p.add_argument("--right", help="right view image (with --left)")
  p.add_argument("--input-dir", help="folder of pairs: NAME_L.png/NAME_R.png, or folders with l.png and r.png")
  p.add_argument("--output-dir", required=True, help="where NAME_restored/_coc/_masks files are written")
  p.add_argument("--weights", help="training workdir, or deblurring weights directory (convert-torch --net deblur)")
  p.add_argument("--coc-weights", help="COC net weights (default: the workdir's coc/weights, if any)")
  p.add_argument("--coc", default="auto", choices=deblur.COC_CHOICES,
                 help="COC map source: auto = the COC net if known, else the classical search; none = skip")
  p.add_argument("--thresholds", type=_float_list, help="branch thresholds r_1,...,r_M in px (default: the "
                 "workdir's search result, else the released code's 0,1.9,4.2,6.2)")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
  p.add_argument("--tile", type=int, help="tile side in px, a multiple of 16 (default: the whole image when "
                                          "it fits in device memory, else 512-px tiles; 0: always whole)")
  p.add_argument("--overlap", type=int, help="px shared by neighbouring tiles, a multiple of 16 (default 160)")
  p.add_argument("--batch-size", type=int, default=1, help="tiles per network call")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  _add_raw_arguments(p)
  p.set_defaults(run=_deblur)

  p = commands.add_parser("eval", help="full-resolution test-set evaluation: PSNR, SSIM, MAE, LPIPS, FID "
                                        "for indoor, outdoor and combined, as Markdown, CSV and JSON")
  p.add_argument("--config", required=True, help="configs/<name>.py (its data.test_* say which images)")
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--workdir", help="a training workdir (its deblur and COC weights)")
  which.add_argument("--weights", help="a deblurring net's weights directory (e.g. a converted official one)")
  p.add_argument("--output-dir", help="where tables and images go (default <workdir>/evaluation)")
  p.add_argument("--metrics", help="comma-separated, of psnr, ssim, mae, lpips_alex, lpips_vgg, lpips_squeeze, "
                 "fid (default: all but lpips_vgg); LPIPS and FID need pretrained weight files")
  p.add_argument("--metric-weights", help="folder of the LPIPS / FID weight files (also "
                                          "$BAMBNET_METRIC_WEIGHTS, ~/.cache/bambnet_jax/metric_weights)")
  p.add_argument("--fid-dims", type=int, default=2048, choices=(64, 192, 768, 2048),
                 help="InceptionV3 features of FID, as pytorch-fid's --dims (default: 2048, the literature's)")
  p.add_argument("--save-images", type=int, default=-1, help="restored 16-bit PNGs to write (default -1: all; 0: none)")
  p.add_argument("overrides", nargs="*", help="config overrides, e.g. data.manual_dir=/data/dpdd")
  p.set_defaults(run=_eval)

  p = commands.add_parser("quickstart", help="train configs/quickstart.py on a CPU in minutes, restore the "
                                              "Canon DP pairs of tests/data, write <workdir>/report.html")
  p.add_argument("--workdir", required=True, help="checkpoints, outputs and report.html go here")
  p.add_argument("overrides", nargs="*", help="config overrides, e.g. deblur.num_steps=1000")
  p.set_defaults(run=_quickstart)

  return parser


def main(argv=None):
  args = build_parser().parse_args(argv)
  try:
    sharding.use_compilation_cache()
  except OSError as e:  # a read-only home, say: run without the cache
    print(f"bambnet: compiling without a cache ({e}; set {sharding.COMPILATION_CACHE_ENV})", file=sys.stderr)
  if args.command not in ("convert-torch", "train"):  # train reports once its processes have joined
    print(f"bambnet {args.command}: {sharding.device_report()}", file=sys.stderr)
  try:
    args.run(args)
  except (ValueError, OSError) as e:  # bad input: one line naming the file and the problem
    print(f"bambnet {args.command}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
