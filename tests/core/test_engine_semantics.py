"""Engine semantics that once went wrong: each test reproduces a defect on a hand-sized case.

Devices are 1 FLOP/s, so a job's work in FLOPs is its run time in device-seconds.
"""
import logging
import math

import pytest

from llmos_sim import events as E
from llmos_sim.engine import Engine
from llmos_sim.metrics import jobs_table
from llmos_sim.policies.memory.buddy import BuddyPool
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.policies.scheduling import FIFO, SJF
from llmos_sim.policies.scheduling.base import EMPTY, ClusterScheduler
from llmos_sim.policies.scheduling.preemptive import LAS
from llmos_sim.types import GB, Cluster, DeviceSpec, Job

UNIT = DeviceSpec("unit", 1.0, 0)


def job(i, arrival, seconds, gpus=1, **kw):
    return Job(i, float(arrival), float(seconds * gpus), gpus=gpus, **kw)


def starts_of(log):
    return [(t, s, d[0]) for t, k, s, d in log.records if k == E.START]


# -- NaN and infinity never reach the event loop ---------------------------------------------
@pytest.mark.parametrize("field", ["arrival_s", "work_flops"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_job_with_a_non_finite_time_or_size_is_refused(field, bad):
    kw = {"arrival_s": 0.0, "work_flops": 1.0, field: bad}
    j = Job(0, kw["arrival_s"], kw["work_flops"]) if field == "work_flops" else Job(0, bad, 1.0)
    with pytest.raises(ValueError, match="job 0: arrival_s and work_flops must be finite"):
        Engine(Cluster.homogeneous(1, 1, UNIT), FIFO()).run([j])


@pytest.mark.parametrize("override, key", [
    ("workload.arrival_rate_per_s=nan", "workload.arrival_rate_per_s"),
    ("workload.arrival_rate_per_s=inf", "workload.arrival_rate_per_s"),
    ("workload.duration_median_s=nan", "workload.duration_median_s"),
])
def test_nan_rates_in_the_synthetic_workload_are_named_errors(override, key):
    from hydra.errors import InstantiationException

    from llmos_sim.run import compose, run_config

    cfg = compose(["experiment=quickstart", override, "output.plots=false"])
    with pytest.raises((ValueError, InstantiationException), match=key.replace(".", r"\.")):
        run_config(cfg)


@pytest.mark.parametrize("cls", ["philly.PhillyTrace", "alibaba.AlibabaTrace", "pollux.PolluxWorkload",
                                 "tiresias.TiresiasTrace"])
@pytest.mark.parametrize("load", [math.nan, math.inf, 0.0])
def test_a_non_finite_trace_load_is_a_named_error(cls, load):
    import importlib

    mod, name = cls.split(".")
    klass = getattr(importlib.import_module(f"llmos_sim.workload.{mod}"), name)
    with pytest.raises(ValueError, match=r"'workload\.load': must be (a finite number|> 0)"):
        klass(load=load)


# -- rounds keep going after a tick that coincides with the last completion -----------------
def test_rounds_survive_a_tick_that_coincides_with_a_completion():
    """Job 0 ends at t=20, exactly on a round tick, leaving nothing running after the last
    arrival; job 1 starts then. The rounds must go on: at the t=50 tick (job 1's segment is
    protected for 25 s) job 2 (no service) preempts job 1 (30 device-s). Before the fix the
    rounds died at t=20 and job 1 ran 20 -> 120 untouched."""
    cl = Cluster.homogeneous(1, 1, UNIT)
    log = Engine(cl, LAS(round_s=10.0, min_run_s=25.0)).run([job(0, 0, 20), job(1, 1, 100), job(2, 2, 100)])
    got = [(t, s) for t, s, _ in starts_of(log)]
    assert got[:4] == [(0.0, 0), (20.0, 1), (50.0, 2), (80.0, 1)]
    assert [(t, s) for t, k, s, _ in log.records if k == E.PREEMPT][:2] == [(50.0, 1), (80.0, 2)]


# -- jobs that can never start are failed with a reason, never left waiting -----------------
def test_a_job_no_empty_pool_can_hold_fails_at_arrival():
    """A buddy pool on a 4 GB device holds at most one 2 GiB block: 3 GB rounds to 4 GiB and
    never fits, although it is below the device's memory."""
    spec = DeviceSpec("d4", 1.0, 4_000_000_000)
    cl = Cluster.homogeneous(1, 2, spec)
    jobs = [job(0, 0, 5, mem_bytes_per_device=3_000_000_000), job(1, 0, 5, mem_bytes_per_device=1 * GB)]
    log = Engine(cl, FIFO(blocking=False), pool_factory=BuddyPool).run(jobs)
    t = jobs_table(log, cl).set_index("job_id")
    assert t.loc[0, "status"] == "failed" and "memory pool can hold 3000000000 B" in t.loc[0, "reason"]
    assert t.loc[1, "status"] == "completed"
    assert [r for r in log.records if r[1] == E.END][0][3] == ("drained",)


def test_quickstart_on_buddy_pools_ends_with_every_job_accounted_for():
    """The full-config form: 4 GB devices under buddy pools, jobs up to 4 GB per device."""
    from llmos_sim.run import compose, run_config

    cfg = compose(["experiment=quickstart", "cluster=tiny", "memory=buddy", "engine.on_memory_full=fail",
                   "workload.gpus=[1]", "workload.gpus_p=null", "workload.mem_min_bytes=0",
                   "workload.mem_max_bytes=4000000000", "workload.n_jobs=20", "output.plots=false"])
    res = run_config(cfg)
    jobs = res.tables["jobs"]
    assert len(jobs) == 20 and set(jobs["status"]) <= {"completed", "failed"}
    assert (jobs["status"] == "failed").sum() > 0
    assert jobs.loc[jobs.status == "failed", "reason"].str.len().gt(0).all()
    assert res.summary["n_unfinished"] == 0


class _Never(ClusterScheduler):
    """Starts nothing: every job it is given waits for ever."""

    def decide(self, view):
        return EMPTY


def test_a_run_that_can_make_no_progress_says_so_and_fails_the_waiting_jobs(caplog):
    cl = Cluster.homogeneous(1, 1, UNIT)
    with caplog.at_level(logging.WARNING, logger="llmos_sim.engine"):
        log = Engine(cl, _Never()).run([job(0, 0, 5), job(1, 3, 5)])
    fails = [(t, s, d[0]) for t, k, s, d in log.records if k == E.FAIL]
    assert [(t, s) for t, s, _ in fails] == [(3.0, 0), (3.0, 1)]
    assert all(w.startswith("stalled: nothing running and no event left") for _, _, w in fails)
    assert log.records[-1][1:] == (E.END, None, ("stalled",))
    assert "the run stalled at t=3 s: 2 queued job(s)" in caplog.text
    assert set(jobs_table(log, cl)["status"]) == {"failed"}


# -- resizing a job that replays a memory trace frees the trace's allocations ---------------
def test_resizing_a_memory_trace_job_leaves_every_pool_empty():
    """Job 1 is elastic (1..2 devices) and replays a trace that allocates 1 GB and never frees
    it; it starts on one device and grows at t=5 when job 0 ends. The resize restarts the
    trace, so the first segment's allocation must be freed, not leaked."""
    spec = DeviceSpec("d", 1.0, 8 * GB)
    cl = Cluster.homogeneous(1, 2, spec)
    trace = ((0.0, "alloc", "act", GB),)
    jobs = [job(0, 0, 5), Job(1, 0.0, 40.0, gpus=2, min_gpus=1, mem_bytes_per_device=GB, mem_trace=trace)]
    eng = Engine(cl, FIFO(), pool_factory=FirstFitPool)
    log = eng.run(jobs)
    assert [r[1] for r in log.records if r[2] == 1 and r[1] in (E.START, E.RESIZE)] == [E.START, E.RESIZE]
    assert all(p.stats().allocated_bytes == 0 and not p.live() for p in eng.pools)


# -- one pass per instant (default) or one pass per event ----------------------------------------
def test_pass_per_event_changes_a_fifo_skip_schedule():
    """Two devices. t=0: jobs 0 and 1 (1 device, 10 s) and job 2 (2 devices) arrive; job 3 (1
    device) arrives at t=10, the instant jobs 0 and 1 end (its arrival is handled first). One
    pass per instant sees both devices free: job 2 starts at 10, job 3 waits. One pass per
    event: job 3's arrival finds nothing free, job 0's completion frees one device, which FIFO
    with skipping gives to job 3; job 2 waits until 20."""
    cl = Cluster.homogeneous(1, 2, UNIT)
    jobs = [job(0, 0, 10), job(1, 0, 10), job(2, 0, 10, gpus=2), job(3, 10, 10)]
    batch = Engine(cl, FIFO(blocking=False)).run(jobs)
    each = Engine(cl, FIFO(blocking=False), pass_per_event=True).run(jobs)
    assert [(t, s) for t, s, _ in starts_of(batch)] == [(0.0, 0), (0.0, 1), (10.0, 2), (20.0, 3)]
    assert [(t, s) for t, s, _ in starts_of(each)] == [(0.0, 0), (0.0, 1), (10.0, 3), (20.0, 2)]


def test_pass_per_event_changes_an_sjf_schedule():
    """One device; a long job (id 0) and a short one (id 1) arrive together. One pass sees both
    and SJF runs the short one first; one pass per arrival starts the long one before the short
    one has arrived."""
    cl = Cluster.homogeneous(1, 1, UNIT)
    jobs = [job(0, 0, 100), job(1, 0, 10)]
    assert [(t, s) for t, s, _ in starts_of(Engine(cl, SJF()).run(jobs))] == [(0.0, 1), (10.0, 0)]
    each = Engine(cl, SJF(), pass_per_event=True).run(jobs)
    assert [(t, s) for t, s, _ in starts_of(each)] == [(0.0, 0), (100.0, 1)]


def test_pass_per_event_is_a_config_key():
    from llmos_sim.run import compose, run_config

    base = ["experiment=quickstart", "workload.n_jobs=30", "scheduler=sjf", "output.plots=false"]
    a = run_config(compose(base)).tables["jobs"]
    b = run_config(compose(base + ["engine.pass_per_event=true"])).tables["jobs"]
    assert len(a) == len(b) == 30 and set(b["status"]) == {"completed"}


def test_a_horizon_after_the_last_event_still_detects_a_stall_and_a_clean_end():
    cl = Cluster.homogeneous(1, 1, UNIT)
    log = Engine(cl, FIFO()).run([job(0, 0, 5)], until_s=100.0)
    assert log.records[-1][1:] == (E.END, None, ("drained",))
    log = Engine(cl, _Never()).run([job(0, 0, 5)], until_s=100.0)
    assert [r[1] for r in log.records][-2:] == [E.FAIL, E.END] and log.records[-1][3] == ("stalled",)
    log = Engine(cl, FIFO()).run([job(0, 0, 500)], until_s=100.0)  # cut by the horizon: still running
    assert log.records[-1][3] == ("until",) and jobs_table(log, cl)["status"].tolist() == ["running"]


def test_can_never_fit_counts_only_devices_whose_pool_holds_the_job():
    """A 4 GB device (buddy: at most a 2 GiB block) and an 8 GB one (a 4 GiB block): a job
    needing 3 GB on two devices can never start; on one device it runs on the 8 GB device."""
    from llmos_sim.hardware import build_cluster

    cl = build_cluster([{"nodes": 1, "devices_per_node": 1, "device": {"name": "small", "flops": 1.0,
                                                                       "mem_bytes": 4_000_000_000}},
                        {"nodes": 1, "devices_per_node": 1, "device": {"name": "big", "flops": 1.0,
                                                                       "mem_bytes": 8_000_000_000}}])
    jobs = [job(0, 0, 5, gpus=2, mem_bytes_per_device=3_000_000_000),
            job(1, 0, 5, mem_bytes_per_device=3_000_000_000),
            job(2, 0, 5, mem_bytes_per_device=3_000_000_000, device_type="small")]
    log = Engine(cl, FIFO(blocking=False), pool_factory=BuddyPool).run(jobs)
    t = jobs_table(log, cl).set_index("job_id")
    assert t.loc[0, "status"] == "failed" and "the cluster has 1" in t.loc[0, "reason"]
    assert t.loc[1, "status"] == "completed" and starts_of(log) == [(0.0, 1, (1,))]
    assert t.loc[2, "status"] == "failed" and "the cluster has 0" in t.loc[2, "reason"]
