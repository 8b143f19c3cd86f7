"""Speed of the training schedulers on the full Philly-derived trace (82,247 jobs).

Cluster: 160 nodes × 8 V100 + 160 nodes × 8 A100 (2,560 GPUs, about Philly's size), one
switch per 16 nodes. Durations are on a V100 (reference C = 125 TFLOP/s). Policies: strict
FIFO, LAS with 300 s rounds (preemptive; 10 s checkpoint/restore), and the
heterogeneity-aware policy (Gavel-style). jobs/s = completed jobs / wall seconds of
``Engine.run`` (workload parsing excluded). Writes ``benchmarks/results/scheduling.csv``.

    python benchmarks/bench_scheduling.py               # full trace, then the load-3 cases
    python benchmarks/bench_scheduling.py --jobs 20000  # the first N jobs
    python benchmarks/bench_scheduling.py --suite load3 # only the contention cases

Contention (``--suite load3``): LAS and 2D-LAS (``scheduler=las`` / ``scheduler=tiresias``) at
``workload.load=3`` on the setup of ``experiments/train_policies`` (Philly virtual cluster
6c71a0, 9,953 jobs, on 64 A100s, 10 s checkpoint/restore), built from the shipped configs; and,
as a different semantics (another schedule), LAS with ``scheduler.min_run_s=900`` (a segment
runs at least 900 s, three rounds, before it may be preempted).
Reported: CPU seconds of ``Engine.run`` (``time.process_time``; min and median of
``--repeat``), mean job completion time, preemptions, scheduling passes (those that reached the policy, and those the
engine skipped because they provably decide nothing), log records, and ``schedule_sha``: a
digest of every job's first start, finish and preemption count (compare it across versions).
Writes ``benchmarks/results/scheduling_load3.csv``.

    python benchmarks/bench_scheduling.py --suite load3 --check  # also the old way, compared

LAS runs through the preemptive fast core (:mod:`llmos_sim.fastcore_las`; ``fast_core`` says
so): its passes are counted by the core, not through the policy's ``decide``.

``--check`` runs each case a second time the old way (the general engine, every pass ranks
the whole queue, no pass skipped: a subclass overriding ``key`` takes that path) and fails
unless both logs are identical record for record.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim import fastcore_las
from llmos_sim.engine import Engine
from llmos_sim.hardware import build_cluster
from llmos_sim.policies.scheduling import FIFO, LAS, HeterogeneityAware
from llmos_sim.workload import PhillyTrace

POLICIES = {
    "fifo": lambda: FIFO(),
    "las(round=300s)": lambda: LAS(round_s=300.0),
    "hetero-aware": lambda: HeterogeneityAware(),
}


#: the contention cases: label -> config overrides. The last is another semantics, not the
#: same schedule: LAS where a segment runs at least 900 s before it may be preempted (the
#: existing ``min_run_s`` option: a minimum quantum of three rounds)
LOAD3 = {"LAS": ["scheduler=las"], "2D-LAS": ["scheduler=tiresias"],
         "LAS min_run_s=900": ["scheduler=las", "scheduler.min_run_s=900"]}


def count_passes(engine: Engine) -> list[int]:
    """Wrap the engine's pass so the passes that reach the scheduler are counted."""
    n = [0]
    decide = engine.scheduler.decide

    def counted(view):
        n[0] += 1
        return decide(view)

    engine.scheduler.decide = counted  # type: ignore[method-assign]
    return n


def schedule_of(log) -> dict[int, list]:
    """Job id -> [first start, finish, preemptions] from a run's log."""
    out: dict[int, list] = {}
    for t, kind, subject, _ in log.records:
        if kind == "start":
            out.setdefault(subject, [t, None, 0])
        elif kind == "finish":
            out[subject][1] = t
        elif kind == "preempt":
            out[subject][2] += 1
    return out


def mean_jct_s(log, jobs) -> float:
    """Mean completion time (finish - arrival) over the finished jobs."""
    arrival = {j.id: j.arrival_s for j in jobs}
    jct = [t - arrival[subject] for t, kind, subject, _ in log.records if kind == "finish"]
    return sum(jct) / len(jct)


def schedule_sha(log) -> str:
    return hashlib.sha256(repr(sorted(schedule_of(log).items())).encode()).hexdigest()[:16]


def old_way(scheduler):
    """The same policy the old way: a subclass overriding ``key`` ranks the whole queue every
    pass and cannot say when passes are quiet, so none is skipped."""
    cls = type(scheduler)
    general = type("General" + cls.__name__, (cls,), {"key": lambda self, job, r, view: cls.key(self, job, r, view)})
    scheduler.__class__ = general
    return scheduler


def load3(repeat: int, check: bool = False) -> None:
    from llmos_sim.run import build_engine, compose, rngs
    from hydra.utils import instantiate

    rows = []
    for label, overrides in LOAD3.items():
        cfg = compose(["experiment=train_policies", *overrides, "workload.load=3.0"])
        cpu, passes, pre, events = [], 0, 0, 0
        for _ in range(repeat):
            streams = rngs(int(cfg.seed))
            eng = build_engine(cfg, streams)
            jobs = list(instantiate(cfg.workload).jobs(streams["workload"]))
            # a wrapped decide would send the run to the general engine: count only where no
            # fast core runs it (the LAS core counts its own passes)
            n_pass = count_passes(eng) if fastcore_las.why_not(eng, jobs, None) else [0]
            c0 = time.process_time()
            log = eng.run(jobs)
            cpu.append(time.process_time() - c0)
            # the LAS fast core (llmos_sim.fastcore_las) runs its passes without the policy's decide
            passes, events = (eng.fast_passes if eng.fast_path_used else n_pass[0]), len(log)
            pre = sum(1 for r in log.records if r[1] == "preempt")
        row = {"policy": label, "jobs": len(jobs), "load": 3.0, "fast_core": eng.fast_path_used,
               "preemptions": pre, "passes": passes,
               "passes_skipped": eng.passes_skipped, "events": events, "cpu_min_s": round(min(cpu), 2),
               "cpu_median_s": round(statistics.median(cpu), 2), "schedule_sha": schedule_sha(log),
               "mean_jct_h": round(mean_jct_s(log, jobs) / 3600, 2)}
        if check:
            streams = rngs(int(cfg.seed))
            eng_old = build_engine(cfg, streams)
            old_way(eng_old.scheduler)
            eng_old._settles = False
            c0 = time.process_time()
            log_old = eng_old.run(list(instantiate(cfg.workload).jobs(streams["workload"])))
            row["cpu_old_way_s"] = round(time.process_time() - c0, 2)
            same = list(log_old.records) == list(log.records)
            row["identical_to_old_way"] = same
            if not same:
                raise SystemExit(f"{label}: the schedule differs from the old way's")
        rows.append(row)
        print(rows[-1], flush=True)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(out / "scheduling_load3.csv", index=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=None, help="first N jobs (default: all)")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES))
    ap.add_argument("--suite", choices=("all", "philly", "load3"), default="all")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of each load-3 case")
    ap.add_argument("--check", action="store_true", help="load-3 cases: also run the old way and compare the logs")
    args = ap.parse_args()
    if args.suite in ("all", "philly"):
        philly(args)
    if args.suite in ("all", "load3"):
        load3(args.repeat, args.check)


def philly(args: argparse.Namespace) -> None:
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
