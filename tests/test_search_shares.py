"""`bambnet train --config configs/smoke.py`: the search records every branch's pixel share per
round, and no branch is starved (>= search.min_branch_share of the meta pixels)."""

import json
import pathlib

from bambnet_jax import cli

SMOKE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "smoke.py"


def test_smoke_search_gives_every_branch_its_share(tmp_path):
  workdir = tmp_path / "run"
  assert cli.main(["train", "--config", str(SMOKE), "--workdir", str(workdir), "--stop-after", "search",
                   f"data.data_dir={tmp_path / 'data'}"]) == 0
  rounds = json.loads((workdir / "search" / "rounds.json").read_text())
  assert rounds
  for record in rounds:
    shares = record["branch_shares"]
    assert len(shares) == 4 and abs(sum(shares) - 1) < 1e-6
    assert min(shares) >= 0.05, record
    assert record["min_branch_share"] == 0.05
    # The shares are what the solver's thresholds give the meta set's pixel counts.
    counts, edges, r = record["counts"], record["bin_edges"], record["thresholds"]
    centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    for i in range(4):
      upper = r[i + 1] if i < 3 else float("inf")
      mine = sum(c for c, x in zip(counts, centres) if r[i] <= x < upper)
      assert abs(mine / sum(counts) - shares[i]) < 1e-6
