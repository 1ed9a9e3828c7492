"""Speed of BaMBNet's training steps and inference on the device JAX finds; one JSON line per case.

    python experiments/benchmark.py                       # every case at the paper's sizes
    python experiments/benchmark.py --cases deblur_b2_fp32,infer_bf16 --runs 50
    python experiments/benchmark.py --size 64 --infer-size 64x96 --width 8 --runs 3 \
        --frame 320x192 --tile 64 --overlap 16 --tiled-runs 1                         # CPU check
    python experiments/benchmark.py --cases deblur_b8_bf16 --devices 2     # one process, 2 GPUs
    python experiments/benchmark.py --cases deblur_b8_bf16 --processes 2   # one process per GPU

Each case reports its times (`time_calls`), XLA's memory for the compiled program, the device's
peak so far, and TFLOP/s from SPEC section 1's FLOP counts (a training step: 3 forwards), beside
the released code's H200 times. Train batches are per device (`images_per_s`: the global batch).
The tiled cases restore a random 16-bit frame through `inference.Deblurrer`, as `bambnet deblur`.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from bambnet_jax.commands import inference
from bambnet_jax.losses import reblur
from bambnet_jax.models import convolution
from bambnet_jax.models import networks
from bambnet_jax.parallel import launch as launch_lib
from bambnet_jax.parallel import sharding
from bambnet_jax.data import pipeline
from bambnet_jax.training import steps

GFLOP_PER_PIXEL_FORWARD = 501.0 / (512 * 512)  # SPEC section 1, default width
RELEASED_H200_MS = {"deblur_b2_fp32": 99, "deblur_b2_bf16": 80, "deblur_b8_bf16": 163, "coc_b4_fp32": 395,
                    "reblur_loss_b4": 187, "infer_fp32": 157, "infer_bf16": 137}
TILED_BATCH = {"float32": 1, "bfloat16": 4}  # tiles per network call (PERF.md: the faster choices)


def time_calls(fn, args, runs, warmup, pipeline_steps=10, pipeline_repeats=5):
  """Milliseconds per call of `fn`, medians: (synchronised, pipelined, dispatch).

  pipelined: `pipeline_steps` calls issued back to back and synchronised once, as a training loop
  runs them. dispatch: until a call returns to Python.
  """
  args = run_calls(fn, args, warmup)
  if jax.process_count() > 1:  # all processes start the timed calls together
    multihost_utils.sync_global_devices("benchmark: timed runs")
  synchronised, dispatch = [], []
  for _ in range(runs):
    start = time.perf_counter()
    out = fn(*args)
    dispatch.append((time.perf_counter() - start) * 1e3)
    jax.block_until_ready(out)
    synchronised.append((time.perf_counter() - start) * 1e3)
    args = _carry(args, out)
  pipelined = []
  for _ in range(pipeline_repeats):
    start = time.perf_counter()
    args = run_calls(fn, args, pipeline_steps)
    pipelined.append((time.perf_counter() - start) * 1e3 / pipeline_steps)
  return statistics.median(synchronised), statistics.median(pipelined), statistics.median(dispatch)


def _carry(args, out):
  """A train step donates its state: feed the returned state into the next call."""
  if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], steps.TrainState):
    return (out[0],) + tuple(args[1:])
  return args


def run_calls(fn, args, calls):
  """`calls` calls of `fn` issued back to back, then waited for; returns the next call's arguments."""
  out = None
  for _ in range(calls):
    out = fn(*args)
    args = _carry(args, out)
  jax.block_until_ready(out)
  return args


def _batch(rng, n, size, keys=("left", "right", "sharp")):
  return {k: rng.random((n, size, size, 3), np.float32) for k in keys}


def train_case(kind, batch_size, size, dtype, width, mesh, conv_gradients="auto"):
  config = networks.model_config(width=width, dtype=dtype, conv_gradients=conv_gradients)
  optimizer = optax.adam(1e-4)
  rng = np.random.default_rng(0)
  model = networks.build(kind, config)
  state = sharding.put_replicated(steps.create_state(networks.init_params(kind, config, jax.random.key(0)),
                                                     optimizer), mesh)
  if kind == "coc":
    fn = steps.jit_train_step(steps.coc_train_step, mesh, model=model, optimizer=optimizer, tv_start=0,
                              tv_weight=1e-5)
  else:
    fn = steps.jit_train_step(steps.deblur_train_step, mesh, model=model, coc_model=None, optimizer=optimizer,
                              mask_mode=steps.NO_MASKS, anneal_steps=1)
  # The batch is per device; each process makes only its rows.
  local_rows = batch_size * len(mesh.local_devices)
  batch = pipeline.put_on_mesh(_batch(rng, local_rows, size), mesh)
  flops = 3 * GFLOP_PER_PIXEL_FORWARD * batch_size * mesh.devices.size * size * size * (width / 64) ** 2
  return fn, (state, batch), flops


def reblur_case(batch_size, size):
  rng = np.random.default_rng(0)
  b = {k: jnp.asarray(v) for k, v in _batch(rng, batch_size, size, ("left", "right")).items()}
  coc = jnp.asarray(rng.uniform(-6, 6, (batch_size, size, size, 3)).astype(np.float32))

  @jax.jit
  def loss_and_grad(left, right, coc):
    responses = reblur.kernel_responses(left, right)
    return jax.value_and_grad(lambda c: reblur.reblur_loss_from_responses(responses, c))(coc)

  return loss_and_grad, (b["left"], b["right"], coc), None


def infer_case(height, width_px, dtype, width, batch_size=1):
  config = networks.model_config(width=width, dtype=dtype)
  model = networks.build("deblur", config)
  params = networks.init_params("deblur", config, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).random((batch_size, height, width_px, 6), np.float32))
  fn = jax.jit(lambda p, v: model.apply({"params": p}, v))
  flops = GFLOP_PER_PIXEL_FORWARD * batch_size * height * width_px * (width / 64) ** 2
  return fn, (params, x), flops


class TiledCase:
  """A whole frame restored tile by tile through `inference.Deblurrer` (see the module's doc)."""

  def __init__(self, frame, dtype, width, tile, overlap):
    self.frame_width, self.frame_height = (int(n) for n in frame.lower().split("x"))
    self.batch_size = TILED_BATCH[dtype]
    config = networks.model_config(width=width)
    params = networks.init_params("deblur", config, jax.random.key(0))
    self.deblurrer = inference.Deblurrer(params, config, coc_source="none", compute_dtype=dtype, tile=tile,
                                         overlap=overlap, batch_size=self.batch_size)
    rng = np.random.default_rng(0)
    self.views = rng.integers(0, 2**16, (self.frame_height, self.frame_width, 6), dtype=np.uint16)  # L, R
    layout = inference.tile_layout(self.frame_height, self.frame_width, tile, overlap, inference.NET_MULTIPLE)
    self.num_tiles, self.tile_shape = layout.num_tiles, layout.tile_shape
    self.gflop = self.num_tiles * GFLOP_PER_PIXEL_FORWARD * np.prod(self.tile_shape) * (width / 64) ** 2
    # The network call on one batch of tiles, compiled as the Deblurrer compiles it: its memory.
    self.network_call = infer_case(*self.tile_shape, dtype, width, batch_size=self.batch_size)[:2]

  def time(self, runs):
    """Milliseconds per whole-frame restore (median of `runs`), compiled on one batch of tiles first."""
    height, width = self.tile_shape
    self.deblurrer.restore(self.views[:height, :width], max_tiles=self.batch_size)
    samples = []
    for _ in range(runs):
      start = time.perf_counter()
      restored = self.deblurrer.restore(self.views)  # host data: all device work is done
      samples.append((time.perf_counter() - start) * 1e3)
      assert restored.shape == (self.frame_height, self.frame_width, 3)
    return statistics.median(samples)


def make_cases(args, mesh):
  s, (ih, iw) = args.size, map(int, args.infer_size.split("x"))
  model = dict(width=args.width)
  train = dict(model, mesh=mesh, conv_gradients=args.conv_gradients)
  tiled = dict(model, frame=args.frame, tile=args.tile, overlap=args.overlap)
  return {
      "deblur_b2_fp32": lambda: train_case("deblur", 2, s, "float32", **train),
      "deblur_b2_bf16": lambda: train_case("deblur", 2, s, "bfloat16", **train),
      "deblur_b8_fp32": lambda: train_case("deblur", 8, s, "float32", **train),
      "deblur_b8_bf16": lambda: train_case("deblur", 8, s, "bfloat16", **train),
      "coc_b4_fp32": lambda: train_case("coc", 4, s, "float32", **train),
      "coc_b4_bf16": lambda: train_case("coc", 4, s, "bfloat16", **train),
      "reblur_loss_b4": lambda: reblur_case(4, s),
      "infer_fp32": lambda: infer_case(ih, iw, "float32", **model),
      "infer_bf16": lambda: infer_case(ih, iw, "bfloat16", **model),
      "tiled_fp32": lambda: TiledCase(dtype="float32", **tiled),
      "tiled_bf16": lambda: TiledCase(dtype="bfloat16", **tiled),
  }


def compiled_memory(fn, fn_args):
  """(seconds to compile, GiB of device memory: arguments, outputs and scratch less donated buffers)."""
  start = time.perf_counter()
  compiled = fn.lower(*fn_args).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  if analysis is None:  # a backend that does not say
    return seconds, None
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
           - analysis.alias_size_in_bytes)
  return seconds, total / 2**30


def run_case(name, case, args, mesh):
  """The JSON record of one case: its timings, memory and rates."""
  device = jax.local_devices()[0]
  record = {"case": name, "device": device.device_kind, "processes": jax.process_count(),
            "conv_gradients": args.conv_gradients}
  if isinstance(case, TiledCase):
    compile_s, memory_gib = compiled_memory(*case.network_call)
    ms = case.time(args.tiled_runs)
    record.update(devices=1, frame=[case.frame_width, case.frame_height], tile=args.tile, overlap=args.overlap,
                  tiles=case.num_tiles, tiles_per_call=case.batch_size, median_ms=round(ms, 3),
                  tile_ms=round(ms / case.num_tiles, 3))
    gflop, train = case.gflop, False
  else:
    fn, fn_args, gflop = case
    train = isinstance(fn_args[0], steps.TrainState)
    compile_s, memory_gib = compiled_memory(fn, fn_args)
    ms, pipelined_ms, dispatch_ms = time_calls(fn, fn_args, args.runs, args.warmup, args.pipeline_steps,
                                               args.pipeline_repeats)
    record.update(devices=mesh.devices.size if train else 1, median_ms=round(ms, 3),
                  pipelined_ms=round(pipelined_ms, 3), dispatch_ms=round(dispatch_ms, 3))
  stats = device.memory_stats() or {}
  record.update(compile_s=round(compile_s, 2),
                memory_gib=None if memory_gib is None else round(memory_gib, 3),
                peak_memory_gib_so_far=round(stats.get("peak_bytes_in_use", 0) / 2**30, 3),
                released_h200_ms=RELEASED_H200_MS.get(name), xla_flags=os.environ.get("XLA_FLAGS", ""))
  if gflop:
    record["tflops"] = round(gflop / ms, 2)  # GFLOP / ms = TFLOP / s
  if train:
    images = fn_args[1]["left"].shape[0]  # the global batch
    record["images_per_s"] = round(images / ms * 1e3, 2)
    record["images_per_s_pipelined"] = round(images / pipelined_ms * 1e3, 2)
  return record


def is_train_case(name):
  return name.split("_")[0] in ("deblur", "coc")


def case_names(args, parser):
  """The cases to run; with several processes only train cases (the others are single-device)."""
  known = list(make_cases(args, None))
  if args.cases == "all":
    return [n for n in known if is_train_case(n)] if args.processes > 1 else known
  names = args.cases.split(",")
  unknown = [n for n in names if n not in known]
  if unknown:
    parser.error(f"unknown case(s) {','.join(unknown)}; known: {','.join(known)}")
  single = [n for n in names if not is_train_case(n)]
  if args.processes > 1 and single:
    parser.error(f"--processes > 1 runs train cases only; {','.join(single)} run(s) on one device")
  return names


def launch(argv, processes, timeout):
  """Runs this script as `processes` children of one jax.distributed run; returns the exit code."""
  coordinator = launch_lib.local_coordinator()
  commands = [[sys.executable, os.path.abspath(__file__), *argv, "--process-id", str(i), "--coordinator", coordinator]
              for i in range(processes)]
  return launch_lib.run_processes(commands, timeout, name=f"benchmark.py --processes {processes}")


def parser(description=__doc__):
  """The command line (profile_step.py shares it)."""
  p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)
  p.add_argument("--cases", default="all", help="comma-separated case names, or all (--processes > 1: train cases)")
  p.add_argument("--size", type=int, default=512, help="training crop size")
  p.add_argument("--infer-size", default="1120x1680", help="HxW of the inference case")
  p.add_argument("--width", type=int, default=64, help="network width (64 = the paper's)")
  p.add_argument("--conv-gradients", choices=convolution.CONV_GRADIENTS, default="auto",
                 help="model.conv_gradients: float32 train steps' 3x3 conv gradients from scaled float16 "
                      "operands (auto: on a GPU) or native (TF32 on a GPU)")
  p.add_argument("--frame", default="6720x4480", help="WIDTHxHEIGHT of the tiled inference cases' frame")
  p.add_argument("--tile", type=int, default=inference.DEFAULT_TILE, help="tile side of the tiled cases")
  p.add_argument("--overlap", type=int, default=inference.DEFAULT_OVERLAP, help="tile overlap of the tiled cases")
  p.add_argument("--tiled-runs", type=int, default=3, help="whole-frame restores timed per tiled case")
  p.add_argument("--runs", type=int, default=20)
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--pipeline-steps", type=int, default=10, help="calls issued back to back per pipelined timing")
  p.add_argument("--pipeline-repeats", type=int, default=5, help="pipelined timings (their median is reported)")
  p.add_argument("--devices", type=int, default=1, help="devices in the data-parallel mesh (batches per device)")
  p.add_argument("--processes", type=int, default=1, help="one process per device (jax.distributed); process i: GPU i")
  p.add_argument("--timeout", type=float, help="seconds the --processes children may run (default: no limit)")
  # Set by the parent of --processes for each child.
  p.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
  p.add_argument("--coordinator", help=argparse.SUPPRESS)
  return p


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  p = parser()
  args = p.parse_args(argv)
  if args.processes > 1 and args.devices != 1:
    p.error("--devices and --processes exclude each other (--processes: one device per process)")
  names = case_names(args, p)
  if args.processes > 1 and args.process_id is None:
    return launch(argv, args.processes, args.timeout)
  if args.process_id is not None:  # a child of --processes: it owns device `process_id` only
    jax.config.update("jax_num_cpu_devices", 1)  # before any backend use; no effect on GPU runs
    sharding.initialize_distributed(args.coordinator, args.processes, args.process_id,
                                    local_device_ids=[args.process_id])
    mesh = sharding.make_mesh()  # every device of every process
  else:
    mesh = sharding.make_mesh(jax.devices()[:args.devices])
  cases = make_cases(args, mesh)
  for name in names:
    record = run_case(name, cases[name](), args, mesh)
    if jax.process_index() == 0:
      print(json.dumps(record), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
