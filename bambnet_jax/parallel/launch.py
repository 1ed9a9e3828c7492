"""One host, one process per GPU (a launch-bound step scales so: experiments/PERF.md): runs N
commands as the processes of one jax.distributed run, stopping them all when one fails."""

import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time


def local_coordinator():
  """'localhost:PORT' with a port free right now, for process 0 to serve the coordination on."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return f"localhost:{s.getsockname()[1]}"


def run_processes(commands, timeout=None, name="processes"):
  """Runs every command (an argv list) at once; 0 if all exit 0, else 1 after killing the rest.
  Process 0's output is ours; the others' go to logs printed to our stderr only on a failure."""
  previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the children
  children, failure = [], None
  with tempfile.TemporaryDirectory(prefix="bambnet_processes_") as logs:
    logs = pathlib.Path(logs)
    try:
      sys.stdout.flush()
      sys.stderr.flush()
      children.append(subprocess.Popen(commands[0]))
      for i, command in enumerate(commands[1:], 1):
        with open(logs / f"{i}.out", "w") as out, open(logs / f"{i}.err", "w") as err:
          children.append(subprocess.Popen(command, stdout=out, stderr=err))
      failure = _wait(children, timeout)
    except BaseException as e:  # pylint: disable=broad-except
      failure = f"{type(e).__name__}: {e}"
      raise
    finally:
      for child in children:
        child.kill()  # a no-op once it has exited
        child.wait()
      signal.signal(signal.SIGTERM, previous)
      if failure:
        _print_logs(logs, children, f"{name}: {failure}")
  return 1 if failure else 0


def _wait(children, timeout):
  """None once all children exit 0; else why not (the first failure, or the timeout)."""
  deadline = None if timeout is None else time.monotonic() + timeout
  while True:
    codes = [child.poll() for child in children]
    for i, code in enumerate(codes):
      if code not in (None, 0):
        return f"process {i} exited with code {code}"
    if all(code == 0 for code in codes):
      return None
    if deadline is not None and time.monotonic() > deadline:
      return f"timed out after {timeout:g} s"
    time.sleep(0.1)


def _print_logs(logs, children, failure):
  print(failure, file=sys.stderr)
  for i, child in enumerate(children):
    print(f"----- process {i} (exit code {child.returncode}) -----", file=sys.stderr)
    for stream in ("out", "err"):
      path = logs / f"{i}.{stream}"
      if path.exists() and path.stat().st_size:
        print(path.read_text(errors="replace"), file=sys.stderr)


def train_commands(config, workdir, overrides, processes, stop_after=None, python=None):
  """The `bambnet train` command of each of `processes` processes on this host, process i on GPU i."""
  coordinator = local_coordinator()
  base = [python or sys.executable, "-m", "bambnet_jax.cli", "train", "--config", config, "--workdir", str(workdir)]
  if stop_after:
    base += ["--stop-after", stop_after]
  return [base + list(overrides) + [f"parallel.coordinator={coordinator}", f"parallel.num_processes={processes}",
                                    f"parallel.process_id={i}", f"parallel.local_device_ids={i}"]
          for i in range(processes)]
