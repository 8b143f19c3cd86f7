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


@pytest.mark.parametrize("scaled", [True, False])
def test_provision_floor_charges_the_service_own_replicas_the_load_time_at_its_start(scaled):
    # the service job starts at 0; with provision_floor its replica is ready at DELAY (~18 s):
    # request 0 (arrived at 0) and 1 (at 5) wait for it; without, they start at once
    rows = [(0.0, 100, 5), (5.0, 100, 5)]
    cold = _cfg(rows)
    with open_dict(cold):
        cold.services.chat.provision_floor = True
        if not scaled:
            cold.services.chat.autoscaler = None
    r = run_config(cold)
    reqs = r.tables["requests"].set_index("request")
    assert reqs.loc[0, "schedule_s"] == DELAY and reqs.loc[1, "schedule_s"] == DELAY
    assert _service(r).start_s == 0.0
    if scaled:  # the floor replica is logged provisioning, then ready
        (prov,) = _records(r, E.PROVISION_START)
        (ready,) = _records(r, E.REPLICA_READY)
        assert prov[0] == 0.0 and prov[3][:3] == ("chat", 0, DELAY) and prov[3][3:] == (0, 1, 0, 0)
        assert ready[0] == DELAY and ready[3][3:] == (1, 0, 0, 0)
    else:
        assert not _records(r, E.PROVISION_START, E.REPLICA_READY)
    warm = run_config(_cfg(rows))  # the default: the floor starts warm
    w = warm.tables["requests"].set_index("request")
    assert w.loc[0, "schedule_s"] == 0.0 and w.loc[1, "schedule_s"] == 5.0
    assert [x[0] for x in _records(warm, E.REPLICA_READY)] == [0.0]


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


# -- property: nothing lost, nothing duplicated, every job ends ----------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_requests = st.lists(st.tuples(st.integers(0, 60).map(float), st.integers(16, 600), st.integers(1, 400)),
                     min_size=1, max_size=25)
_steps = st.lists(st.tuples(st.integers(1, 70).map(float), st.sampled_from(["up", "down"])), max_size=8,
                  unique_by=lambda s: s[0])
_jobs = st.lists(st.tuples(st.integers(0, 60).map(float), st.integers(1, 3), st.integers(1, 100).map(float),
                           st.sampled_from([0, 20])), max_size=3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_requests, _steps, _jobs, st.sampled_from(["fifo", "priority"]), st.integers(1, 2), st.booleans())
def test_no_request_is_lost_or_duplicated_and_every_job_ends(requests, steps, jobs, scheduler, replicas, cut):
    jobs = jobs or [(5000.0, 1, 1.0, 0)]
    extra = ("engine.until_s=40",) if cut else ()
    r = run_config(_cfg(requests, steps=steps, jobs=jobs, scheduler=scheduler, replicas=replicas, extra=extra))
    recs = r.log.records
    arrived = [s for _, k, s, _ in recs if k == E.REQ_ARRIVE]
    ended = [s for _, k, s, _ in recs if k in (E.REQ_FINISH, E.REQ_FAIL)]
    assert len(arrived) == len(set(arrived)) and len(ended) == len(set(ended))  # no duplicates
    assert set(ended) <= set(arrived)
    if not cut:  # the whole run: every request arrived and ended
        assert sorted(arrived) == list(range(len(requests))) and sorted(ended) == sorted(arrived)
    # every arrived job (training and replica jobs) ends completed or failed, or is still running
    jobs_t = r.tables["jobs"]
    n_arrive = sum(1 for _, k, _, _ in recs if k == E.ARRIVE)
    assert len(jobs_t) == n_arrive
    assert set(jobs_t["status"].astype(str)) <= ({"completed", "failed", "running", "queued"} if cut
                                                 else {"completed", "failed"})
    ups = {s for _, k, s, d in recs if k == E.SCALE and d[2] > 0}
    assert ups <= set(jobs_t["job_id"])  # every scale-up is a job the scheduler saw
    # a replica serves only between ready and its drain; a drained replica's job ends at its drain's end
    ready = {d[1]: t for t, k, _, d in recs if k == E.REPLICA_READY}
    drain = {d[1]: t for t, k, _, d in recs if k == E.DRAIN_START}
    drained = {s: t for t, k, s, d in recs if k == E.DRAIN_END}
    reqs = r.tables["requests"]
    for _, q in reqs[reqs["replica"].notna()].iterrows():
        rep = int(q["replica"])
        assert q["schedule_s"] >= ready[rep]
        assert rep not in drain or q["arrival_s"] <= drain[rep]
    fin = jobs_t.set_index("job_id")
    for job, t in drained.items():
        assert fin.loc[job, "finish_s"] == t


# -- the threshold policy on hand-built loads ------------------------------------------------------
def _load(now, ready=2, prov=0, drain=0, queued=0, n_min=1, waiting=0, outstanding=0, att=math.nan, n=0):
    return ServiceLoad(now, ready, prov, drain, queued, n_min, waiting, outstanding, att, n)


def test_threshold_scales_up_on_queue_or_slo_and_respects_max_pending_and_cooldown():
    p = ThresholdAutoscaler(max_replicas=3, up_queue_per_replica=4, up_slo_attainment=0.9, min_slo_samples=10,
                            cooldown_s=30, down_idle_s=60)
    assert p.decide(_load(0, waiting=8, outstanding=8)).delta == 0  # 4 per replica: not above
    assert p.decide(_load(10, waiting=9, outstanding=9)).delta == +1  # 4.5 > 4
    assert p.decide(_load(20, waiting=20, outstanding=20)).delta == 0  # cooldown (last change at 10)
    assert p.decide(_load(40, ready=2, prov=1, waiting=20)).delta == 0  # one pending at a time
    assert p.decide(_load(40, ready=3, waiting=20)).delta == 0  # at max_replicas
    assert p.decide(_load(40, ready=2, drain=1, waiting=20)).delta == 0  # the draining one holds its devices
    assert p.decide(_load(40, ready=2, waiting=20)).delta == +1  # once it has ended
    p2 = ThresholdAutoscaler(max_replicas=3, min_slo_samples=10)
    assert p2.decide(_load(0, att=0.5, n=9)).delta == 0  # too few samples
    step = p2.decide(_load(10, att=0.85, n=10, outstanding=20))
    assert step.delta == +1 and "SLO attainment 0.85" in step.reason


def test_threshold_scales_down_only_after_a_quiet_spell_and_never_below_the_floor():
    p = ThresholdAutoscaler(max_replicas=4, down_idle_s=30, down_outstanding_per_replica=2, cooldown_s=0)
    assert p.decide(_load(0, ready=3, outstanding=4)).delta == 0  # quiet (4 <= 2*2) starts here
    assert p.decide(_load(20, ready=3, outstanding=5)).delta == 0  # 5 > 4: not quiet, spell reset
    assert p.decide(_load(30, ready=3, outstanding=1)).delta == 0  # quiet again from 30
    assert p.decide(_load(50, ready=3, outstanding=1)).delta == 0  # 20 s
    assert p.decide(_load(60, ready=3, outstanding=1)) == ScaleStep(-1, "quiet for 30 s")
    assert p.decide(_load(100, ready=1, n_min=1)).delta == 0  # at the floor: never quiet


@pytest.mark.parametrize("kw,key", [({"max_replicas": 0}, "max_replicas"), ({"cooldown_s": -1}, "cooldown_s"),
                                    ({"up_slo_attainment": 1.5}, "up_slo_attainment"),
                                    ({"interval_s": 0}, "interval_s")])
def test_threshold_rejects_bad_settings_naming_the_key(kw, key):
    with pytest.raises(ValueError, match=f"autoscaler.{key}"):
        ThresholdAutoscaler(**({"max_replicas": 2} | kw))


def test_the_shipped_config_composes_and_a_bad_service_key_is_named():
    cfg = compose(["experiment=shared_autoscale"])
    assert cfg.services.code.autoscaler._target_.endswith("ThresholdAutoscaler")
    from llmos_sim.validate import InputError

    bad = _cfg([(0.0, 100, 10)], steps=[(1.0, "up")])
    with open_dict(bad):
        bad.services.chat.load_bw_bytes_s = 0
    with pytest.raises((InputError, ValueError), match="load_bw_bytes_s"):
        run_config(bad)
    with open_dict(bad):
        bad.services.chat.load_bw_bytes_s = BW
        bad.services.chat.provision_floor = "sometimes"
    with pytest.raises((InputError, ValueError), match="provision_floor"):
        run_config(bad)
    over = _cfg([(0.0, 100, 10)], replicas=3, autoscaler={"_target_": f"{__name__}.Scripted", "steps": [],
                                                          "max_replicas": 2})
    with pytest.raises((InputError, ValueError), match="services.chat.replicas"):
        run_config(over)


def test_the_replicas_table_counts_follow_the_records():
    r = run_config(_cfg([(0.0, 100, 3000), (25.0, 100, 800), (31.0, 100, 10)], steps=[(1.0, "up"), (30.0, "down")]))
    t = r.tables["replicas"]
    assert t["event"].astype(str).tolist() == [E.REPLICA_READY, E.SCALE, E.PROVISION_START, E.REPLICA_READY,
                                               E.SCALE, E.DRAIN_START, E.DRAIN_END]
    assert t["time_s"].tolist()[:6] == [0.0, 1.0, 1.0, 1.0 + DELAY, 30.0, 30.0]
    assert t["replica"].tolist() == [0, 1, 1, 1, 1, 1, 1]
    assert t["n_ready"].tolist() == [1, 1, 1, 2, 1, 1, 1]
    assert t["n_provisioning"].tolist() == [0, 0, 1, 0, 0, 0, 0]
    assert t["n_draining"].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert t["n_queued"].tolist() == [0, 1, 0, 0, 0, 0, 0]
    assert t["delta"].tolist() == [0, 1, 0, 0, -1, 0, 0]
    assert t["pool"].astype(str).tolist() == ["colocated"] * 7  # (a co-located replica prefills and decodes)
    again = run_config(_cfg([(0.0, 100, 3000), (25.0, 100, 800), (31.0, 100, 10)], steps=[(1.0, "up"), (30.0, "down")]))
    for name in ("replicas", "requests", "jobs"):  # same config, same tables
        assert again.tables[name].equals(r.tables[name]), name


def test_engine_submit_adds_a_job_that_arrives_now_and_refuses_a_known_id():
    from llmos_sim.engine import Engine
    from llmos_sim.hardware import build_cluster
    from llmos_sim.policies.scheduling.fifo import FIFO

    cl = build_cluster([{"nodes": 1, "devices_per_node": 2, "device": "A100"}])
    eng = Engine(cl, FIFO())
    seen = []

    def at_5(_ev):
        eng.submit(Job(7, 5.0, 10.0 * C, gpus=1))  # arrives now, starts at once on the free device
        eng.submit(Job(8, 5.0, 1.0, gpus=3))  # wider than the cluster: fails at once
        with pytest.raises(ValueError, match="duplicate job id 0"):
            eng.submit(Job(0, 5.0, 1.0))
        seen.append(eng.env.now)

    eng._at(5.0, at_5)
    log = eng.run([Job(0, 0.0, 20.0 * C, gpus=1)])
    rec = [(t, k, s) for t, k, s, _ in log.records if s in (7, 8)]
    assert seen == [5.0]
    # nothing else is due at t=5, so the pass the first submit asks for runs at once (Engine.request_pass)
    assert rec == [(5.0, E.ARRIVE, 7), (5.0, E.START, 7), (5.0, E.ARRIVE, 8), (5.0, E.FAIL, 8), (15.0, E.FINISH, 7)]
