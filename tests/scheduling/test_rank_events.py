"""Kept ranks and quiet passes of the preemptive policies.

The incremental path (waiting jobs' ranks kept across passes, a pass walking only a prefix) and
the engine skipping passes that provably decide nothing must give the schedule of the old way:
every pass ranks everything (a subclass overriding ``key`` takes that path) and no pass is
skipped. Checked on random workloads against both; the moments a ranking can next change are
checked by hand on tiny cases."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim import events as E
from llmos_sim.engine import Engine
from llmos_sim.policies.scheduling.preemptive import LAS, SRTF, DiscretizedLAS
from llmos_sim.types import Cluster, DeviceSpec, Job
from llmos_sim.view import ClusterView
from sched_helpers import GeneralDiscretizedLAS, GeneralLAS, GeneralSRTF, cluster, job, running



def _jobs(seed: int, n: int, mix: str) -> list[Job]:
    rng = np.random.default_rng(seed)
    arrivals = np.round(np.cumsum(rng.exponential(30.0, n)), 0)  # rounded: ties, and ties with rounds
    gpus = rng.choice([1, 1, 2, 4], n)
    secs = np.round(rng.lognormal(4.5, 1.2, n), 1)
    out = []
    for i, (a, s, g) in enumerate(zip(arrivals, secs, gpus)):
        kw = {}
        if mix == "fractional" and g == 1 and i % 2:
            kw["gpu_milli"] = 500
        if mix == "elastic" and g > 1 and i % 2:
            kw["min_gpus"] = 1
        out.append(Job(i, float(a), float(s * g), gpus=int(g), **kw))
    return out


def _run(scheduler, jobs, skip=True, fast_path="off", **kw):
    """The general engine (these are its kept ranks and quiet passes; ``fast_path="auto"``: a
    fast core where the run is one)."""
    eng = Engine(cluster(2, 4), scheduler, fast_path=fast_path, **kw)
    if not skip:
        eng._settles = False
    return eng.run(jobs).records, eng


CASES = [
    (LAS, GeneralLAS, {"round_s": 60.0}),
    (LAS, GeneralLAS, {"round_s": 30.0, "min_run_s": 45.0}),
    (LAS, GeneralLAS, {"round_s": 45.0, "preempt_in_overhead": True}),
    (LAS, GeneralLAS, {"round_s": 60.0, "work_conserving": False}),
    (SRTF, GeneralSRTF, {"round_s": 60.0}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 60.0, "thresholds": (200.0, 2000.0)}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 30.0, "thresholds": (300.0,), "running_first": False,
                                             "min_run_s": 40.0}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 60.0, "thresholds": (100.0, 1000.0), "preempt_in_overhead": True}),
]


@pytest.mark.parametrize("fast,general,kw", CASES)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), overhead=st.sampled_from([0.0, 10.0, 60.0]), per_event=st.booleans(),
       mix=st.sampled_from(["whole", "fractional", "elastic"]))
def test_kept_ranks_and_quiet_passes_give_the_old_schedule(fast, general, kw, seed, overhead, per_event, mix):
    jobs = _jobs(seed, 40, mix)
    engine_kw = {"preempt_overhead_s": overhead, "pass_per_event": per_event}
    new, eng = _run(fast(**kw), jobs, **engine_kw)
    old, eng_old = _run(general(**kw), jobs, **engine_kw)
    assert eng_old.passes_skipped == 0
    assert new == old
    no_skip, eng_ns = _run(fast(**kw), jobs, skip=False, **engine_kw)  # kept ranks alone
    assert eng_ns.passes_skipped == 0
    assert no_skip == old
    assert sum(1 for r in new if r[1] == "finish") == len(jobs)
    assert _run(fast(**kw), jobs, fast_path="auto", **engine_kw)[0] == old  # LAS's fast core where eligible


def test_quiet_passes_are_skipped_and_counted():
    """2D-LAS with short rounds: most rounds fall between threshold crossings and are skipped;
    with skipping off the same run asks the policy every round."""
    jobs = _jobs(3, 60, "whole")
    kw = {"round_s": 20.0, "thresholds": (500.0, 5000.0)}
    a, eng = _run(DiscretizedLAS(**kw), jobs, preempt_overhead_s=10.0)
    b, eng_b = _run(DiscretizedLAS(**kw), jobs, skip=False, preempt_overhead_s=10.0)
    assert a == b
    assert eng.passes_skipped > 0 and eng_b.passes_skipped == 0


def test_log_passes_turns_skipping_off():
    jobs = _jobs(3, 30, "whole")
    _, eng = _run(DiscretizedLAS(round_s=20.0, thresholds=(500.0,)), jobs, log_passes=True)
    assert eng.passes_skipped == 0


def _engine_view(now, queue, running_jobs, suspended=None, n=1):
    v = ClusterView.build(cluster(1, n), queue=queue, running={r.job.id: r for r in running_jobs}, now_s=now,
                          suspended=suspended or {})
    v.queue = {j.id: j for j in queue}.values()  # the engine's kind of queue: kept ranks apply
    return v


def test_las_quiet_until_a_running_job_overtakes_the_next_waiting_one():
    """One device: job 0 runs with 10 device-s of service, job 1 waits with 50. Job 0 stays ahead
    until its service reaches 50: 40 s later at width 1 (less a relative margin of 1e-6)."""
    r0 = running(job(0, 0.0, 500.0), [0], start=0.0, attained=10.0)
    s1 = running(job(1, 0.0, 500.0), [0], attained=50.0)
    las = LAS()
    v = _engine_view(0.0, [s1.job], [r0], suspended={1: s1})
    assert not las.decide(v)
    assert las.settled_until_s(v) == 40.0 - 1e-6 * 41.0


def test_las_quiet_until_a_wider_running_job_overtakes_a_narrower_one():
    """Three devices: job 2 (2 wide, 10 device-s) and job 0 (1 wide, 30) run; waiting job 1 (2
    devices, 100) has no room. Job 0 would reach 100 after 70 s and job 2 after 45 s, but job 2
    gains 2/s against job 0's 1/s and passes job 0's service first: after 20 s."""
    r0 = running(job(0, 0.0, 500.0), [0], attained=30.0)
    r2 = running(job(2, 0.0, 500.0, gpus=2), [1, 2], attained=10.0)
    s1 = running(job(1, 0.0, 500.0, gpus=2), [0, 1], attained=100.0)
    las = LAS()
    v = _engine_view(0.0, [s1.job], [r0, r2], suspended={1: s1}, n=3)
    assert not las.decide(v)
    assert las.settled_until_s(v) == 20.0 - 1e-6 * 21.0


def test_2d_las_quiet_until_a_threshold_crossing():
    """2D-LAS, threshold 100 device-s: a 2-wide running job with 40 crosses it after 30 s (less
    a tolerance of 2e-9 × 101 device-s, then the relative margin)."""
    r0 = running(job(0, 0.0, 500.0, gpus=2), [0, 1], attained=40.0)
    waiting = job(1, 5.0, 100.0, gpus=2)
    pol = DiscretizedLAS(thresholds=[100.0])
    v = _engine_view(0.0, [waiting], [r0], n=2)
    assert not pol.decide(v)
    t = (100.0 - 2e-9 * 101.0 - 40.0) / 2.0
    assert pol.settled_until_s(v) == t - 1e-6 * (1.0 + t)


def test_protection_end_is_a_moment_too():
    """A job in its 20 s restore overhead is protected: the ranking may change when it ends."""
    r0 = running(job(0, 0.0, 500.0), [0], start=5.0, attained=10.0)
    r0.seg_overhead_s = 20.0
    waiting = job(1, 0.0, 100.0)
    las = LAS()
    v = _engine_view(10.0, [waiting], [r0])
    assert not las.decide(v)
    assert las.settled_until_s(v) == 25.0 - 1e-6 * 26.0


def test_gittins_order_never_skips():
    """2D-Gittins ranks by an index that moves with service: no quiet passes, the general path."""
    pol = DiscretizedLAS(order="gittins", running_first=False)
    assert not pol.incremental() and not pol.settles()
    _, eng = _run(pol, _jobs(1, 20, "whole"))
    assert eng.passes_skipped == 0


@pytest.mark.parametrize("fast,general,kw", [
    (LAS, GeneralLAS, {"round_s": 60.0}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 60.0, "thresholds": (200.0, 2000.0)}),
])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), action=st.sampled_from(["preempt", "wait", "fail"]))
def test_memory_evictions_and_rejections_keep_the_old_schedule(fast, general, kw, seed, action):
    """Shared devices with memory pools: a start may evict jobs (which rejoin the queue in the
    middle of applying a decision), be rejected, or fail; the kept ranking must follow."""
    from llmos_sim.policies.memory.fit import FirstFitPool
    from llmos_sim.types import GB, Cluster, DeviceSpec

    rng = np.random.default_rng(seed)
    jobs = []
    for i, j in enumerate(_jobs(seed, 40, "fractional")):
        jobs.append(Job(j.id, j.arrival_s, j.work_flops, gpus=j.gpus, gpu_milli=j.gpu_milli,
                        mem_bytes_per_device=int(rng.choice([2, 5, 7])) * GB, priority=int(rng.integers(0, 3))))
    cl = Cluster.homogeneous(2, 4, DeviceSpec("m", 1.0, 10 * GB))

    def run(sched, skip=True):
        eng = Engine(cl, sched, pool_factory=FirstFitPool, on_memory_full=action, preempt_overhead_s=10.0)
        if not skip:
            eng._settles = False
        return list(eng.run(jobs).records)

    old = run(general(**kw))
    assert run(fast(**kw)) == old
    assert run(fast(**kw), skip=False) == old


def test_a_wake_up_no_later_pass_names_is_withdrawn():
    """2D-LAS, 4 unit devices, threshold 4 device-seconds, 2 s restore, no rounds. B (4 devices,
    3 s) starts at 0 and reaches the threshold at 1, when A (1 device, 1 s) arrives: A is in the
    first queue, so B is preempted and A runs 1-2. The pass at 1 names 5 (A would cross then);
    A finishes at 2 and B restarts (restore until 4), so the pass at 2 names nothing more: the
    moment 5 is withdrawn. C (4 devices, 1 s) arrives at 4, when B is still restoring (up to and
    including 4), so it waits; no arrival, completion or rank change calls a pass before B ends
    at 6. C runs 6-7. A pass kept at 5 would have preempted B for C (B finishing at 9)."""
    sched = DiscretizedLAS(thresholds=(4.0,))
    eng = Engine(Cluster.homogeneous(1, 4, DeviceSpec("unit", 1.0, 0)), sched, preempt_overhead_s=2.0)
    log = eng.run([Job(0, 0.0, 12.0, gpus=4), Job(1, 1.0, 1.0, gpus=1), Job(2, 4.0, 4.0, gpus=4)])
    got = [(t, k, j) for t, k, j, _ in log.records if k in (E.START, E.PREEMPT, E.FINISH)]
    assert got == [(0.0, E.START, 0), (1.0, E.PREEMPT, 0), (1.0, E.START, 1), (2.0, E.FINISH, 1),
                   (2.0, E.START, 0), (6.0, E.FINISH, 0), (6.0, E.START, 2), (7.0, E.FINISH, 2)]
