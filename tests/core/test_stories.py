"""Short runs whose event logs match hand-computed schedules exactly.

Devices run at C = 10^13 FLOP/s, so a job of ``g × C × d`` FLOPs on g devices takes d seconds.
"""
import pytest

from llmos_sim.engine import Engine
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.policies.scheduling import FIFO, SJF, FirstFree
from llmos_sim.types import GB, Cluster, DeviceSpec, Job

C = 1e13
DEV = DeviceSpec("d", C, 4 * GB)


def job(i, t, gpus, seconds, **kw):
    return Job(i, float(t), gpus * C * seconds, gpus=gpus, **kw)


def schedule(log, kinds=("start", "finish", "resize", "preempt", "fail")):
    """(time, kind, job, devices-if-any) of the life-cycle records."""
    out = []
    for t, kind, subj, data in log:
        if kind in kinds:
            devs = data[0] if kind in ("start", "preempt") else data[1] if kind == "resize" else None
            out.append((t, kind, subj, devs) if devs is not None else (t, kind, subj))
    return out


def one_node(n=4):
    return Cluster.homogeneous(1, n, DEV)


# --- FIFO: strict (head-of-line blocking) vs skip ----------------------------------------
HOL_JOBS = [job(0, 0, 2, 100), job(1, 1, 4, 50), job(2, 2, 1, 10)]


@pytest.mark.parametrize("pool", [IdealPool, FirstFitPool])
def test_fifo_strict_blocks_behind_the_head(pool):
    log = Engine(one_node(), FIFO(), pool_factory=pool).run(HOL_JOBS)
    assert schedule(log) == [
        (0.0, "start", 0, (0, 1)),
        (100.0, "finish", 0),
        (100.0, "start", 1, (0, 1, 2, 3)),
        (150.0, "finish", 1),
        (150.0, "start", 2, (0,)),
        (160.0, "finish", 2),
    ]


@pytest.mark.parametrize("pool", [IdealPool, FirstFitPool])
def test_fifo_skip_lets_a_small_job_go_ahead(pool):
    log = Engine(one_node(), FIFO(blocking=False), pool_factory=pool).run(HOL_JOBS)
    assert schedule(log) == [
        (0.0, "start", 0, (0, 1)),
        (2.0, "start", 2, (2,)),
        (12.0, "finish", 2),
        (100.0, "finish", 0),
        (100.0, "start", 1, (0, 1, 2, 3)),
        (150.0, "finish", 1),
    ]


# --- SJF vs FIFO on one device -------------------------------------------------------------
ONE_DEVICE_JOBS = [job(0, 0, 1, 100), job(1, 1, 1, 50), job(2, 2, 1, 10)]


def test_sjf_runs_the_shortest_waiting_job_next():
    log = Engine(one_node(1), SJF()).run(ONE_DEVICE_JOBS)
    assert schedule(log) == [
        (0.0, "start", 0, (0,)), (100.0, "finish", 0),
        (100.0, "start", 2, (0,)), (110.0, "finish", 2),
        (110.0, "start", 1, (0,)), (160.0, "finish", 1),
    ]


def test_fifo_runs_in_arrival_order():
    log = Engine(one_node(1), FIFO()).run(ONE_DEVICE_JOBS)
    assert [e[1:3] for e in schedule(log)] == [("start", 0), ("finish", 0), ("start", 1), ("finish", 1),
                                               ("start", 2), ("finish", 2)]
    assert schedule(log)[-1] == (160.0, "finish", 2)


def test_simultaneous_arrivals_are_seen_by_one_pass():
    """Both jobs arrive at t=0; SJF must see both before deciding (the short one goes first)."""
    log = Engine(one_node(1), SJF()).run([job(0, 0, 1, 30), job(1, 0, 1, 5)])
    assert schedule(log) == [(0.0, "start", 1, (0,)), (5.0, "finish", 1), (5.0, "start", 0, (0,)),
                             (35.0, "finish", 0)]


# --- elastic jobs: start on min(available, demanded), grow later --------------------------
@pytest.mark.parametrize("pool", [IdealPool, FirstFitPool])
def test_elastic_job_starts_small_and_grows(pool):
    jobs = [job(0, 0, 2, 100, mem_bytes_per_device=GB),
            Job(1, 10.0, 4 * C * 50, gpus=4, min_gpus=1, mem_bytes_per_device=GB)]
    log = Engine(one_node(), FIFO(), pool_factory=pool).run(jobs)
    # J1 gets R* = min(2 free, 4 demanded) = 2 at t=10: 90 s × 2C = 180 C·s of its 200 C·s;
    # at t=100 it grows to 4 devices: the last 20 C·s take 5 s.
    assert schedule(log) == [
        (0.0, "start", 0, (0, 1)),
        (10.0, "start", 1, (2, 3)),
        (100.0, "finish", 0),
        (100.0, "resize", 1, (0, 1, 2, 3)),
        (105.0, "finish", 1),
    ]


def test_rigid_job_waits_for_its_full_grant():
    jobs = [job(0, 0, 2, 100), job(1, 10, 4, 50)]
    log = Engine(one_node(), FIFO()).run(jobs)
    assert schedule(log)[1:] == [(100.0, "finish", 0), (100.0, "start", 1, (0, 1, 2, 3)), (150.0, "finish", 1)]


# --- memory pools: the ideal pool vs first-fit, on shared (fractional) devices ------------
def _shared_device_story(pool):
    """Four quarter-GPU jobs of 1 GB fill a 4 GB device; J0 and J2 leave 2 GB free in two
    1 GB holes. J4 needs 2 GB: the ideal pool fits it at t=20; first-fit must wait until J1
    ends at t=30 and its hole coalesces with both neighbours."""
    q = 250  # a quarter of the device
    dur = {0: 10, 1: 30, 2: 20, 3: 40}
    jobs = [Job(i, 0.0, C * q / 1000 * d, gpus=1, gpu_milli=q, mem_bytes_per_device=GB) for i, d in dur.items()]
    jobs.append(Job(4, 5.0, C * q / 1000 * 10, gpus=1, gpu_milli=q, mem_bytes_per_device=2 * GB))
    return Engine(one_node(1), FIFO(placement=FirstFree()), pool_factory=pool).run(jobs)


def test_ideal_pool_admits_as_soon_as_total_free_suffices():
    s = schedule(_shared_device_story(IdealPool))
    assert (20.0, "start", 4, (0,)) in s
    assert (30.0, "finish", 4) in s


def test_first_fit_pool_waits_for_a_contiguous_hole():
    log = _shared_device_story(lambda cap: FirstFitPool(cap))
    s = schedule(log)
    assert (30.0, "start", 4, (0,)) in s
    assert (40.0, "finish", 4) in s
    alloc = [d for t, k, dev, d in log if k == "mem_alloc" and d[0] == 4]
    assert alloc[0][1] == 0  # J4 lands at offset 0: [0, 3 GB) was coalesced from three holes


# --- failures -------------------------------------------------------------------------------
def test_jobs_that_can_never_fit_fail_at_arrival_and_the_rest_run():
    jobs = [job(0, 0, 8, 10), job(1, 0, 1, 10, mem_bytes_per_device=5 * GB), job(2, 0, 1, 10)]
    log = Engine(one_node(), FIFO(), pool_factory=IdealPool).run(jobs)
    fails = {s: d[0] for t, k, s, d in log if k == "fail"}
    assert set(fails) == {0, 1}
    assert "needs 8 devices, the cluster has 4" in fails[0]
    assert "per device" in fails[1]
    assert (10.0, "finish", 2) in schedule(log)


def test_preprocess_and_output_phases_hold_the_devices():
    jobs = [Job(0, 0.0, C * 10, gpus=1, preprocess_s=3.0, output_s=2.0), job(1, 0, 1, 1)]
    log = Engine(one_node(1), FIFO()).run(jobs)
    assert schedule(log) == [(0.0, "start", 0, (0,)), (15.0, "finish", 0), (15.0, "start", 1, (0,)),
                             (16.0, "finish", 1)]


# --- memory full: wait, fail, or preempt ------------------------------------------------------
def _memory_full_story(action):
    """Two half-GPU jobs share a 4 GB device: J0 (3 GB) is running when J1 (2 GB, higher
    priority) arrives at t=1."""
    jobs = [Job(0, 0.0, C * 0.5 * 10, gpus=1, gpu_milli=500, mem_bytes_per_device=3 * GB),
            Job(1, 1.0, C * 0.5 * 4, gpus=1, gpu_milli=500, mem_bytes_per_device=2 * GB, priority=1)]

    class Eager(FIFO):  # asks to start every job at once, so the engine's memory rule decides
        def try_start(self, job, view):
            d = (0,)
            view.plan(job, d)
            return d

    return Engine(one_node(1), Eager(blocking=False), pool_factory=IdealPool, on_memory_full=action,
                  preempt_overhead_s=1.0).run(jobs)


def test_memory_full_wait_keeps_the_job_queued():
    s = schedule(_memory_full_story("wait"))
    assert s == [(0.0, "start", 0, (0,)), (10.0, "finish", 0), (10.0, "start", 1, (0,)), (14.0, "finish", 1)]


def test_memory_full_fail_rejects_the_job():
    log = _memory_full_story("fail")
    assert (1.0, "fail", 1) in schedule(log)


def test_memory_full_preempt_evicts_the_lower_ranked_job():
    s = schedule(_memory_full_story("preempt"))
    # J0 did 1 s of its 10 at t=1; it restarts after J1 with a 1 s restore: 1 + 9 s -> 15.
    assert s == [(0.0, "start", 0, (0,)), (1.0, "preempt", 0, (0,)), (1.0, "start", 1, (0,)),
                 (5.0, "finish", 1), (5.0, "start", 0, (0,)), (15.0, "finish", 0)]


def test_a_service_job_holds_its_devices_until_its_host_says_done():
    """A service (e.g. LLM replicas) is a job the scheduler places; its host decides when it ends."""
    class Host:
        def __init__(self):
            self.started = []

        def start(self, job, devices, env, log):
            self.started.append((env.now, devices))
            return env.timeout(30.0)  # the stream ends 30 s after the service starts

    host = Host()
    jobs = [Job(0, 0.0, 0.0, gpus=2, service="chat"), job(1, 1, 4, 10), job(2, 2, 2, 10)]
    log = Engine(one_node(), FIFO(blocking=False), hosts={"chat": host}).run(jobs)
    assert host.started == [(0.0, (0, 1))]
    assert schedule(log) == [(0.0, "start", 0, (0, 1)), (2.0, "start", 2, (2, 3)), (12.0, "finish", 2),
                             (30.0, "finish", 0), (30.0, "start", 1, (0, 1, 2, 3)), (40.0, "finish", 1)]
    orphan = Engine(one_node(), FIFO()).run([Job(0, 0.0, 0.0, service="nobody")])
    assert [d for _, k, _, d in orphan if k == "fail"] == [("no host for service 'nobody'",)]


# --- allocation patterns: a job's memory trace is replayed on its devices while it runs ------
def test_a_memory_trace_is_replayed_on_the_job_devices_and_an_oom_fails_the_job_alone():
    fits = (( 0.0, "alloc", 1, 2 * GB), (4.0, "free", 1, 0), (4.0, "alloc", 2, GB), (8.0, "free", 2, 0))
    too_big = ((2.0, "alloc", 1, int(3.5 * GB)),)
    jobs = [job(0, 0, 1, 10, mem_bytes_per_device=GB, mem_trace=fits),
            job(1, 0, 1, 10, mem_bytes_per_device=GB, mem_trace=too_big),
            job(2, 1, 1, 5)]
    log = Engine(one_node(2), FIFO(), pool_factory=FirstFitPool).run(jobs)
    assert schedule(log) == [
        (0.0, "start", 0, (0,)), (0.0, "start", 1, (1,)),
        (2.0, "fail", 1), (2.0, "start", 2, (1,)),
        (7.0, "finish", 2), (10.0, "finish", 0),
    ]
    fail = [d[0] for t, k, s, d in log if k == "fail"]
    assert fail and fail[0].startswith("out of memory")
    # device 0's pool: 1 GB persistent, +2 GB at 0, -2 GB +1 GB at 4, -1 GB at 8, -1 GB at 10
    levels = [(t, k, d[4]) for t, k, dev, d in log if dev == 0 and k in ("mem_alloc", "mem_free")]
    assert levels == [(0.0, "mem_alloc", GB), (0.0, "mem_alloc", 3 * GB), (4.0, "mem_free", GB),
                      (4.0, "mem_alloc", 2 * GB), (8.0, "mem_free", GB), (10.0, "mem_free", 0)]
    # the failed job's persistent memory went back to device 1's pool
    dev1 = [d[4] for t, k, dev, d in log if dev == 1 and k in ("mem_alloc", "mem_free", "mem_fail")]
    assert dev1[-1] == 0
