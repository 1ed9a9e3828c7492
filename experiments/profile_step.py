"""Where a benchmark case spends its GPU time: kernel time by kind, idle gaps, and XLA's cost model.

    python experiments/profile_step.py --cases deblur_b2_bf16,coc_b4_fp32
    python experiments/profile_step.py --cases deblur_b2_fp32 --size 64 --width 8 --steps 2  # CPU check

A case of `benchmark.py` (with its options) is compiled, warmed up, and `--steps` calls are traced
with `jax.profiler` (Perfetto JSON). Per step: wall time, GPU busy time, idle gaps by length, kernel
time by kind, the costliest kernels and host work, and XLA's FLOPs and bytes (PERF.md's floors).
One JSON line per case.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax

import benchmark


def kernel_kind(name):
  lowered = name.lower()
  if any(k in lowered for k in ("conv", "xmma", "implicit", "cudnn", "fprop", "dgrad", "wgrad", "winograd")):
    return "convolution"
  if any(k in lowered for k in ("gemm", "cutlass", "cublas", "gemv", "triton_gemm", "dot")):
    return "matmul"
  if any(k in lowered for k in ("memcpy", "memset", "copy")):
    return "copy"
  return "fusion"


def load_trace(log_dir):
  paths = glob.glob(os.path.join(log_dir, "**", "*.json.gz"), recursive=True)
  if not paths:
    raise FileNotFoundError(f"no Perfetto trace under {log_dir}")
  with gzip.open(max(paths, key=os.path.getmtime), "rt") as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def _streams(events):
  """(process names by pid, thread names by (pid, tid), the (pid, tid) of the GPU's streams)."""
  meta = lambda kind: {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
                       if e.get("ph") == "M" and e.get("name") == kind}
  processes, threads = {pid: n for (pid, _), n in meta("process_name").items()}, meta("thread_name")
  gpus = {pid for pid, n in processes.items() if "gpu" in n.lower() and "host" not in n.lower()}
  return processes, threads, {key for key, n in threads.items() if key[0] in gpus and "stream" in n.lower()}


def device_kernels(events):
  """Complete events on the GPU's stream threads: (start_us, duration_us, name)."""
  processes, threads, streams = _streams(events)
  kernels = [(float(e["ts"]), float(e.get("dur", 0.0)), e.get("name", "?")) for e in events
             if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) in streams]
  return kernels, sorted(set(processes.values())), sorted({threads[k] for k in streams})


def host_events(events):
  """(duration_us, name) of complete events on the host's threads (e.g. `cuGraphLaunch`), no Python frames."""
  streams = _streams(events)[2]
  return [(float(e.get("dur", 0.0)), e.get("name", "?")) for e in events
          if e.get("ph") == "X" and (e.get("pid"), e.get("tid")) not in streams
          and not e.get("name", "").startswith("$")]


def _by_name(durations_and_names, width):
  """(total duration, calls) per name, numbered XLA fusions (fusion_12) merged."""
  total, calls = collections.Counter(), collections.Counter()
  for dur, name in durations_and_names:
    key = re.sub(r"(_\d+)+$", "", name.split("(")[0].strip())[:width]
    total[key] += dur
    calls[key] += 1
  return total, calls


def host_table(events, steps, top=15):
  """The host's costliest event names, milliseconds per step (nested events each count in full)."""
  total, calls = _by_name(events, 90)
  return [[k, round(v / steps / 1e3, 3), calls[k] // steps] for k, v in total.most_common(top)]


def kernel_table(kernels, steps):
  """Every kernel name (numbered XLA fusions merged) with its calls and milliseconds per step."""
  total, calls = _by_name(((dur, name) for _, dur, name in kernels), 120)
  return [[k, calls[k] / steps, round(total[k] / steps / 1e3, 4)] for k, _ in calls.most_common()]


def busy_time_us(kernels):
  """Length of the union of the kernels' intervals (overlapping streams counted once)."""
  total, end = 0.0, -1.0
  for start, dur, _ in sorted(kernels):
    stop = start + dur
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


IDLE_GAP_BUCKETS_US = (5, 20, 100)


def idle_gaps_ms(kernels, steps):
  """GPU idle time per step between kernels, by gap length (short gaps: kernel launches lag)."""
  edges = IDLE_GAP_BUCKETS_US + (float("inf"),)
  totals, end = [0.0] * len(edges), None
  for start, dur, _ in sorted(kernels):
    if end is not None and start > end:
      gap = start - end
      totals[next(i for i, e in enumerate(edges) if gap < e)] += gap
    end = start + dur if end is None else max(end, start + dur)
  labels = [f"under_{e}us" for e in IDLE_GAP_BUCKETS_US] + [f"over_{IDLE_GAP_BUCKETS_US[-1]}us"]
  return {label: round(t / steps / 1e3, 3) for label, t in zip(labels, totals)}


def summarise(kernels, steps):
  by_kind, by_name, counts = collections.Counter(), collections.Counter(), collections.Counter()
  for _, dur, name in kernels:
    by_kind[kernel_kind(name)] += dur
    by_name[name[:90]] += dur
    counts[name[:90]] += 1
  return {
      "kernels_per_step": round(len(kernels) / steps, 1),
      "gpu_busy_ms_per_step": round(busy_time_us(kernels) / steps / 1e3, 3),
      "idle_ms_per_step_by_gap": idle_gaps_ms(kernels, steps),
      "kernel_ms_per_step_by_kind": {k: round(v / steps / 1e3, 3) for k, v in by_kind.most_common()},
      "top_kernels_ms_per_step": [[n, round(v / steps / 1e3, 3), counts[n] // steps]
                                  for n, v in by_name.most_common(10)],
  }


def cost_model(compiled):
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return {"xla_gflop": round(analysis.get("flops", 0.0) / 1e9, 1),
          "xla_gbytes_accessed": round(analysis.get("bytes accessed", 0.0) / 1e9, 3)}


def profile_case(name, args, mesh):
  fn, fn_args, _ = benchmark.make_cases(args, mesh)[name]()
  start = time.perf_counter()
  # Compiled once, for the cost model and the calls (a train step as training compiles it).
  fn = fn.lower(*fn_args).compile()
  record = {"case": name, "device": jax.devices()[0].device_kind, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "compile_s": round(time.perf_counter() - start, 1), **cost_model(fn)}
  fn_args = benchmark.run_calls(fn, fn_args, 3)
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      start = time.perf_counter()
      benchmark.run_calls(fn, fn_args, args.steps)
      record["wall_ms_per_step_traced"] = round((time.perf_counter() - start) * 1e3 / args.steps, 3)
    events = load_trace(log_dir)
    kernels, processes, threads = device_kernels(events)
  record.update(summarise(kernels, args.steps) if kernels else {"no_kernels_found": {"processes": processes}})
  record["host_ms_per_step"] = host_table(host_events(events), args.steps)
  record["stream_threads"] = threads[:8] + ([f"... {len(threads)} in all"] if len(threads) > 8 else [])
  if args.dump:
    record["all_kernels"] = kernel_table(kernels, args.steps)
  return record


def main():
  parser = benchmark.parser(__doc__)
  parser.set_defaults(cases="deblur_b2_bf16,deblur_b2_fp32,coc_b4_fp32")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--dump", action="store_true", help="add every kernel's calls and time per step")
  args = parser.parse_args()
  mesh = benchmark.sharding.make_mesh(jax.devices()[:args.devices])
  for name in args.cases.split(","):
    print(json.dumps(profile_case(name, args, mesh)), flush=True)


if __name__ == "__main__":
  main()
