"""Time and peak memory of tiled deblurring of a full camera frame (default: Canon 6720 x 4480).

    python experiments/bench_tiled_inference.py                          # the paper's net, fp32
    python experiments/bench_tiled_inference.py --dtype bfloat16 --batch-size 4
    python experiments/bench_tiled_inference.py --max-tiles 6            # CPU: time part of the frame

Random weights and a random 16-bit DP pair: speed and memory do not depend on either. The
network is compiled on one tile first (reported as compile_s); then the frame is restored through
`inference.Deblurrer`, the path `bambnet deblur` takes. With --max-tiles only the first tiles run
and the full-frame time is extrapolated (seconds_per_tile x num_tiles, reported as such); memory
is measured with the whole frame's host arrays allocated either way. Peak memory: the device's
peak_bytes_in_use where JAX reports it (GPU), and the process's peak resident set size (on CPU
the network's working memory is part of it). One JSON line.
"""

import argparse
import json
import resource
import time

import jax
import numpy as np

from bambnet_jax.commands import inference
from bambnet_jax.models import networks


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--frame", default="6720x4480", help="WIDTHxHEIGHT in px")
  parser.add_argument("--width", type=int, default=64, help="network width (64: the paper's net)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--tile", type=int, default=inference.DEFAULT_TILE)
  parser.add_argument("--overlap", type=int, default=inference.DEFAULT_OVERLAP)
  parser.add_argument("--batch-size", type=int, default=1, help="tiles per network call")
  parser.add_argument("--max-tiles", type=int, help="run only this many tiles and extrapolate")
  return parser.parse_args()


def peak_device_bytes():
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def main():
  args = parse_args()
  frame_width, frame_height = (int(n) for n in args.frame.lower().split("x"))
  config = networks.model_config(width=args.width)
  params = networks.init_params("deblur", config, jax.random.key(0))
  deblurrer = inference.Deblurrer(params, config, coc_source="none", compute_dtype=args.dtype,
                                  tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
  rng = np.random.default_rng(0)
  views = rng.integers(0, 2**16, (frame_height, frame_width, 6), dtype=np.uint16)  # L then R, RGB

  start = time.perf_counter()
  deblurrer.restore(views[:args.tile or frame_height, :args.tile or frame_width], max_tiles=args.batch_size)
  compile_s = time.perf_counter() - start

  num_tiles = inference.count_tiles(frame_height, frame_width, args.tile, args.overlap)
  tiles_run = num_tiles if args.max_tiles is None else min(args.max_tiles, num_tiles)
  start = time.perf_counter()
  restored = deblurrer.restore(views, max_tiles=tiles_run)  # returns host data: all work is done
  seconds = time.perf_counter() - start
  assert restored.shape == (frame_height, frame_width, 3)

  per_tile = seconds / tiles_run
  print(json.dumps({
      "bench": "tiled_inference", "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
      "frame": [frame_width, frame_height], "net_width": args.width, "dtype": args.dtype,
      "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size,
      "num_tiles": num_tiles, "tiles_run": tiles_run, "compile_s": round(compile_s, 2),
      "seconds": round(seconds, 2), "seconds_per_tile": round(per_tile, 3),
      "full_frame_s": round(per_tile * num_tiles, 1), "full_frame_extrapolated": tiles_run < num_tiles,
      "peak_device_bytes": peak_device_bytes(),
      "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # Linux: KiB
  }))


if __name__ == "__main__":
  main()
