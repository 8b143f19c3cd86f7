"""The key-order fast core writes exactly the general engine's log (so the same tables).

Random workloads (simultaneous arrivals, equal completion times, memory that fits, fits only
some devices or never, priorities, preprocess and output steps) on several cluster shapes,
placements, memory pools and memory-full actions, for every policy that declares an order key.
"""
import math

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim import fastcore
from llmos_sim.backends.simpy_cluster import CrossNodeSlowdown, SimPyCluster
from llmos_sim.engine import Engine
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.scheduling import FIFO, LAS, SJF
from llmos_sim.policies.scheduling.predictive import PredictedSJF
from llmos_sim.policies.scheduling.priority import PriorityFIFO
from llmos_sim.types import GB, Cluster, Job, JobTable

from .fastcore_helpers import FAST, PLACEMENTS, POOLS, SLOW, StingyPool, placement, same

CLUSTERS = {
    "2x2": lambda: Cluster.homogeneous(2, 2, SLOW),
    "3x4": lambda: Cluster.homogeneous(3, 4, FAST, nodes_per_switch=2),
    "mixed": lambda: Cluster.from_groups([(1, 4, FAST, 0, 0), (2, 2, SLOW, 0, 0)]),
}

POLICIES = {
    "fifo": lambda p: FIFO(p),
    "fifo_skip": lambda p: FIFO(p, blocking=False),
    "sjf": lambda p: SJF(p),
    "sjf_blocking": lambda p: SJF(p, blocking=True),
    "priority": lambda p: PriorityFIFO(p),
    "priority_skip": lambda p: PriorityFIFO(p, blocking=False),
}

job_st = st.tuples(
    st.integers(0, 30),  # arrival (few values: many simultaneous arrivals)
    st.sampled_from([1, 2, 3, 4, 8]),  # gpus
    st.integers(1, 12),  # seconds on slow devices (few values: equal completion times)
    st.sampled_from([0, 0, 1, 3, 6, 7, 9]),  # GB per device (7: only the fast devices; 9: never)
    st.integers(0, 2),  # priority
    st.sampled_from([0.0, 0.0, 0.0, 1.5]),  # preprocess_s
    st.sampled_from([0.0, 0.0, 0.0, 2.0]),  # output_s
)


def _jobs(spec):
    return [Job(100 + i, float(t), g * 1e13 * d, gpus=g, mem_bytes_per_device=m * GB, priority=p,
                preprocess_s=pre, output_s=out, tenant=f"t{i % 2}")
            for i, (t, g, d, m, p, pre, out) in enumerate(spec)]


def _run(jobs, cluster, policy, place, pool, on_full, log_memory, cost, fast_path):
    backend = SimPyCluster(CrossNodeSlowdown(0.5)) if cost == "cross_node" else SimPyCluster()
    eng = Engine(CLUSTERS[cluster](), POLICIES[policy](placement(place)), backend, POOLS[pool],
                 on_memory_full=on_full, log_memory=log_memory, fast_path=fast_path)
    eng.run(jobs)
    return eng


@settings(max_examples=200, deadline=None)
@given(st.lists(job_st, min_size=1, max_size=14), st.sampled_from(sorted(POLICIES)),
       st.sampled_from(sorted(PLACEMENTS)), st.sampled_from(sorted(POOLS)), st.sampled_from(sorted(CLUSTERS)),
       st.sampled_from(["wait", "fail"]), st.booleans(), st.sampled_from(["plain", "cross_node"]),
       st.sampled_from(["list", "table", "reversed table"]))
def test_fast_core_writes_the_general_engines_log(spec, policy, place, pool, cluster, on_full, log_memory, cost,
                                                  given_as):
    """The fast core, given the jobs as a list or as a table (its columns read as they are; in
    any row order), writes the general engine's log, record for record, from the list."""
    jobs = _jobs(spec)
    fast_jobs = jobs if given_as == "list" else JobTable.from_jobs(jobs[::-1] if given_as == "reversed table" else jobs)
    fast = _run(fast_jobs, cluster, policy, place, pool, on_full, log_memory, cost, "auto")
    general = _run(jobs, cluster, policy, place, pool, on_full, log_memory, cost, "off")
    assert fast.fast_path_used and not general.fast_path_used
    same(fast, general)


@settings(max_examples=60, deadline=None)
@given(st.lists(job_st, min_size=1, max_size=14), st.sampled_from(sorted(POLICIES)), st.sampled_from(sorted(CLUSTERS)),
       st.sampled_from(["plain", "cross_node"]), st.sampled_from(["list", "table"]), st.booleans())
def test_ideal_memory_that_fits_every_device_is_written_as_the_general_engine_does(spec, policy, cluster, cost,
                                                                                   given_as, log_memory):
    """Every job's memory fits every device's empty ideal pool (at most 6 GB) and Pack places
    the jobs: the fast core places them as jobs without memory and fills their memory records'
    rows (when memory is logged) and the pools' counts in after the run (one device capacity,
    or two: ``mixed``); the log, tables, finished jobs and pools are the general engine's."""
    jobs = _jobs([(t, g, d, min(m, 6), *rest) for t, g, d, m, *rest in spec])
    fast = _run(jobs if given_as == "list" else JobTable.from_jobs(jobs), cluster, policy, "pack", "ideal", "wait",
                log_memory, cost, "auto")
    general = _run(jobs, cluster, policy, "pack", "ideal", "wait", log_memory, cost, "off")
    assert fast.fast_path_used
    same(fast, general)


def test_a_hand_computed_schedule_through_the_fast_core():
    """2 nodes x 2 devices at 1e13 FLOP/s, strict FIFO, Pack: job 0 (2 devices, 10 s) and job 1
    (4 devices, 5 s) arrive at 0; job 2 (1 device, 3 s) at 1. Job 1 blocks the head until job 0
    ends at 10; it runs 10..15; job 2 then runs 15..18 (head-of-line blocking)."""
    cluster = Cluster.homogeneous(2, 2, SLOW)
    jobs = [Job(0, 0.0, 2e14, gpus=2), Job(1, 0.0, 2e14, gpus=4), Job(2, 1.0, 3e13, gpus=1)]
    eng = Engine(cluster, FIFO())
    eng.run(jobs)
    assert eng.fast_path_used
    got = [(f.job.id, f.start_s, f.finish_s, f.devices) for f in eng.finished]
    assert got == [(0, 0.0, 10.0, (0, 1)), (1, 10.0, 15.0, (0, 1, 2, 3)), (2, 15.0, 18.0, (0,))]
    kinds = [(t, k, s) for t, k, s, _ in eng.log.records]
    assert kinds == [(0.0, "arrive", 0), (0.0, "arrive", 1), (0.0, "start", 0), (1.0, "arrive", 2),
                     (10.0, "finish", 0), (10.0, "start", 1), (15.0, "finish", 1), (15.0, "start", 2),
                     (18.0, "finish", 2), (18.0, "end", None)]
    assert eng.log.records[2][3] == ((0, 1), 1000, 2e13)
    assert eng.env.now == 18.0


def test_the_fast_core_tells_progress_of_every_finish_in_steps():
    """A progress bar hears of every finished job, in steps of ``PROGRESS_STEP`` finishes and
    the rest at the end: 2,500 one-device jobs are told as 1024, 1024 and 452."""
    assert fastcore.PROGRESS_STEP == 1024
    told = []
    eng = Engine(Cluster.homogeneous(2, 2, SLOW), FIFO(), progress=told.append)
    eng.run([Job(i, float(i), 1e13, gpus=1) for i in range(2500)])
    assert eng.fast_path_used and len(eng.finished) == 2500
    assert told == [1024, 1024, 452]


def test_a_run_that_stalls_ends_as_the_general_engine_does():
    """A job whose memory the pool says fits but never grants waits until the run drains, then
    fails as stalled, with the last reject named."""
    cluster = Cluster.homogeneous(1, 2, FAST)
    jobs = [Job(0, 0.0, 1e13, gpus=1, mem_bytes_per_device=6 * GB), Job(1, 0.0, 1e13, gpus=1)]
    runs = [Engine(cluster, FIFO(blocking=False), pool_factory=StingyPool, fast_path=fp) for fp in ("auto", "off")]
    for e in runs:
        e.run(jobs)
    assert runs[0].fast_path_used
    same(*runs)
    t, kind, subject, data = runs[0].log.records[-2]
    assert (kind, subject) == ("fail", 0) and "last rejected: start: memory does not fit" in data[0]
    assert runs[0].log.records[-1][3] == ("stalled",)


@pytest.mark.parametrize("make, why", [
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), LAS()), "rounds"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), PredictedSJF()), "key order"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), FIFO(), fast_path="off"), "is off"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), FIFO(), pool_factory=IdealPool, on_memory_full="preempt"),
     "preempt"),
])
def test_what_the_fast_core_leaves_to_the_general_engine(make, why):
    eng = make()
    assert why in fastcore.why_not(eng, [Job(0, 0.0, 1e13)], None)
    assert fastcore.why_not(Engine(Cluster.homogeneous(1, 2, SLOW), FIFO()), [Job(0, 0.0, 1e13)], 5.0)
    elastic = [Job(0, 0.0, 1e13, gpus=2, min_gpus=1)]
    assert "elastic" in fastcore.why_not(Engine(Cluster.homogeneous(1, 2, SLOW), FIFO()), elastic, None)


def test_a_subclass_that_reorders_without_a_key_is_not_a_key_order():
    class Newest(FIFO):
        def order(self, view):
            return sorted(view.queue, key=lambda j: -j.arrival_s)

    class NewestKeyed(FIFO):  # the same order, stated as a key beside it
        def order(self, view):
            return sorted(view.queue, key=lambda j: self.order_key(j, view))

        def order_key(self, job, view):
            return (-job.arrival_s, job.id)

    class KeyElsewhere(Newest):  # a key declared away from the order it claims to state
        def order_key(self, job, view):
            return (-job.arrival_s, job.id)

    assert fastcore.key_order(FIFO()) and fastcore.key_order(SJF()) and fastcore.key_order(PriorityFIFO())
    assert not fastcore.key_order(Newest()) and not fastcore.key_order(KeyElsewhere())
    assert fastcore.key_order(NewestKeyed())
    jobs = [Job(i, float(i // 2), 1e13 * (1 + i % 3), gpus=1 + i % 2) for i in range(12)]
    runs = [Engine(Cluster.homogeneous(1, 2, SLOW), NewestKeyed(), fast_path=fp) for fp in ("auto", "off")]
    for e in runs:
        e.run(jobs)
    assert runs[0].fast_path_used
    same(*runs)


def test_fast_path_config_key():
    from llmos_sim.run import compose, run_config
    from llmos_sim.validate import InputError

    with pytest.raises(InputError, match="engine.fast_path"):
        run_config(compose(["experiment=quickstart", "engine.fast_path=sometimes"]))
    off = run_config(compose(["experiment=quickstart", "engine.fast_path=off", "output.plots=false"]))
    auto = run_config(compose(["experiment=quickstart", "output.plots=false"]))
    for name in auto.tables:
        pd.testing.assert_frame_equal(auto.tables[name], off.tables[name])
    assert math.isclose(auto.summary["jct_s_avg"], off.summary["jct_s_avg"], rel_tol=0, abs_tol=0)
