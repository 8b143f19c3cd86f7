"""Speed of the training schedulers on the full Philly-derived trace (82,247 jobs).

Cluster: 160 nodes × 8 V100 + 160 nodes × 8 A100 (2,560 GPUs, about Philly's size), one
switch per 16 nodes. Durations are on a V100 (reference C = 125 TFLOP/s). Policies: strict
FIFO, LAS with 300 s rounds (preemptive; 10 s checkpoint/restore), and the
heterogeneity-aware policy (Gavel-style). jobs/s = completed jobs / wall seconds of
``Engine.run`` (workload parsing excluded). Writes ``benchmarks/results/scheduling.csv``.

    python benchmarks/bench_scheduling.py               # full trace
    python benchmarks/bench_scheduling.py --jobs 20000  # the first N jobs
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim.engine import Engine
from llmos_sim.hardware import build_cluster
from llmos_sim.policies.scheduling import FIFO, LAS, HeterogeneityAware
from llmos_sim.workload import PhillyTrace

POLICIES = {
    "fifo": lambda: FIFO(),
    "las(round=300s)": lambda: LAS(round_s=300.0),
    "hetero-aware": lambda: HeterogeneityAware(),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=None, help="first N jobs (default: all)")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    args = ap.parse_args()
    cluster = build_cluster([{"nodes": 160, "devices_per_node": 8, "device": "V100"},
                             {"nodes": 160, "devices_per_node": 8, "device": "A100"}], nodes_per_switch=16)
    jobs = PhillyTrace(max_jobs=args.jobs, reference_flops=125e12).jobs(np.random.default_rng(0))
    rows = []
    for name in args.policies:
        eng = Engine(cluster, POLICIES[name](), preempt_overhead_s=10.0 if name.startswith("las") else 0.0,
                     log_memory=False)
        t0 = time.perf_counter()
        log = eng.run(jobs)
        wall = time.perf_counter() - t0
        done = sum(1 for r in log.records if r[1] == "finish")
        pre = sum(1 for r in log.records if r[1] == "preempt")
        rows.append({"policy": name, "jobs": len(jobs), "completed": done, "preemptions": pre, "wall_s": round(wall, 2),
                     "jobs_per_s": round(done / wall, 1), "events": len(log)})
        print(rows[-1], flush=True)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "scheduling.csv", index=False)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
