"""Engine speed: strict FIFO on synthetic jobs at 10^4, 10^5, 10^6 jobs on 64 and 10,240 GPUs.

    python benchmarks/bench_engine.py                      # engine alone, all sizes
    python benchmarks/bench_engine.py --reference          # + a bare heapq FIFO loop, side by side
    python benchmarks/bench_engine.py --reference --max-jobs 100000 --repeat 3
    python benchmarks/bench_engine.py --command 300000     # the user's whole command vs the bare loop
    python benchmarks/bench_engine.py --reference --fast-path off   # the general engine (no fast core)
    LLMOS_SIM_COMPILED=0 python benchmarks/bench_engine.py --reference  # ignore a compiled build

Each size runs in its own subprocess, so its peak RSS (``ru_maxrss``: the jobs, the engine's
state and its event log) is that size's alone. The jobs are a :class:`~llmos_sim.types.JobTable`
(columns, as a run reads them); the bare loop reads their arrival, gpus and work columns as
plain lists, made before its clock starts. Inside it, the engine and (``--reference``) the
bare loop run interleaved ``--repeat`` times on the same jobs; the makespans must agree. Times
are CPU seconds (``time.process_time``; the machine may be shared), reported as the minimum
and the median of the repeats, with the engine/bare-loop ratio of each. The engine runs with
the garbage collector on, as users run it. Offered load is 80% of the cluster's device-seconds.
Strict FIFO on these jobs is a run the key-order fast core simulates (``fast_path=auto``,
asserted); ``--fast-path off`` times the general engine on the same jobs instead. The
``build`` column says whether the hot modules ran pure or from the optional compiled build.
Writes benchmarks/results/engine.csv.

``--command N`` times what a user runs instead: ``python -m llmos_sim experiment=quickstart
cluster=large workload.n_jobs=N workload.arrival_rate_per_s=1.55 output.plots=false`` (imports,
job generation, the run, every table written), as a child process whose CPU seconds (user +
system) and peak RSS come from ``wait4``; interleaved with the bare loop on the same jobs (the
config's workload, same seed) on the same 10,240 GPUs. Writes benchmarks/results/command.csv.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GPUS = (1, 2, 4, 8)
GPUS_P = (0.5, 0.2, 0.2, 0.1)
MEDIAN_S, SIGMA = 600.0, 1.0
FLOPS = 312e12  # A100: the devices' and the jobs' reference rate


def offered_rate(n_gpus: int, load: float = 0.8) -> float:
    """Arrivals/s that offer ``load`` × the cluster's device-seconds."""
    mean_gpus = float(np.dot(GPUS, GPUS_P))
    mean_dur = MEDIAN_S * np.exp(SIGMA**2 / 2)
    return load * n_gpus / (mean_gpus * mean_dur)


def make_jobs(n_jobs: int, n_gpus: int):
    from llmos_sim.workload import SyntheticJobs

    w = SyntheticJobs(n_jobs=n_jobs, arrival_rate_per_s=offered_rate(n_gpus), gpus=GPUS, gpus_p=GPUS_P,
                      duration_median_s=MEDIAN_S, duration_sigma=SIGMA, reference_flops=FLOPS)
    return w.table(np.random.default_rng(0))


def run_engine(jobs, n_gpus: int, fast_path: str = "auto") -> tuple[float, float, int]:
    """CPU seconds of ``Engine.run``, the makespan and the number of log records."""
    from llmos_sim.engine import Engine
    from llmos_sim.hardware import device_spec
    from llmos_sim.policies.scheduling import FIFO
    from llmos_sim.types import Cluster

    cluster = Cluster.homogeneous(n_gpus // 8, 8, device_spec("A100"))
    gc.collect()
    eng = Engine(cluster, FIFO(), fast_path=fast_path)
    c0 = time.process_time()
    log = eng.run(jobs)
    cpu = time.process_time() - c0
    assert len(eng.finished) == len(jobs)
    assert eng.fast_path_used == (fast_path == "auto")
    return cpu, float(np.max(np.frombuffer(eng.finished.finish_s))), len(log)


def bare_heapq_fifo(jobs, n_gpus: int, flops: float = FLOPS) -> tuple[float, float]:
    """Reference floor: the same strict-FIFO toy as a bare heapq loop (a free-device counter,
    no placement, no pools, no log) over the jobs' columns as plain lists (made before the
    clock starts). Returns its CPU seconds and the makespan."""
    import heapq
    from collections import deque

    gc.collect()  # first: the engine run before this one is a cycle (engine, environment) to free
    arrival, gpus, work = (jobs.values(f) for f in ("arrival_s", "gpus", "work_flops"))
    c0 = time.process_time()
    heap = [(a, 0, i) for i, a in enumerate(arrival)]
    heapq.heapify(heap)
    queue: deque = deque()
    free = n_gpus
    t = 0.0
    while heap:
        t, kind, i = heapq.heappop(heap)
        if kind == 0:
            queue.append(i)
        else:
            free += gpus[i]
        while queue and gpus[queue[0]] <= free:
            k = queue.popleft()
            free -= gpus[k]
            heapq.heappush(heap, (t + work[k] / (gpus[k] * flops), 1, k))
    return time.process_time() - c0, t


def build_label(compiled: list[str]) -> str:
    """Which build ran: ``pure``, or ``compiled:`` and the modules imported from the compiled
    build (``python -m llmos_sim.compiled build``; ``LLMOS_SIM_COMPILED=0`` ignores it)."""
    return "compiled:" + "+".join(m.rsplit(".", 1)[-1] for m in compiled) if compiled else "pure"


def one_case(n_jobs: int, n_gpus: int, repeat: int, reference: bool, fast_path: str = "auto") -> dict:
    """One size, in this process: engine (and bare loop) interleaved ``repeat`` times."""
    jobs = make_jobs(n_jobs, n_gpus)
    eng_s, ref_s = [], []
    events = 0
    for _ in range(repeat):
        cpu, makespan, events = run_engine(jobs, n_gpus, fast_path)
        eng_s.append(cpu)
        if reference:
            rcpu, rmakespan = bare_heapq_fifo(jobs, n_gpus)
            ref_s.append(rcpu)
            assert abs(makespan - rmakespan) <= 1e-9 * max(1.0, abs(makespan)), (makespan, rmakespan)
    from llmos_sim.compiled_finder import in_use

    row = {"jobs": n_jobs, "gpus": n_gpus, "fast_path": fast_path, "build": build_label(in_use()), "repeat": repeat,
           "engine_cpu_min_s": round(min(eng_s), 3), "engine_cpu_median_s": round(statistics.median(eng_s), 3),
           "us_per_job_cpu": round(min(eng_s) / n_jobs * 1e6, 2), "events": events}
    if reference:
        row.update({"bare_cpu_min_s": round(min(ref_s), 3), "bare_cpu_median_s": round(statistics.median(ref_s), 3),
                    "ratio_min": round(min(eng_s) / min(ref_s), 2),
                    "ratio_median": round(statistics.median(eng_s) / statistics.median(ref_s), 2)})
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
    return row


COMMAND = ["experiment=quickstart", "cluster=large", "workload.arrival_rate_per_s=1.55", "output.plots=false"]


def user_command(n_jobs: int, repeat: int) -> dict:
    """The whole command (child process: CPU s and peak RSS by ``wait4``) and the bare loop on
    its jobs, interleaved ``repeat`` times."""
    import os
    import tempfile

    from hydra.utils import instantiate

    from llmos_sim.run import compose, rngs

    overrides = COMMAND + [f"workload.n_jobs={n_jobs}"]
    cfg = compose(overrides)
    jobs = instantiate(cfg.workload).table(rngs(int(cfg.seed))["workload"])
    n_gpus = 10_240  # cluster=large
    cmd_s, rss, ref_s = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.Popen([sys.executable, "-m", "llmos_sim", *overrides, f"hydra.run.dir={tmp}/run"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode:
                raise SystemExit(f"the command failed ({proc.returncode})")
        cmd_s.append(ru.ru_utime + ru.ru_stime)
        rss.append(ru.ru_maxrss / 1024)
        ref_s.append(bare_heapq_fifo(jobs, n_gpus)[0])
    return {"command": "python -m llmos_sim " + " ".join(overrides), "jobs": n_jobs, "repeat": repeat,
            "command_cpu_min_s": round(min(cmd_s), 2), "command_cpu_median_s": round(statistics.median(cmd_s), 2),
            "bare_cpu_min_s": round(min(ref_s), 3), "bare_cpu_median_s": round(statistics.median(ref_s), 3),
            "ratio_min": round(min(cmd_s) / min(ref_s), 1),
            "ratio_median": round(statistics.median(cmd_s) / statistics.median(ref_s), 1),
            "peak_rss_mb": round(max(rss), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-jobs", type=int, default=10**6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reference", action="store_true", help="also time a bare heapq FIFO on the same jobs")
    ap.add_argument("--gpus", type=int, nargs="*", default=[64, 10_240])
    ap.add_argument("--case", type=int, nargs=2, metavar=("JOBS", "GPUS"), help=argparse.SUPPRESS)
    ap.add_argument("--fast-path", choices=("auto", "off"), default="auto",
                    help="off: time the general engine (the fast core is on by default)")
    ap.add_argument("--command", type=int, metavar="JOBS", help="time the user's whole command at JOBS jobs")
    args = ap.parse_args()
    if args.command:
        row = user_command(args.command, args.repeat)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        out_dir = Path(__file__).parent / "results"
        out_dir.mkdir(exist_ok=True)
        with open(out_dir / "command.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(row))
            wr.writeheader()
            wr.writerow(row)
        return
    if args.case:  # the subprocess of one size
        print(json.dumps(one_case(args.case[0], args.case[1], args.repeat, args.reference, args.fast_path)))
        return
    rows = []
    for n_gpus in args.gpus:
        for n in (10**4, 10**5, 10**6, 3 * 10**6):
            if n > args.max_jobs:
                continue
            cmd = [sys.executable, __file__, "--case", str(n), str(n_gpus), "--repeat", str(args.repeat),
                   "--fast-path", args.fast_path]
            out = subprocess.run(cmd + (["--reference"] if args.reference else []), check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows.append(r)
            print("  ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    with open(out_dir / "engine.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)


if __name__ == "__main__":
    main()
