"""Disaggregation with prefix caching on the Mooncake conversation trace: how much KV does a
transfer skip when the decode replica's pool keeps landed prompts' hash blocks cached, and
does routing the decode stage to the replica holding the longest cached prefix send less?

    python experiments/serving_disagg/prefix_decode.py [--requests N]

2 prefill + 2 decode H100 replicas of Llama-3.1-8B (``experiment=serving_prefix`` with
``topology=disaggregated``: chunked prefill on both pools, paged KV, the default link). Setups:
prefix caching off; on, with round-robin or least-outstanding decode routing; on, with
prefix-aware routing at both stages. Writes ``results/prefix_decode.csv``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate

from llmos_sim.run import compose
from llmos_sim.serving import simulate

OUT = Path(__file__).resolve().parent / "results"
SETUPS = {  # name -> overrides
    "caching off": ["serving.prefix_caching=false"],
    "caching, decode round robin": ["topology.decode.router={_target_: llmos_sim.policies.routing.RoundRobin}"],
    "caching, decode least outstanding": [
        "topology.decode.router={_target_: llmos_sim.policies.routing.LeastOutstanding}"],
    "caching, prefix-aware at both stages": [],
}
KEYS = ("kv_transfers", "kv_transfer_bytes", "kv_transfer_cached_tokens", "kv_transfer_s_mean", "prefix_hit_rate_tokens",
        "mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "completed")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=None, help="first N requests of the trace (default: all 12,031)")
    a = ap.parse_args()
    rows = []
    for name, over in SETUPS.items():
        c = compose(["experiment=serving_prefix", "topology=disaggregated", "topology.prefill.replicas=2",
                     "topology.decode.replicas=2", f"workload.max_requests={'null' if a.requests is None else a.requests}", *over])
        t = time.process_time()
        r = simulate(c, seed=0)
        s = r.summary
        cpu = time.process_time() - t
        bpt = instantiate(c.model).kv_bytes_per_token
        sent, cached = s["kv_transfer_bytes"], s.get("kv_transfer_cached_tokens", 0.0) * bpt
        rows.append({"setup": name, **{k: s.get(k, 0.0) for k in KEYS},
                     "sent_share": round(sent / (sent + cached), 4), "sim_cpu_s": round(cpu, 1)})
        print(rows[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(OUT / "prefix_decode.csv", index=False)


if __name__ == "__main__":
    main()
