"""Engine speed: FIFO on synthetic jobs at 10^4, 10^5, 10^6 jobs on 64 and 10,240 GPUs.

    python benchmarks/bench_engine.py            # all sizes (the 10^6 runs take a minute or two)
    python benchmarks/bench_engine.py --max-jobs 100000

Reports, per case, the engine's wall time (the simulation alone: arrivals, passes, starts,
finishes, the event log), jobs/s and µs/job, and separately the time to generate the jobs and
to derive the tables from the log. Offered load is 80% of the cluster's device-seconds. One
process, one core. Writes benchmarks/results/engine.csv.
"""
from __future__ import annotations

import argparse
import csv
import gc
import time
from pathlib import Path

import numpy as np

from llmos_sim.engine import Engine
from llmos_sim.hardware import device_spec
from llmos_sim.metrics import jobs_table
from llmos_sim.policies.scheduling import FIFO
from llmos_sim.types import Cluster
from llmos_sim.workload import SyntheticJobs

GPUS = (1, 2, 4, 8)
GPUS_P = (0.5, 0.2, 0.2, 0.1)
MEDIAN_S, SIGMA = 600.0, 1.0


def offered_rate(n_gpus: int, load: float = 0.8) -> float:
    """Arrivals/s that offer ``load`` × the cluster's device-seconds."""
    mean_gpus = float(np.dot(GPUS, GPUS_P))
    mean_dur = MEDIAN_S * np.exp(SIGMA**2 / 2)
    return load * n_gpus / (mean_gpus * mean_dur)


def case(n_jobs: int, n_gpus: int, tables: bool, reference: bool = False) -> dict:
    cluster = Cluster.homogeneous(n_gpus // 8, 8, device_spec("A100"))
    w = SyntheticJobs(n_jobs=n_jobs, arrival_rate_per_s=offered_rate(n_gpus), gpus=GPUS, gpus_p=GPUS_P,
                      duration_median_s=MEDIAN_S, duration_sigma=SIGMA, reference_flops=312e12)
    t0 = time.perf_counter()
    jobs = w.jobs(np.random.default_rng(0))
    t_gen = time.perf_counter() - t0
    gc.collect()
    eng = Engine(cluster, FIFO())  # with the garbage collector on, as users run it
    t0, c0 = time.perf_counter(), time.process_time()
    log = eng.run(jobs)
    t_run, c_run = time.perf_counter() - t0, time.process_time() - c0
    assert len(eng.finished) == n_jobs
    t_tab = float("nan")
    if tables:
        t0 = time.perf_counter()
        jobs_table(log, cluster)
        t_tab = time.perf_counter() - t0
    t_ref = bare_heapq_fifo(jobs, n_gpus, 312e12) if reference else float("nan")
    return {"jobs": n_jobs, "gpus": n_gpus, "engine_s": round(t_run, 3), "engine_cpu_s": round(c_run, 3),
            "us_per_job_cpu": round(c_run / n_jobs * 1e6, 2), "jobs_per_s": round(n_jobs / t_run),
            "us_per_job": round(t_run / n_jobs * 1e6, 2), "events": len(log), "generate_s": round(t_gen, 3),
            "jobs_table_s": round(t_tab, 3), "bare_heapq_s": round(t_ref, 3)}


def bare_heapq_fifo(jobs, n_gpus: int, flops: float) -> float:
    """Reference floor: the same strict-FIFO toy as a bare heapq loop (a free-device counter,
    no placement, no pools, no log). Returns its wall time."""
    import heapq
    from collections import deque

    t0 = time.perf_counter()
    heap = [(j.arrival_s, 0, i) for i, j in enumerate(jobs)]
    heapq.heapify(heap)
    queue: deque = deque()
    free = n_gpus
    while heap:
        t, kind, i = heapq.heappop(heap)
        if kind == 0:
            queue.append(i)
        else:
            free += jobs[i].gpus
        while queue and jobs[queue[0]].gpus <= free:
            k = queue.popleft()
            free -= jobs[k].gpus
            heapq.heappush(heap, (t + jobs[k].work_flops / (jobs[k].gpus * flops), 1, k))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-jobs", type=int, default=10**6)
    ap.add_argument("--tables", action="store_true", help="also time the jobs table")
    ap.add_argument("--reference", action="store_true", help="also time a bare heapq FIFO on the same jobs")
    args = ap.parse_args()
    rows = []
    for n_gpus in (64, 10_240):
        for n in (10**4, 10**5, 10**6):
            if n > args.max_jobs:
                continue
            r = case(n, n_gpus, args.tables, args.reference)
            rows.append(r)
            print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / "engine.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
