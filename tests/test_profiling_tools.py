"""The measuring tools of experiments/ behind PERF.md: trace parsing, floors, gradient precision."""

import gzip
import json
import pathlib
import sys

import jax
import numpy as np

from bambnet_jax.models import networks

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import bench_floors  # pylint: disable=g-import-not-at-top,wrong-import-position
import gradient_precision  # pylint: disable=g-import-not-at-top,wrong-import-position
import profile_step  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_busy_time_is_the_union_of_kernel_intervals():
  rng = np.random.default_rng(0)
  starts = rng.uniform(0, 1000, 200)
  durations = rng.uniform(0, 30, 200)
  kernels = [(float(s), float(d), "k") for s, d in zip(starts, durations)]
  grid = np.zeros(int(np.ceil(max(starts + durations))) * 100, bool)  # 0.01 us cells
  for s, d in zip(starts, durations):
    grid[int(round(s * 100)):int(round((s + d) * 100))] = True
  # Each interval's two ends are rounded to the grid: at most 0.01 us of error per interval.
  assert abs(profile_step.busy_time_us(kernels) - grid.sum() / 100) <= 0.01 * len(kernels)


def test_device_kernels_reads_only_gpu_stream_threads(tmp_path):
  events = [
      {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
      {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}},
      {"ph": "M", "name": "thread_name", "pid": 2, "tid": 7, "args": {"name": "Stream #14(Compute)"}},
      {"ph": "M", "name": "thread_name", "pid": 2, "tid": 8, "args": {"name": "XLA Ops"}},
      {"ph": "X", "pid": 2, "tid": 7, "ts": 10, "dur": 5, "name": "sm90_xmma_wgrad_implicit_gemm"},
      {"ph": "X", "pid": 2, "tid": 7, "ts": 20, "dur": 2, "name": "loop_add_fusion_12"},
      {"ph": "X", "pid": 2, "tid": 8, "ts": 10, "dur": 50, "name": "an XLA op, not a kernel"},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 0, "dur": 99, "name": "host work"},
  ]
  (tmp_path / "plugins").mkdir()
  with gzip.open(tmp_path / "plugins" / "perfetto_trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  kernels, _, threads = profile_step.device_kernels(profile_step.load_trace(str(tmp_path)))
  assert sorted(k[2] for k in kernels) == ["loop_add_fusion_12", "sm90_xmma_wgrad_implicit_gemm"]
  assert threads == ["Stream #14(Compute)"]
  summary = profile_step.summarise(kernels, steps=1)
  assert summary["kernel_ms_per_step_by_kind"] == {"convolution": 0.005, "fusion": 0.002}
  assert profile_step.kernel_table(kernels, 1)[1][0] == "loop_add_fusion"
  # The host's side: everything off the GPU's streams, the XLA op thread included.
  host = profile_step.host_events(events)
  assert sorted(name for _, name in host) == ["an XLA op, not a kernel", "host work"]


def test_host_table_sums_names_per_step_without_python_frames():
  events = [
      {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 0, "dur": 4000, "name": "cuGraphLaunch"},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 9, "dur": 2000, "name": "cuGraphLaunch"},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 9, "dur": 500, "name": "fusion_12"},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 9, "dur": 700, "name": "fusion_3"},
      {"ph": "X", "pid": 1, "tid": 3, "ts": 0, "dur": 9999, "name": "$benchmark.py:12 main"},
  ]
  table = profile_step.host_table(profile_step.host_events(events), steps=2)
  assert table == [["cuGraphLaunch", 3.0, 1], ["fusion", 0.6, 1]]


def test_floors_measure_something_on_the_cpu():
  assert bench_floors.matmul_tflops(64, np.float32, None, runs=2) > 0
  assert bench_floors.copy_gbps(1, runs=2) > 0


def test_idle_gaps_are_binned_by_length_per_step():
  # Gaps of 2, 10, 50 and 400 us between kernels; the overlapping pair leaves no gap.
  kernels = [(0.0, 10.0, "a"), (5.0, 10.0, "b"), (17.0, 3.0, "c"), (30.0, 5.0, "d"), (85.0, 5.0, "e"),
             (490.0, 10.0, "f")]
  assert profile_step.idle_gaps_ms(kernels, steps=2) == {
      "under_5us": 0.001, "under_20us": 0.005, "under_100us": 0.025, "over_100us": 0.2}


def test_gradient_precision_compares_each_mode_with_float32_products(capsys):
  """On a CPU native products are float32 ones, so native is the reference itself; float16 rounds
  the full-resolution convs' gradients (128 x 128 maps) to ~2^-11. The random last conv carries
  gradient into every parameter."""
  gradient_precision.main(["--nets", "deblur", "--size", "128", "--width", "8", "--batch", "1"])
  records = {r["conv_gradients"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
  assert records["native"]["rel_fro_err"] == 0.0 and records["native"]["max_array_rel_err"] == 0.0
  assert 0 < records["float16"]["rel_fro_err"] < 1e-3
  # Most parameters get gradient (at width 8 a channel attention squeezes to one channel, which
  # ReLU can leave dead).
  leaves = jax.tree_util.tree_leaves(networks.init_params("deblur", networks.model_config(width=8), jax.random.key(0)))
  assert records["float16"]["arrays"] == records["native"]["arrays"] > 0.7 * len(leaves)
