"""Autoscaled services on the shared cluster: replicas asked for at run time, provisioned,
drained, competing with training jobs under the cluster scheduler (mode: mixed)."""
import math

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict

from llmos_sim import events as E
from llmos_sim.hardware import part
from llmos_sim.policies.autoscaling import Autoscaler, ScaleStep, ServiceLoad, ThresholdAutoscaler
from llmos_sim.run import compose, run_config
from llmos_sim.serving.specs import LLAMA31_8B
from llmos_sim.types import Job
from llmos_sim.workload.base import Workload

C = part("A100").flops  # FLOP/s of one device of the test cluster
BW, STARTUP = 1.0e9, 2.0
DELAY = LLAMA31_8B.weight_bytes / BW + STARTUP  # an added replica's provisioning time (~18 s)


class Scripted(Autoscaler):
    """A test autoscaler: the step (``up`` / ``down``) given for each decision time, else nothing."""

    def __init__(self, steps, max_replicas=8, interval_s=1.0):
        self.steps = {float(t): {"up": 1, "down": -1}[d] for t, d in steps}
        self.max_replicas, self.interval_s = max_replicas, interval_s
        self.seen: list[ServiceLoad] = []

    def decide(self, load):
        return ScaleStep(self.steps.get(load.now_s, 0), "scripted")


class Jobs(Workload):
    """Training jobs from rows ``[arrival_s, gpus, duration_s, priority]`` (on A100s)."""

    def __init__(self, rows):
        self.rows = rows

    def jobs(self, rng):
        return [Job(i, float(a), float(d) * g * C, gpus=int(g), priority=int(p)) for i, (a, g, d, p) in enumerate(self.rows)]


def _cfg(requests, steps=(), jobs=((5000.0, 1, 1.0, 0),), scheduler="fifo", replicas=1, router="least_outstanding",
         autoscaler=None, extra=()):
    cfg = compose(["experiment=shared_cluster", "cluster=tiny", f"scheduler={scheduler}", f"router={router}",
                   "output.plots=false", *extra])
    with open_dict(cfg):
        cfg.cluster.groups[0].device = "A100"  # one node of 4 A100s
        cfg.workload = OmegaConf.create({"_target_": f"{__name__}.Jobs", "rows": [list(r) for r in jobs]})
        cfg.services = OmegaConf.create({"chat": {
            "workload": {"_target_": "llmos_sim.workload.requests.ExplicitRequests", "rows": [list(r) for r in requests]},
            "replicas": replicas, "arrival_s": 0.0, "priority": 10, "mem_bytes_per_device": 0,
            "autoscaler": autoscaler or {"_target_": f"{__name__}.Scripted", "steps": [list(s) for s in steps]},
            "load_bw_bytes_s": BW, "startup_s": STARTUP}})
    return cfg


def _records(r, *kinds):
    return [(t, k, s, d) for t, k, s, d in r.log.records if k in kinds]


def _added(r, n=0):
    """The jobs-table row of the n-th replica job the service submitted (a scale-up's subject)."""
    ups = [s for _, _, s, d in _records(r, E.SCALE) if d[2] > 0]
    return r.tables["jobs"].set_index("job_id").loc[ups[n]]


def _service(r):
    t = r.tables["jobs"]
    return t[(t.tenant == "service:chat")].sort_values("job_id").iloc[0]


def test_a_scale_up_takes_requests_exactly_after_its_provisioning_delay():
    # request 0 keeps replica 0 busy; 1 arrives while replica 1 provisions (-> replica 0);
    # 2 arrives after it is ready (least outstanding -> replica 1)
    r = run_config(_cfg([(0.0, 100, 3000), (5.0, 100, 10), (25.0, 100, 10)], steps=[(1.0, "up")]))
    added = _added(r)
    assert added.arrival_s == 1.0 and added.start_s == 1.0 and added.n_devices == 1
    (prov,) = _records(r, E.PROVISION_START)
    ready = [x for x in _records(r, E.REPLICA_READY) if x[3][1] == 1]
    assert prov[0] == 1.0 and prov[3][2] == 1.0 + DELAY
    assert len(ready) == 1 and ready[0][0] == 1.0 + DELAY and 18 < DELAY < 19
    # the counts after each record: the scale decision queues it, the grant provisions it
    (scale,) = _records(r, E.SCALE)
    assert scale[0] == 1.0 and scale[2] == added.name == 2 and scale[3][:4] == ("chat", 1, 1, "scripted")
    assert scale[3][4:] == (1, 0, 0, 1) and prov[3][3:] == (1, 1, 0, 0) and ready[0][3][3:] == (2, 0, 0, 0)
    reqs = r.tables["requests"].set_index("request")
    assert reqs.loc[1, "replica"] == 0 and reqs.loc[2, "replica"] == 1
    assert reqs["finish_s"].notna().all()
    # at the stream's end the added replica drains (idle) and its job ends with the service's
    svc = _service(r)
    assert added.finish_s == svc.finish_s == reqs["finish_s"].max()


def test_a_drained_replica_takes_no_new_requests_and_its_job_ends_with_its_last_request():
    rows = [(0.0, 100, 3000), (25.0, 100, 800), (31.0, 100, 10), (32.0, 100, 10)]
    r = run_config(_cfg(rows, steps=[(1.0, "up"), (30.0, "down")]))
    reqs = r.tables["requests"].set_index("request")
    assert reqs.loc[1, "replica"] == 1  # arrived when replica 1 was ready and idle
    (ds,) = _records(r, E.DRAIN_START)
    (de,) = _records(r, E.DRAIN_END)
    assert ds[0] == 30.0 and ds[3][:3] == ("chat", 1, 1)  # one request still running there
    assert ds[3][3:] == (1, 0, 1, 0)  # ready, provisioning, draining, queued after it
    assert reqs.loc[2, "replica"] == 0 and reqs.loc[3, "replica"] == 0  # nothing new goes to a draining replica
    assert de[0] == reqs.loc[1, "finish_s"] > 30.0 and de[3][3:] == (1, 0, 0, 0)
    added = _added(r)
    assert added.finish_s == de[0] and added.start_s == 1.0


def test_a_scale_up_waits_while_the_scheduler_prefers_a_higher_priority_job():
    # 4 devices: the service (1) and job 0 (3 devices, 0..100 s) fill the cluster; the scale-up
    # (priority 10) asks at t=1, job 1 (3 devices, 50 s, priority 20) at t=2. When job 0 ends:
    # priority runs job 1 first and the replica waits for its end (150 s); FIFO starts the
    # replica (earlier) and job 1 waits for 3 free devices.
    jobs = [(0.0, 3, 100.0, 0), (2.0, 3, 50.0, 20)]
    rows = [(0.0, 100, 10), (400.0, 100, 10)]
    out = {}
    for sched in ("priority", "fifo"):
        r = run_config(_cfg(rows, steps=[(1.0, "up")], jobs=jobs, scheduler=sched))
        t = r.tables["jobs"].set_index("job_id")
        out[sched] = (t.loc[1, "start_s"], _added(r).start_s, _service(r).finish_s,
                      [x[0] for x in _records(r, E.REPLICA_READY) if x[3][1] == 1])
    job1, replica, _, ready = out["priority"]
    assert job1 == pytest.approx(100.0) and replica == pytest.approx(150.0)
    assert ready == [replica + DELAY]
    job1, replica, service_end, ready = out["fifo"]
    assert replica == pytest.approx(100.0) and ready == [replica + DELAY]
    assert job1 == service_end > 400.0  # 3 devices free only when the stream ends and the service leaves


def test_a_queued_scale_up_granted_after_the_stream_ended_ends_at_once():
    jobs = [(0.0, 3, 100.0, 0)]
    r = run_config(_cfg([(0.0, 100, 3000)], steps=[(1.0, "up")], jobs=jobs))
    assert r.tables["requests"]["finish_s"].max() < 100.0  # the stream ends while the replica waits
    added = _added(r)
    # the cluster is full (job 0 holds 3 devices to t=100) until the service's own job ends with
    # its stream and returns its device: the replica job is granted that device then, and ends
    assert added.start_s == _service(r).finish_s == added.finish_s == r.tables["requests"]["finish_s"].max()
    assert [k for _, k, _, _ in _records(r, E.PROVISION_START, E.DRAIN_START, E.DRAIN_END)] == [E.DRAIN_START, E.DRAIN_END]
