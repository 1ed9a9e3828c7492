"""The measuring tools of experiments/ behind PERF.md and RESULTS.md: trace parsing, floors, crop edges."""

import gzip
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bambnet_jax.models import blocks
from bambnet_jax.models import networks
import numpy_conv

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import bench_conv_kernels  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_floors  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_pallas_wgrad  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_gradient_formats  # pylint: disable=g-import-not-at-top,wrong-import-position
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


def test_crop_edges_bias_the_reblur_minimiser_only_near_the_edges():
  import coc_crop_borders  # pylint: disable=g-import-not-at-top
  result = coc_crop_borders.main(["--scenes", "2"])
  assert result["mae_px_band_crop_alone"] > 1.3 * result["mae_px_band_full_scene"]
  assert abs(result["mae_px_inside_crop_alone"] - result["mae_px_inside_full_scene"]) < 0.15


def test_idle_gaps_are_binned_by_length_per_step():
  # Gaps of 2, 10, 50 and 400 us between kernels; the overlapping pair leaves no gap.
  kernels = [(0.0, 10.0, "a"), (5.0, 10.0, "b"), (17.0, 3.0, "c"), (30.0, 5.0, "d"), (85.0, 5.0, "e"),
             (490.0, 10.0, "f")]
  assert profile_step.idle_gaps_ms(kernels, steps=2) == {
      "under_5us": 0.001, "under_20us": 0.005, "under_100us": 0.025, "over_100us": 0.2}


def test_conv_kernel_benchmark_times_the_passes_numpy_computes(capsys):
  calls, wait, _, inputs = bench_conv_kernels.jax_passes(2, 6, 5, "float32")
  x, w, dy = (np.asarray(inputs[k], np.float64) for k in ("x", "w", "dy"))
  expected = dict(zip(("forward", "dgrad", "wgrad"), numpy_conv.conv3x3_passes(x, w, dy)), bias_grad=dy.sum((0, 1, 2)))
  for name, reference in expected.items():
    np.testing.assert_allclose(np.asarray(wait(calls[name]())), reference, rtol=1e-4, atol=1e-4, err_msg=name)
  bench_conv_kernels.main(["--sizes", "8", "--channels", "4", "--dtypes", "float32", "--burst", "1", "--repeats", "1"])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r["pass"] for r in records] == ["forward", "dgrad", "wgrad", "bias_grad"]
  assert all(r["us"] > 0 and r["size"] == 8 for r in records)


def _deblur_net_gradients(params, model, views, target):
  loss = lambda p: jnp.mean(jnp.abs(model.apply({"params": p}, views) - target))
  return jax.grad(loss)(params)


def test_pallas_weight_gradient_is_numpys_and_the_net_s_gradients_are_xla_s():
  """The trial kernel (interpreted on CPU) computes a 3x3 conv's weight gradient as NumPy does,
  and patched into every conv of a small deblurring net it changes no gradient beyond rounding."""
  rng = np.random.default_rng(0)
  x, dy = (rng.standard_normal((2, 8, 16, 16)).astype(np.float32) for _ in range(2))
  for precision in bench_pallas_wgrad.PRECISIONS:
    got = bench_pallas_wgrad.conv3x3_weight_gradient(x, dy, chunk=64, block=16, precision=precision)
    np.testing.assert_allclose(got, numpy_conv.weight_gradient(x, dy), rtol=1e-4, atol=1e-4)
  config = networks.model_config(width=16, branch_capacities=(1, 4))
  model = networks.build("deblur", config)
  params = networks.init_params("deblur", config, jax.random.key(0))
  # A random tail, not the zero one of initialisation, so that gradient reaches the body.
  params["tail"]["kernel"] = 0.1 * jax.random.normal(jax.random.key(1), params["tail"]["kernel"].shape)
  views, target = jax.random.uniform(jax.random.key(2), (2, 16, 16, 6)), jax.random.uniform(jax.random.key(3), (2, 16, 16, 3))
  expected = _deblur_net_gradients(params, model, views, target)
  options = dict(precision="tf32", chunk=512, block=64, num_warps=4, num_stages=3)
  original, patched = blocks.conv, bench_pallas_wgrad.patched_conv(options, min_pixels=0)
  routed = []
  blocks.conv = lambda x, kernel, *rest: (routed.append(x.shape), patched(x, kernel, *rest))[1]
  try:
    got = _deblur_net_gradients(params, model, views, target)
  finally:
    blocks.conv = original
  assert (2, 16, 16, 16) in routed
  for (path, want), have in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree_util.tree_leaves(got)):
    np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-6 * float(np.abs(want).max()), err_msg=jax.tree_util.keystr(path))
  assert max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(expected["body"])) > 0


def test_gradient_formats_benchmark_reports_each_format_s_time_and_error(capsys):
  x, kernel, dy = bench_gradient_formats.sample_inputs(2, 6, 4)
  _, want_dx, want_dw = numpy_conv.conv3x3_passes(*(np.asarray(a, np.float64) for a in (x, kernel, dy)))
  dx, dw = bench_gradient_formats.autodiff_gradients(x, kernel, dy)
  np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-6 * np.abs(want_dw).max())
  np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-6 * np.abs(want_dx).max())
  bench_gradient_formats.main(["--sizes", "8", "--channels", "4", "--burst", "1", "--repeats", "1"])
  records = {r["variant"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
  assert set(records) == set(bench_gradient_formats.variants(x, kernel, dy)) and all(r["us"] > 0 for r in records.values())
  for gradient in ("wgrad", "dgrad"):
    assert records[f"{gradient}_highest"]["rel_fro_err"] == 0.0
    assert 0 < records[f"{gradient}_float16"]["rel_fro_err"] < 2e-3
    assert records[f"{gradient}_tf32_autodiff"]["rel_fro_err"] < 1e-6  # CPU: float32
    assert "rel_fro_err" not in records[f"{gradient}_float16_kernel"]


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
