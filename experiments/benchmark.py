"""Speed of BaMBNet's training steps and inference on the device JAX finds; one JSON line per case.

    python experiments/benchmark.py                       # every case at the paper's sizes
    python experiments/benchmark.py --cases deblur_b2_fp32,infer_bf16 --runs 50
    python experiments/benchmark.py --size 64 --infer-size 64x96 --width 8 --runs 3 \
        --frame 320x192 --tile 64 --overlap 16 --tiled-runs 1                         # CPU check
    python experiments/benchmark.py --cases deblur_b8_bf16 --devices 2     # one process, 2 GPUs
    python experiments/benchmark.py --cases deblur_b8_bf16 --processes 2   # one process per GPU

Timing: each case is jitted, called --warmup times (compilation excluded), then timed --runs
times, each call ended by block_until_ready (`median_ms`); then --pipeline-repeats times
--pipeline-steps calls issued back to back and synchronised once, as a training loop runs them
(`pipelined_ms`, per call); and how long a call takes to return (`dispatch_ms`). With the
medians come the card's name, the peak device memory, and the achieved TFLOP/s from SPEC
section 1's FLOP counts (501 GFLOP per 512x512 forward, 3,597 GFLOP at 1120x1680; a training
step counts as 3 forwards: forward, backward through activations and through weights). The
SPEC's released-code figures on an H200 are printed beside each case for reference. Memory:
`memory_gib` is the device memory XLA assigns the case's compiled program (arguments, outputs
and scratch, less donated buffers it reuses), `peak_memory_gib_so_far` the device's peak since
the process started (cumulative over the cases run so far). Train
steps compile as training compiles them (`--conv-fusion`, default off: `model.conv_fusion`),
with the parameters in `--kernel-layout` (default OHWI: `model.kernel_layout`), float32 conv
gradients as `--conv-gradients` says (default auto: `model.conv_gradients`, scaled float16 on a
GPU) and the train state kept flat as training keeps it (training/flat_params.py).

Data parallelism: train cases' batches are per device. `--devices N` drives N local devices from
this process; `--processes N` re-launches this script as N processes of one jax.distributed run
on localhost, process i owning GPU i (on CPU: one CPU device each), so that each GPU has its own
launching thread. Every process runs the same calls and feeds only its rows of the global batch;
process 0 prints, and `images_per_s` counts the global batch. Non-train cases are single-device.

Tiled inference (`tiled_fp32`, `tiled_bf16` with 4 tiles per call): a random 16-bit frame of
--frame pixels (default 6720x4480, a Canon frame) restored through `inference.Deblurrer`, the path
`bambnet deblur` takes, compiled on one batch of tiles first; each timed call restores the whole
frame to host memory (--tiled-runs of them, median). Its `memory_gib` is the network call's on one
batch of tiles; the frame and the blend stay on the host.
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
from bambnet_jax.models import blocks
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

  synchronised: each call timed alone, ended by block_until_ready (latency; the host's launch
  work and the GPU's are never overlapped). pipelined: `pipeline_steps` calls issued back to
  back, then one block_until_ready, divided by their number; repeated `pipeline_repeats` times.
  That is how a training loop runs (it fetches metrics only at log steps), so the host launches
  step k+1 while the GPU runs step k. dispatch: how long a call takes to return to Python,
  before its result is ready.
  """
  out = None
  for _ in range(warmup):
    out = fn(*args)
    args = _carry(args, out)
  jax.block_until_ready(out)
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
    for _ in range(pipeline_steps):
      out = fn(*args)
      args = _carry(args, out)
    jax.block_until_ready(out)
    pipelined.append((time.perf_counter() - start) * 1e3 / pipeline_steps)
  return statistics.median(synchronised), statistics.median(pipelined), statistics.median(dispatch)


def _carry(args, out):
  """A train step donates its state: feed the returned state into the next call."""
  if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], steps.TrainState):
    return (out[0],) + tuple(args[1:])
  return args


def _batch(rng, n, size, keys=("left", "right", "sharp")):
  return {k: rng.random((n, size, size, 3), np.float32) for k in keys}


def train_case(kind, batch_size, size, dtype, width, mesh, matmul_conv_below=0, fuse_branches=False,
               conv_fusion="off", kernel_layout="OHWI", conv_gradients="auto"):
  config = networks.model_config(width=width, dtype=dtype, matmul_conv_below=matmul_conv_below,
                                 fuse_branches=fuse_branches, conv_fusion=conv_fusion,
                                 kernel_layout=kernel_layout, conv_gradients=conv_gradients)
  options = networks.compiler_options(config)  # as training compiles its steps
  optimizer = optax.adam(1e-4)
  rng = np.random.default_rng(0)
  if kind == "coc":
    model = networks.build("coc", config)
    state = steps.create_state(networks.init_params("coc", config, jax.random.key(0)), optimizer)
    fn = steps.jit_train_step(steps.coc_train_step, mesh, options, model=model, optimizer=optimizer, tv_start=0,
                              tv_weight=1e-5)
  else:
    model = networks.build("deblur", config)
    state = steps.create_state(networks.init_params("deblur", config, jax.random.key(0)), optimizer)
    fn = steps.jit_train_step(steps.deblur_train_step, mesh, options, model=model, coc_model=None, optimizer=optimizer,
                              mask_mode=steps.NO_MASKS, anneal_steps=1)
  state = sharding.put_replicated(state, mesh)
  # The case's batch is per device: data parallelism scales it. Each process makes only its rows.
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


def infer_case(height, width_px, dtype, width, matmul_conv_below=0, fuse_branches=False, kernel_layout="OHWI",
               batch_size=1):
  config = networks.model_config(width=width, dtype=dtype, matmul_conv_below=matmul_conv_below,
                                 fuse_branches=fuse_branches, kernel_layout=kernel_layout)
  model = networks.build("deblur", config)
  params = networks.init_params("deblur", config, jax.random.key(0))
  x = jnp.asarray(np.random.default_rng(0).random((batch_size, height, width_px, 6), np.float32))
  fn = jax.jit(lambda p, v: model.apply({"params": p}, v))
  flops = GFLOP_PER_PIXEL_FORWARD * batch_size * height * width_px * (width / 64) ** 2
  return fn, (params, x), flops


class TiledCase:
  """A whole frame restored tile by tile through `inference.Deblurrer` (see the module's doc)."""

  def __init__(self, frame, dtype, width, tile, overlap, **model):
    self.frame_width, self.frame_height = (int(n) for n in frame.lower().split("x"))
    self.batch_size = TILED_BATCH[dtype]
    config = networks.model_config(width=width, **model)
    params = networks.init_params("deblur", config, jax.random.key(0))
    self.deblurrer = inference.Deblurrer(params, config, coc_source="none", compute_dtype=dtype, tile=tile,
                                         overlap=overlap, batch_size=self.batch_size)
    rng = np.random.default_rng(0)
    self.views = rng.integers(0, 2**16, (self.frame_height, self.frame_width, 6), dtype=np.uint16)  # L, R
    layout = inference.tile_layout(self.frame_height, self.frame_width, tile, overlap, inference.NET_MULTIPLE)
    self.num_tiles, self.tile_shape = layout.num_tiles, layout.tile_shape
    self.gflop = self.num_tiles * GFLOP_PER_PIXEL_FORWARD * np.prod(self.tile_shape) * (width / 64) ** 2
    # The network call on one batch of tiles, compiled as the Deblurrer compiles it: its memory.
    self.network_call = infer_case(*self.tile_shape, dtype, width, batch_size=self.batch_size, **model)[:2]

  def warm_up(self):
    """Compiles the network on one batch of tiles (timed apart from the frame)."""
    height, width = self.tile_shape
    self.deblurrer.restore(self.views[:height, :width], max_tiles=self.batch_size)

  def __call__(self):
    restored = self.deblurrer.restore(self.views)  # host data: all device work is done
    assert restored.shape == (self.frame_height, self.frame_width, 3)
    return restored


def make_cases(args, mesh):
  s, (ih, iw) = args.size, map(int, args.infer_size.split("x"))
  model = dict(width=args.width, matmul_conv_below=getattr(args, "matmul_conv_below", 0),
               fuse_branches=getattr(args, "fuse_branches", False),
               kernel_layout=getattr(args, "kernel_layout", "OHWI"))
  # How training compiles its steps; inference is compiled as `bambnet restore` compiles it.
  train = dict(model, mesh=mesh, conv_fusion=getattr(args, "conv_fusion", "off"),
               conv_gradients=getattr(args, "conv_gradients", "auto"))
  tiled = dict(model, frame=getattr(args, "frame", "6720x4480"), tile=getattr(args, "tile", inference.DEFAULT_TILE),
               overlap=getattr(args, "overlap", inference.DEFAULT_OVERLAP))
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
  """(seconds to compile, GiB of device memory) of a jitted case as XLA compiles it.

  The memory is what XLA's buffer assignment gives the program: arguments, outputs and scratch,
  less the donated buffers it reuses for outputs. The jitted calls that follow reuse this
  compilation.
  """
  start = time.perf_counter()
  compiled = fn.lower(*fn_args).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  if analysis is None:  # a backend that does not say
    return seconds, None
  total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
           - analysis.alias_size_in_bytes)
  return seconds, total / 2**30


def time_frames(case, runs):
  """Milliseconds per whole-frame restore of a TiledCase (median of `runs`), after its warm-up."""
  case.warm_up()
  samples = []
  for _ in range(runs):
    start = time.perf_counter()
    case()
    samples.append((time.perf_counter() - start) * 1e3)
  return statistics.median(samples)


def run_case(name, case, args, mesh):
  """The JSON record of one case: its timings, memory and rates."""
  device = jax.local_devices()[0]
  record = {"case": name, "device": device.device_kind, "processes": jax.process_count(),
            "matmul_conv_below": args.matmul_conv_below, "fuse_branches": args.fuse_branches,
            "conv_fusion": args.conv_fusion, "kernel_layout": args.kernel_layout,
            "conv_gradients": args.conv_gradients}
  if isinstance(case, TiledCase):
    compile_s, memory_gib = compiled_memory(*case.network_call)
    ms = time_frames(case, args.tiled_runs)
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


def join_processes(args):
  """A child of --processes: joins the run owning only device `process_id` (as `bambnet train
  --local-processes` does; on CPU the id selects nothing and each process has one CPU device)."""
  jax.config.update("jax_num_cpu_devices", 1)  # before any backend use; no effect on GPU runs
  sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id,
                                  local_device_ids=[args.process_id])


def _child_argv(argv):
  """`argv` without --processes (abbreviations are off, so only these two spellings exist)."""
  out, skip = [], False
  for token in argv:
    if skip:
      skip = False
    elif token == "--processes":
      skip = True
    elif not token.startswith("--processes="):
      out.append(token)
  return out


def launch(argv, processes, timeout):
  """Runs this script as `processes` children of one jax.distributed run; returns the exit code.

  Child 0's output (the JSON lines) goes straight to ours; the others' to logs printed only on
  failure. One failing child, a timeout or an exception here stops all the others.
  """
  coordinator = launch_lib.local_coordinator()
  base = [sys.executable, os.path.abspath(__file__)] + _child_argv(argv)
  commands = [base + ["--process-id", str(i), "--coordinator", coordinator, "--num-processes", str(processes)]
              for i in range(processes)]
  return launch_lib.run_processes(commands, timeout, name=f"benchmark.py --processes {processes}")


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                   allow_abbrev=False)
  parser.add_argument("--cases", default="all", help="comma-separated case names, or all (with --processes > 1: "
                                                     "all train cases)")
  parser.add_argument("--size", type=int, default=512, help="training crop size")
  parser.add_argument("--infer-size", default="1120x1680", help="HxW of the inference case")
  parser.add_argument("--width", type=int, default=64, help="network width (64 = the paper's)")
  parser.add_argument("--matmul-conv-below", type=int, default=networks.model_config().matmul_conv_below,
                      help="model.matmul_conv_below: branch convs on maps under this many pixels as matmuls")
  parser.add_argument("--fuse-branches", action="store_true",
                      help="model.fuse_branches: the U-Net-like branches' convs as grouped convs")
  parser.add_argument("--conv-fusion", choices=networks.CONV_FUSION_MODES, default="off",
                      help="model.conv_fusion: train steps' convs as cuDNN fusions (auto: off, as in old configs)")
  parser.add_argument("--kernel-layout", choices=blocks.KERNEL_LAYOUTS, default="OHWI",
                      help="model.kernel_layout: how conv kernels are stored")
  parser.add_argument("--conv-gradients", choices=convolution.CONV_GRADIENTS, default="auto",
                      help="model.conv_gradients: float32 train steps' 3x3 conv gradients from scaled float16 "
                           "operands (auto: on a GPU) or native (TF32 on a GPU)")
  parser.add_argument("--frame", default="6720x4480", help="WIDTHxHEIGHT of the tiled inference cases' frame")
  parser.add_argument("--tile", type=int, default=inference.DEFAULT_TILE, help="tile side of the tiled cases")
  parser.add_argument("--overlap", type=int, default=inference.DEFAULT_OVERLAP, help="tile overlap of the tiled cases")
  parser.add_argument("--tiled-runs", type=int, default=3, help="whole-frame restores timed per tiled case")
  parser.add_argument("--runs", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--pipeline-steps", type=int, default=10, help="calls issued back to back per pipelined timing")
  parser.add_argument("--pipeline-repeats", type=int, default=5, help="pipelined timings (their median is reported)")
  parser.add_argument("--devices", type=int, default=1,
                      help="devices in the data-parallel mesh; train cases' batches are per device")
  parser.add_argument("--processes", type=int, default=1,
                      help="one process per device (jax.distributed on localhost), process i on GPU i")
  parser.add_argument("--timeout", type=float, help="seconds the --processes children may run (default: no limit)")
  # Set by the parent of --processes for each child.
  parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.processes > 1 and args.devices != 1:
    parser.error("--devices and --processes exclude each other (--processes: one device per process)")
  if args.num_processes:
    args.processes = args.num_processes
  names = case_names(args, parser)
  if args.processes > 1 and args.process_id is None:
    return launch(argv, args.processes, args.timeout)
  if args.process_id is not None:
    join_processes(args)
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
