"""The preemptive LAS fast core writes exactly the general engine's log (so the same tables).

Random workloads (simultaneous arrivals, equal service and equal completion times, jobs that
never fit, zero work, preprocess steps) under LAS with several round lengths, protection
knobs and checkpoint costs, on several cluster shapes, placements, memory pools and cost
models; plus a hand-computed schedule and what the core leaves to the general engine.
"""
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim import fastcore_las
from llmos_sim.backends.simpy_cluster import CrossNodeSlowdown, SimPyCluster
from llmos_sim.engine import Engine
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.scheduling import LAS, SRTF, DiscretizedLAS, Pack
from llmos_sim.types import GB, Cluster, Job
from llmos_sim.view import ClusterView, FreeDevices, Tentative

from .fastcore_helpers import FAST, PLACEMENTS, POOLS, SLOW, StingyPool, placement, same

CLUSTERS = {
    "1x4": lambda: Cluster.homogeneous(1, 4, SLOW),
    "2x2": lambda: Cluster.homogeneous(2, 2, SLOW),
    "3x4": lambda: Cluster.homogeneous(3, 4, FAST, nodes_per_switch=2),
    "mixed": lambda: Cluster.from_groups([(1, 4, FAST, 0, 0), (2, 2, SLOW, 0, 0)]),
}
job_st = st.tuples(
    st.integers(0, 20),  # arrival (few values: simultaneous arrivals)
    st.sampled_from([1, 1, 2, 3, 4, 8, 16]),  # gpus (16: more than any cluster here has)
    st.sampled_from([0, 1, 2, 3, 5, 8, 13]),  # seconds on slow devices (0: no work)
    st.sampled_from([0.0, 0.0, 0.0, 1.5]),  # preprocess_s
    st.sampled_from([0, 0, 1, 3, 6, 7, 9]),  # GB per device (7: only the fast devices; 9: never)
)
las_st = st.fixed_dictionaries({
    "round_s": st.sampled_from([None, 1.0, 2.0, 2.5, 7.0]),
    "min_run_s": st.sampled_from([0.0, 0.0, 3.0]),
    "preempt_in_overhead": st.booleans(),
    "work_conserving": st.booleans(),
})


def _jobs(spec):
    return [Job(100 + i, float(t), g * 1e13 * d, gpus=g, preprocess_s=pre, mem_bytes_per_device=m * GB,
                tenant=f"t{i % 2}") for i, (t, g, d, pre, m) in enumerate(spec)]


def _run(jobs, cluster, knobs, place, pool, overhead, cost, fast_path, on_full="wait", log_memory=True):
    backend = SimPyCluster(CrossNodeSlowdown(0.5)) if cost == "cross_node" else SimPyCluster()
    eng = Engine(CLUSTERS[cluster](), LAS(placement(place), **knobs), backend, POOLS[pool],
                 preempt_overhead_s=overhead, on_memory_full=on_full, log_memory=log_memory, fast_path=fast_path)
    eng.run(jobs)
    return eng


def _same(a: Engine, b: Engine) -> None:
    same(a, b)
    assert a.free.total == b.free.total == a.cluster.n_devices and a._last_reject == b._last_reject


@settings(max_examples=150, deadline=None)
@given(st.lists(job_st, min_size=1, max_size=12), las_st, st.sampled_from(sorted(PLACEMENTS)),
       st.sampled_from(sorted(POOLS)), st.sampled_from(sorted(CLUSTERS)), st.sampled_from([0.0, 1.0, 2.5]),
       st.sampled_from(["plain", "cross_node"]), st.sampled_from(["wait", "fail"]), st.booleans())
def test_las_fast_core_writes_the_general_engines_log(spec, knobs, place, pool, cluster, overhead, cost, on_full,
                                                      log_memory):
    jobs = _jobs(spec)
    compact = fastcore_las.COMPACT_AFTER
    fastcore_las.COMPACT_AFTER = 0  # compact the heap whenever half of it is stale
    try:
        fast = _run(jobs, cluster, knobs, place, pool, overhead, cost, "auto", on_full, log_memory)
    finally:
        fastcore_las.COMPACT_AFTER = compact
    general = _run(jobs, cluster, knobs, place, pool, overhead, cost, "off", on_full, log_memory)
    assert fast.fast_path_used and not general.fast_path_used
    _same(fast, general)


def test_a_hand_computed_las_schedule_through_the_fast_core():
    """One node of 2 devices at 1e13 FLOP/s, LAS with 2 s rounds, no checkpoint cost.
    Job 0 (2 devices, 4 s of work) arrives at 0 and runs; job 1 (1 device, 2 s) arrives at 1:
    job 0 has 2 device-seconds, job 1 none, so job 1 preempts it at once (job 0 needs both
    devices) and runs 1..3 (the round at 2 finds job 1 at 1 device-second, still least).
    At 3 job 1 finishes and job 0 resumes with 2e13 of its 8e13 FLOPs done: it ends at 6.
    The last round at 6 sees nothing running: the run ends there."""
    cluster = Cluster.homogeneous(1, 2, SLOW)
    jobs = [Job(0, 0.0, 8e13, gpus=2), Job(1, 1.0, 2e13, gpus=1)]
    eng = Engine(cluster, LAS(round_s=2.0))
    eng.run(jobs)
    assert eng.fast_path_used
    kinds = [(t, k, s) for t, k, s, _ in eng.log.records]
    assert kinds == [(0.0, "arrive", 0), (0.0, "start", 0), (1.0, "arrive", 1), (1.0, "preempt", 0),
                     (1.0, "start", 1), (3.0, "finish", 1), (3.0, "start", 0), (6.0, "finish", 0),
                     (6.0, "end", None)]
    assert eng.log.records[3][3] == ((0, 1), 2e13)
    got = [(f.job.id, f.start_s, f.finish_s, f.service_gpu_s) for f in eng.finished]
    assert got == [(1, 1.0, 3.0, 2.0), (0, 0.0, 6.0, 8.0)]
    general = Engine(cluster, LAS(round_s=2.0), fast_path="off")
    general.run(jobs)
    _same(eng, general)


def test_the_end_waits_for_a_stale_completion():
    """A fast device (0) and a slow one (1). Job 1 (1e15 FLOPs) starts on the slow device at 0
    (its completion due at 100); job 2 (two devices) preempts it at 1; it resumes on the fast
    device at 5/3 and finishes at 5/3 + 99e13/2e13 = 51.17. The general engine's clock still
    runs to the stale completion at 100 before the run ends, and so does the fast core's."""
    cluster = Cluster.from_groups([(1, 1, FAST, 0, 0), (1, 1, SLOW, 0, 0)])
    jobs = [Job(0, 0.0, 1e13), Job(1, 0.0, 1e15), Job(2, 1.0, 2e13, gpus=2)]
    runs = [Engine(cluster, LAS(round_s=None), fast_path=fp) for fp in ("auto", "off")]
    for e in runs:
        e.run(jobs)
    assert runs[0].fast_path_used
    _same(*runs)
    t, kind, subject, _ = runs[0].log.records[-2]
    assert (kind, subject) == ("finish", 1) and t == pytest.approx(5 / 3 + 49.5)
    assert runs[0].log.records[-1][:2] == (100.0, "end")


class _MyLAS(LAS):
    def key(self, job, running, view):
        return LAS.key(self, job, running, view)


@pytest.mark.parametrize("make, why", [
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), LAS(), fast_path="off"), "is off"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), _MyLAS()), "not LAS"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), LAS(service="time_s")), "not LAS"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), DiscretizedLAS()), "not LAS"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), SRTF()), "not LAS"),
    (lambda: Engine(Cluster.homogeneous(1, 2, SLOW), LAS(), log_passes=True), "logged passes"),
])
def test_what_the_las_core_leaves_to_the_general_engine(make, why):
    assert why in fastcore_las.why_not(make(), [Job(0, 0.0, 1e13)], None)


def test_jobs_the_las_core_leaves_to_the_general_engine():
    eng = Engine(Cluster.homogeneous(1, 2, SLOW), LAS(), pool_factory=IdealPool)
    assert fastcore_las.why_not(eng, [Job(0, 0.0, 1e13)], None) is None
    assert "horizon" in fastcore_las.why_not(eng, [Job(0, 0.0, 1e13)], 5.0)
    assert fastcore_las.why_not(eng, [Job(0, 0.0, 1e13, mem_bytes_per_device=GB)], None) is None
    eng.on_memory_full = "preempt"
    assert "preempt" in fastcore_las.why_not(eng, [Job(0, 0.0, 1e13, mem_bytes_per_device=GB)], None)
    eng.on_memory_full = "wait"
    assert "output" in fastcore_las.why_not(eng, [Job(0, 0.0, 1e13, output_s=1.0)], None)
    assert "elastic" in fastcore_las.why_not(eng, [Job(0, 0.0, 1e13, gpus=2, min_gpus=1)], None)
    assert "fractional" in fastcore_las.why_not(eng, [Job(0, 0.0, 1e13, gpu_milli=500)], None)
    eng.run([Job(0, 0.0, 1e13, output_s=1.0)])
    assert not eng.fast_path_used  # the general engine ran it


@pytest.mark.parametrize("on_full", ["wait", "fail"])
def test_memory_that_does_not_fit_after_placement(on_full):
    """A job whose memory the pool says fits but never grants: with ``wait`` it is rejected at
    every pass (a round every second) while the others run, preempted and resumed, then the run
    stalls and fails it naming the last reject; with ``fail`` it fails at its first start."""
    cluster = Cluster.homogeneous(1, 2, FAST)
    jobs = [Job(0, 0.0, 4e13, gpus=1, mem_bytes_per_device=6 * GB), Job(1, 0.0, 6e13, gpus=1),
            Job(2, 1.5, 2e13, gpus=1, mem_bytes_per_device=1 * GB), Job(3, 1.0, 3e13, gpus=1)]
    runs = [Engine(cluster, LAS(round_s=1.0), pool_factory=StingyPool, on_memory_full=on_full,
                   preempt_overhead_s=0.5, fast_path=fp) for fp in ("auto", "off")]
    for e in runs:
        e.run(jobs)
    assert runs[0].fast_path_used
    _same(*runs)
    kinds = [k for _, k, _, _ in runs[0].log.records]
    assert "preempt" in kinds and "mem_alloc" in kinds
    last = runs[0].log.records[-2]
    if on_full == "wait":
        assert "reject" in kinds and runs[0].log.records[-1][3] == ("stalled",)
        assert (last[1], last[2]) == ("fail", 0) and "last rejected: start: memory does not fit" in last[3][0]
    else:
        assert runs[0].log.records[3][1:] == ("fail", 0, ("memory: does not fit the device pools",))
        assert "reject" not in kinds and runs[0].log.records[-1][3] == ("drained",)


#: many nodes, of several sizes: which node a plan picks and the order nodes leave and join
#: their buckets matter (Pack's best fit, ties by the overlay's node order)
PACK_CLUSTERS = {
    "6x2": lambda: Cluster.homogeneous(6, 2, SLOW),
    "4x4": lambda: Cluster.homogeneous(4, 4, FAST),
    "sizes": lambda: Cluster.from_groups([(2, 2, SLOW, 0, 0), (2, 4, FAST, 0, 0), (1, 3, SLOW, 0, 0)]),
}
pack_job_st = st.tuples(
    st.integers(0, 30),  # arrival
    st.sampled_from([1, 1, 1, 2, 3, 4, 5, 8]),  # gpus (5 and 8 spill over nodes)
    st.sampled_from([1, 2, 3, 5, 8, 13, 40]),  # seconds on slow devices
    st.sampled_from([0.0, 0.0, 1.5]),  # preprocess_s
)


@settings(max_examples=100, deadline=None)
@given(st.lists(pack_job_st, min_size=1, max_size=30), las_st, st.sampled_from(sorted(PACK_CLUSTERS)),
       st.sampled_from([0.0, 1.0, 2.5]))
def test_las_fast_core_plans_pack_on_node_lists_as_the_general_engine(spec, knobs, cluster, overhead):
    """Pack without device memory: the core plans a pass on :class:`fastcore_las.NodeLists`
    and writes its outcome to the free devices a node at a time; the log, and the free
    devices' node order at the end, are the general engine's."""
    jobs = [Job(100 + i, float(t), g * 1e13 * d, gpus=g, preprocess_s=pre) for i, (t, g, d, pre) in enumerate(spec)]
    runs = [Engine(PACK_CLUSTERS[cluster](), LAS(Pack(), **knobs), preempt_overhead_s=overhead, fast_path=fp)
            for fp in ("auto", "off")]
    for e in runs:
        e.run(jobs)
    assert runs[0].fast_path_used and not runs[1].fast_path_used
    _same(*runs)
    assert [list(b) for b in runs[0].free.buckets] == [list(b) for b in runs[1].free.buckets]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PACK_CLUSTERS)), st.data())
def test_node_lists_plan_as_packs_overlay_and_commit_as_the_engine(cluster, data):
    """A few passes: victims released, Pack's choices for a run of job sizes, unused victims'
    devices taken back, then the outcome committed. :class:`fastcore_las.NodeLists` plans the
    same devices as Pack on the policy's overlay (:class:`Tentative` in a view), and its
    commit leaves the free devices (each node's list, the buckets' node order, the total)
    as the engine's gives and takes do."""
    cl = PACK_CLUSTERS[cluster]()
    n = cl.n_devices
    order = data.draw(st.permutations(range(n)))
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=n - 1)))
    running = [tuple(sorted(order[a:b])) for a, b in zip([0, *cuts], [*cuts, n])]
    running = running[:data.draw(st.integers(0, len(running)))]  # the rest of the devices are free
    engine_free, core_free = FreeDevices(cl), FreeDevices(cl)
    for d in running:
        engine_free.take(d)
        core_free.take(d)
    for _ in range(3):
        victims = data.draw(st.lists(st.sampled_from(running), unique=True)) if running else []
        sizes = data.draw(st.lists(st.integers(1, n), max_size=6))
        tent, lists = Tentative(engine_free), fastcore_las.NodeLists(core_free)
        view = ClusterView(0.0, cl, (), {}, tent)
        for d in victims:
            tent.release(d)
            lists.release(d)
        started = []
        for g in sizes:
            got = Pack().place(Job(0, 0.0, 1e13, gpus=g), g, view)
            if got is not None:
                tent.take(got)
                started.append(got)
            assert lists.place(g) == got
        used = {x for d in started for x in d}
        preempted = [d for d in victims if used.intersection(d)]
        for d in victims:
            if not used.intersection(d):
                assert all(lists.is_free(x) for x in d)
                lists.take(d)
        for d in preempted:
            engine_free.give(d)
        for d in started:
            engine_free.take(d)
        lists.commit(preempted, started)
        assert core_free.by_node == engine_free.by_node and core_free.total == engine_free.total
        assert [list(b) for b in core_free.buckets] == [list(b) for b in engine_free.buckets]
        running = [d for d in running if d not in preempted] + started
