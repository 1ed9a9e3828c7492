"""Throughput of the input pipeline on DPDD-style 16-bit 512x512 training patches (CPU only).

    python experiments/bench_input_pipeline.py --workers 0,2,4,8 --batches 200

Prepares `dpdd/patches` from a fake DPDD tree (noisy 16-bit PNGs), then times
`pipeline.training_batches` per worker count. One JSON line per setting. A GPU train step of
batch 2 takes ~20 ms: the pipeline must deliver well over 40 batches/s.
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

import cv2
import jax
import numpy as np
import tensorflow_datasets as tfds

from bambnet_jax.data import pipeline
from bambnet_jax.data import records
import tfds_dpd

HEIGHT, WIDTH = 1120, 1680
KEYS = {"deblur": pipeline.DEBLUR_STAGE_KEYS, "coc": pipeline.COC_STAGE_KEYS, "all": pipeline.EVAL_KEYS}


def _photo_like(rng):
  """Smooth structure plus sensor-like noise, so the low byte of each pixel is not constant."""
  structure = cv2.resize(rng.random((HEIGHT // 32, WIDTH // 32, 3), np.float32), (WIDTH, HEIGHT),
                         interpolation=cv2.INTER_CUBIC)
  noisy = np.clip(structure + rng.normal(0, 0.01, structure.shape), 0, 1)
  return np.rint(noisy * 65535).astype(np.uint16)


def write_fake_dpdd(root, num_train, seed=0):
  rng = np.random.default_rng(seed)
  for prefix, count in (("train", num_train), ("val", 1)):
    for i in range(count):
      name = f"1P0A{prefix[0]}{i:03d}"
      files = (f"{prefix}_c/source/{name}.png", f"{prefix}_c/target/{name}9.png",
               f"{prefix}_l/source/{name}_L.png", f"{prefix}_r/source/{name}_R.png")
      for file_name in files:
        path = root / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _photo_like(rng))


def measure(source, workers, batches, warmup, mesh, read_threads):
  iterator = pipeline.training_batches(source, mesh, batch_size=2, seed=0, worker_count=workers,
                                       read_threads=read_threads)
  for _ in range(warmup):
    jax.block_until_ready(next(iterator))
  start = time.perf_counter()
  for _ in range(batches):
    batch = jax.block_until_ready(next(iterator))
  elapsed = time.perf_counter() - start
  assert batch["left"].shape == (2, 512, 512, 3) and batch["left"].dtype == np.float32
  return batches / elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workers", default="0,2", help="comma-separated worker process counts")
  parser.add_argument("--batches", type=int, default=100, help="timed batches per setting")
  parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (worker start-up)")
  parser.add_argument("--scenes", type=int, default=2, help="fake training scenes (about 20 patches each)")
  parser.add_argument("--keys", choices=sorted(KEYS), default="deblur")
  parser.add_argument("--read-threads", type=int, default=2, help="reader threads per process")
  parser.add_argument("--place", action="store_true",
                      help="also place each batch on jax.devices()[0] (float conversion there)")
  args = parser.parse_args()
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), (pipeline.DATA_AXIS,)) if args.place else None
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    write_fake_dpdd(tmp / "manual", args.scenes)
    start = time.perf_counter()
    builder = tfds_dpd.dpdd.Dpdd(config="patches", data_dir=tmp / "data")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=tmp / "manual"))
    prepare_s = time.perf_counter() - start
    source = records.DPSource.from_tfds("dpdd/patches", "train", KEYS[args.keys], data_dir=tmp / "data")
    for workers in (int(w) for w in args.workers.split(",")):
      rate = measure(source, workers, args.batches, args.warmup, mesh, args.read_threads)
      print(json.dumps({
          "benchmark": "input_pipeline", "batch": 2, "patch": 512, "bit_depth": 16,
          "keys": list(KEYS[args.keys]), "workers": workers, "read_threads": args.read_threads,
          "batches_per_s": round(rate, 1), "patches_in_dataset": len(source), "prepare_s": round(prepare_s, 1),
          "placed_on": str(jax.devices()[0].device_kind) if args.place else "host",
          "cpu_count": os.cpu_count(), "png_compression": tfds_dpd.common.PNG_COMPRESSION,
      }), flush=True)


if __name__ == "__main__":
  main()
