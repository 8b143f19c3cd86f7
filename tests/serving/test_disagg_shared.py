"""A disaggregated service on the shared cluster (mode: mixed): its job's devices split into
the two pools, the KV link the placement implies, per-pool autoscaling, hand-computed times.

Every iteration takes 1 s (``LinearCost(base_s=1)``); the tiny model has 512 B of KV per
token and 518784 B of weights, loaded at 518784 B/s plus a 2 s startup: an added replica is
ready 3 s after its grant. A request (arrival, prompt P, output O): its prefill iteration ends
with its first token, its P·512 bytes cross the link in ``latency + bytes / bandwidth``, then
its decode replica decodes its O − 1 other tokens, one per iteration.
"""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from llmos_sim import events as E
from llmos_sim.hardware import part
from llmos_sim.policies.autoscaling import Autoscaler, ScaleStep, StageLoad, ServiceLoad, ThresholdAutoscaler
from llmos_sim.run import compose, run_config
from llmos_sim.serving.cluster import ready_per_pool
from llmos_sim.validate import InputError
from .helpers import CONFIGS, ONE_SECOND

BPT = 512  # tiny model: KV bytes per token
WEIGHTS = 518784  # tiny model: weight bytes
DELAY = 3.0  # an added replica's provisioning: WEIGHTS / WEIGHTS B/s + 2 s
NET = 8192.0  # the cluster's network per GPU (B/s)
LAT = 0.5  # the topology link's latency per transfer (s)
NVLINK = part("A100").link_bw_bytes_s  # the A100's peer link per GPU (B/s)


class StageScripted(Autoscaler):
    """A test autoscaler: the step (``up`` / ``down``, pool) given for each decision time; it
    keeps the loads it saw."""

    def __init__(self, steps, max_replicas=8, interval_s=1.0):
        self.steps = {float(t): ({"up": 1, "down": -1}[d], stage) for t, d, stage in steps}
        self.max_replicas, self.interval_s = max_replicas, interval_s
        self.seen: list[ServiceLoad] = []

    def decide(self, load):
        self.seen.append(load)
        delta, stage = self.steps.get(load.now_s, (0, None))
        return ScaleStep(delta, "scripted", stage)


def _cfg(requests, nodes=2, per_node=1, steps=None, prefill=1, decode=1, autoscaler=None, jobs=()):
    """A service of ``prefill`` + ``decode`` replicas (TP 1) on ``nodes`` nodes of ``per_node``
    A100s; ``steps``: a :class:`StageScripted` autoscaler's steps (None: not autoscaled)."""
    cfg = compose(["experiment=shared_cluster", "cluster=tiny", "scheduler=fifo", "router=least_outstanding",
                   "batching=chunked_prefill", "output.plots=false"])
    topo = OmegaConf.load(CONFIGS / "topology" / "disaggregated.yaml")
    topo.prefill.replicas, topo.decode.replicas = prefill, decode
    topo.link.latency_s = LAT
    with open_dict(cfg):
        cfg.cluster.groups[0].nodes, cfg.cluster.groups[0].devices_per_node = nodes, per_node
        cfg.cluster.groups[0].device = "A100"
        cfg.cluster.link_bw_bytes_s = NET
        cfg.model = OmegaConf.load(CONFIGS / "model" / "tiny.yaml")
        cfg.cost = OmegaConf.create(ONE_SECOND)
        cfg.workload = OmegaConf.create({"_target_": "tests.serving.test_autoscale.Jobs",
                                         "rows": [list(r) for r in jobs]})
        if steps is not None:
            autoscaler = {"_target_": f"{__name__}.StageScripted", "steps": [list(s) for s in steps]}
        cfg.services = OmegaConf.create({"chat": {
            "workload": {"_target_": "llmos_sim.workload.requests.ExplicitRequests",
                         "rows": [list(r) for r in requests]},
            "replicas": 1, "arrival_s": 0.0, "priority": 10, "mem_bytes_per_device": 0,
            "autoscaler": autoscaler, "load_bw_bytes_s": float(WEIGHTS), "startup_s": 2.0, "topology": topo}})
    return cfg


def _records(r, *kinds):
    return [(t, k, s, d) for t, k, s, d in r.log.records if k in kinds]


def _req_events(r):
    kinds = (E.REQ_FIRST_TOKEN, E.REQ_FINISH, E.REQ_FAIL)
    return [(t, k, s) for t, k, s, _ in r.log.records if k in kinds]


def _service(r):
    t = r.tables["jobs"]
    return t[t.tenant == "service:chat"].sort_values("job_id").iloc[0]


def test_across_nodes_the_decode_starts_after_the_transfer_over_the_cluster_network():
    # one A100 per node: the service's 2 devices sit on two nodes, prefill on node 0, decode on
    # node 1. First token at 1; 20·512 B over the network at 8192 B/s after 0.5 s: lands at
    # 1 + 0.5 + 1.25 = 2.75; tokens 2 and 3 at 3.75 and 4.75, when the service's job ends
    r = run_config(_cfg([(0.0, 20, 3)]))
    assert _req_events(r) == [(1.0, E.REQ_FIRST_TOKEN, 0), (4.75, E.REQ_FINISH, 0)]
    assert [(t, d) for t, _, _, d in _records(r, E.KV_TRANSFER)] == [(1.0, ("start", 0, 1, 20 * BPT)),
                                                                      (2.75, ("end", 0, 1, 20 * BPT))]
    svc = _service(r)
    assert svc.n_devices == 2 and svc.start_s == 0.0 and svc.finish_s == 4.75


def test_inside_a_node_the_transfer_crosses_the_gpus_peer_link():
    # both devices on one node: the same bytes at the A100's NVLink (300 GB/s) after 0.5 s
    r = run_config(_cfg([(0.0, 20, 3)], nodes=1, per_node=2))
    end = 1.0 + LAT + 20 * BPT / NVLINK
    (start, land) = _records(r, E.KV_TRANSFER)
    assert start[0] == 1.0 and land[0] == pytest.approx(end, abs=1e-12)
    assert _req_events(r)[-1][0] == pytest.approx(end + 2.0, abs=1e-12)


def test_a_one_token_request_finishes_at_its_prefill_replica_and_ends_the_service():
    r = run_config(_cfg([(0.0, 20, 1)]))
    assert _req_events(r) == [(1.0, E.REQ_FIRST_TOKEN, 0), (1.0, E.REQ_FINISH, 0)]
    assert not _records(r, E.KV_TRANSFER) and _service(r).finish_s == 1.0


def test_a_decode_scale_up_takes_requests_after_its_provisioning_delay():
    # 3 nodes of one A100: the service holds devices 0 (prefill) and 1 (decode); "up decode" at
    # 1 s is granted device 2 at once, provisions until 1 + 3 = 4. Request 0 (arrives at 0,
    # 20 output tokens) goes to decode replica 1; request 1 (first token at 2) goes there too,
    # as the new one is not ready. Their transfers share prefill replica 0's link from 2.5
    # (request 0 has 2048 B left: at 4096 B/s it lands at 3.0; request 1's last 8192 B then
    # alone: 4.0). Request 0 decodes 19 tokens from 3.0: finishes at 22.0. Request 2 (first
    # token at 5) goes to the new replica 2 (least outstanding), alone on the link: lands at
    # 5 + 0.5 + 1.25 = 6.75, finishes at 7.75
    reqs = [(0.0, 20, 20), (1.0, 20, 2), (4.0, 20, 2)]
    r = run_config(_cfg(reqs, nodes=3, steps=[(1.0, "up", "decode")]))
    (scale,) = _records(r, E.SCALE)
    (prov,) = _records(r, E.PROVISION_START)
    ready = [x for x in _records(r, E.REPLICA_READY) if x[3][1] == 2]
    assert scale[0] == 1.0 and scale[3][:4] == ("chat", 2, 1, "scripted")
    assert prov[0] == 1.0 and prov[3][2] == 1.0 + DELAY and ready[0][0] == 1.0 + DELAY
    added = r.tables["jobs"].set_index("job_id").loc[scale[2]]
    assert added.n_devices == 1 and added.start_s == 1.0
    starts = {s: (t, d[2]) for t, k, s, d in _records(r, E.KV_TRANSFER) if d[0] == "start"}
    ends = {s: t for t, k, s, d in _records(r, E.KV_TRANSFER) if d[0] == "end"}
    assert starts == {0: (1.0, 1), 1: (2.0, 1), 2: (5.0, 2)} and ends == {0: 3.0, 1: 4.0, 2: 6.75}
    fin = {s: t for t, k, s in _req_events(r) if k == E.REQ_FINISH}
    assert fin == {0: 22.0, 1: 5.0, 2: 7.75}
    # at the stream's end the added replica drains and its job ends with the service's
    assert added.finish_s == _service(r).finish_s == max(fin.values())


def test_a_drained_decode_replica_takes_no_new_hand_off_and_its_job_ends_with_its_last_request():
    # as above, the decode replica 2 added at 1 s is ready at 4; request 0 lands on decode
    # replica 1 at 2.75 (alone on the link) and decodes there until 2.75 + 19 = 21.75. Request
    # 1 (first token at 5) goes to replica 2 (least outstanding), lands at 6.75, finishes at
    # 7.75; "down decode" at 10 drains replica 2 (idle: its job ends at once). Request 2 (first
    # token at 13.5) can only go to replica 1: lands at 13.5 + 0.5 + 1.25 = 15.25, joins its
    # next iteration (at 2.75 + 13 = 15.75), finishes at 16.75
    reqs = [(0.0, 20, 20), (4.0, 20, 2), (12.5, 20, 2)]
    r = run_config(_cfg(reqs, nodes=3, steps=[(1.0, "up", "decode"), (10.0, "down", "decode")]))
    scales = _records(r, E.SCALE)
    assert [(t, d[1], d[2]) for t, _, _, d in scales] == [(1.0, 2, 1), (10.0, 2, -1)]
    (drain,) = _records(r, E.DRAIN_END)
    assert drain[0] == 10.0 and drain[3][1] == 2
    added = r.tables["jobs"].set_index("job_id").loc[scales[0][2]]
    assert added.start_s == 1.0 and added.finish_s == 10.0
    starts = {s: (t, d[2]) for t, k, s, d in _records(r, E.KV_TRANSFER) if d[0] == "start"}
    assert starts == {0: (1.0, 1), 1: (5.0, 2), 2: (13.5, 1)}
    fin = {s: t for t, k, s in _req_events(r) if k == E.REQ_FINISH}
    assert fin == {0: 21.75, 1: 7.75, 2: 16.75}


@pytest.mark.parametrize("cold", [False, True])
def test_the_replicas_table_names_each_replicas_pool(cold):
    # 4 nodes of one A100: the service's own prefill replica 0 and decode replica 1, "up
    # decode" at 1 (replica 2, ready at 4), "up prefill" at 5 (replica 3, ready at 8); both
    # added drain at the stream's end (22). Cold (provision_floor): the own replicas provision
    # 0 -> 3, so the "up decode" at 1 waits (one pending at a time) and is not asked again:
    # the "up prefill" at 5 makes replica 2 a prefill replica, draining at 26. The pool
    # comes from the replica, not from the step's position among the records.
    cfg = _cfg([(0.0, 20, 20), (1.0, 20, 2), (6.0, 20, 2)], nodes=4,
               steps=[(1.0, "up", "decode"), (5.0, "up", "prefill")])
    with open_dict(cfg):
        cfg.services.chat.provision_floor = cold
    t = run_config(cfg).tables["replicas"]
    got = list(zip(t["time_s"], t["event"].astype(str), t["replica"], t["pool"].astype(str)))
    if cold:
        assert got == [(0.0, E.PROVISION_START, 0, "prefill"), (0.0, E.PROVISION_START, 1, "decode"),
                       (3.0, E.REPLICA_READY, 0, "prefill"), (3.0, E.REPLICA_READY, 1, "decode"),
                       (5.0, E.SCALE, 2, "prefill"), (5.0, E.PROVISION_START, 2, "prefill"),
                       (8.0, E.REPLICA_READY, 2, "prefill"), (26.0, E.DRAIN_START, 2, "prefill"),
                       (26.0, E.DRAIN_END, 2, "prefill")]
    else:
        assert got == [(0.0, E.REPLICA_READY, 0, "prefill"), (0.0, E.REPLICA_READY, 1, "decode"),
                       (1.0, E.SCALE, 2, "decode"), (1.0, E.PROVISION_START, 2, "decode"),
                       (4.0, E.REPLICA_READY, 2, "decode"), (5.0, E.SCALE, 3, "prefill"),
                       (5.0, E.PROVISION_START, 3, "prefill"), (8.0, E.REPLICA_READY, 3, "prefill"),
                       (22.0, E.DRAIN_START, 2, "decode"), (22.0, E.DRAIN_END, 2, "decode"),
                       (22.0, E.DRAIN_START, 3, "prefill"), (22.0, E.DRAIN_END, 3, "prefill")]
        # ready per pool after each row (replicas.png draws them, the experiment too)
        per_pool = ready_per_pool(t)
        assert list(per_pool.columns) == ["time_s", "prefill", "decode"]
        assert list(zip(per_pool["prefill"], per_pool["decode"])) == [
            (1, 0), (1, 1), (1, 1), (1, 1), (1, 2), (1, 2), (1, 2), (2, 2), (2, 1), (2, 1), (1, 1), (1, 1)]


def test_the_autoscaler_sees_each_pool_and_a_prefill_replica_holds_a_request_until_its_kv_crossed():
    from llmos_sim.serving.cluster import DisaggServiceHost

    seen = []
    load = DisaggServiceHost.load

    def spy(host):
        out = load(host)
        seen.append(out)
        return out

    reqs = [(0.0, 20, 4), (0.0, 20, 4)]  # both prefilled in one iteration (first tokens at 1)
    DisaggServiceHost.load = spy
    try:
        run_config(_cfg(reqs, steps=[]))
    finally:
        DisaggServiceHost.load = load
    # first tokens at 1; both cross the link together (fair share: 2·10240 B at 8192 B/s after
    # 0.5 s -> both land at 4.0). At 2 s the prefill replica still holds both, and so does the
    # decode replica (placed at the hand-off; their blocks taken, nothing waits there)
    at2 = next(x for x in seen if x.now_s == 2.0)
    pre, dec = at2.stages
    assert (pre.stage, pre.n_ready, pre.n_min, pre.outstanding) == ("prefill", 1, 1, 2)
    assert (dec.stage, dec.n_ready, dec.n_min, dec.outstanding, dec.waiting) == ("decode", 1, 1, 2, 0)
    assert at2.outstanding == 4 and at2.n_ready == 2
    at5 = next(x for x in seen if x.now_s == 5.0)  # landed: they left the prefill replica
    assert at5.stages[0].outstanding == 0 and at5.stages[1].outstanding == 2


def test_threshold_grows_the_pool_whose_queue_or_slo_crosses_its_threshold():
    def load(pre, dec, now=100.0, samples=50, asked=2):
        return ServiceLoad(now, asked, 0, 0, 0, 2, pre[0] + dec[0], 0, 1.0, samples,
                           (StageLoad("prefill", 1, 1, pre[0], pre[0], pre[1]),
                            StageLoad("decode", 1, 1, dec[0], dec[0], dec[1])))

    pol = ThresholdAutoscaler(max_replicas=4, up_queue_per_replica=4, up_slo_attainment=0.9, cooldown_s=0)
    assert pol.decide(load((5, 1.0), (9, 1.0))) == ScaleStep(+1, "decode queue 9/replica > 4", "decode")
    pol = ThresholdAutoscaler(max_replicas=4, up_queue_per_replica=4, up_slo_attainment=0.9, cooldown_s=0)
    assert pol.decide(load((0, 0.5), (0, 0.8))) == ScaleStep(+1, "prefill SLO attainment 0.5 < 0.9", "prefill")
    pol = ThresholdAutoscaler(max_replicas=2, up_queue_per_replica=4, cooldown_s=0)  # at its max: no step
    assert pol.decide(load((9, 1.0), (9, 1.0))) == ScaleStep()
    # down: a pool quiet (nothing waiting, its requests fit in one replica fewer) for down_idle_s
    pol = ThresholdAutoscaler(max_replicas=4, down_idle_s=20, cooldown_s=0)
    quiet = lambda now: ServiceLoad(now, 3, 0, 0, 0, 2, 0, 1, stages=(  # noqa: E731
        StageLoad("prefill", 1, 1, 0, 1), StageLoad("decode", 2, 1, 0, 0)))
    assert pol.decide(quiet(0.0)) == ScaleStep() and pol.decide(quiet(10.0)) == ScaleStep()
    assert pol.decide(quiet(20.0)) == ScaleStep(-1, "decode quiet for 20 s", "decode")


def test_bad_keys_of_a_disaggregated_service_are_named():
    cfg = _cfg([(0.0, 20, 3)])
    with open_dict(cfg):
        cfg.services.chat.topology.prefill.gpu = "H100"
    with pytest.raises(InputError, match="services.chat.topology.prefill.gpu"):
        run_config(cfg)
    cfg = _cfg([(0.0, 20, 3)])
    with open_dict(cfg):
        cfg.services.chat.topology.decode.replicas = 0
    with pytest.raises(InputError, match="services.chat.topology.decode.replicas"):
        run_config(cfg)
    for key, value in (("link.bw_bytes_s", "fast"), ("link.latency_s", -1.0), ("link.sharing", "lottery"),
                       ("decode.tp", 0)):
        cfg = _cfg([(0.0, 20, 3)])
        with open_dict(cfg):
            OmegaConf.update(cfg, f"services.chat.topology.{key}", value, force_add=True)
        with pytest.raises(InputError, match=f"'services.chat.topology.{key}'"):
            run_config(cfg)
    cfg = _cfg([(0.0, 20, 3)], steps=[], prefill=2)
    with open_dict(cfg):
        cfg.services.chat.autoscaler.max_replicas = 2
    with pytest.raises(InputError, match="services.chat.autoscaler.max_replicas"):
        run_config(cfg)
    with pytest.raises(ValueError, match="names its pool"):  # a step that does not say which pool
        run_config(_cfg([(0.0, 20, 3), (5.0, 20, 3)], steps=[(1.0, "up", None)]))



def test_the_placement_sets_the_link_bandwidth():
    from llmos_sim.hardware import build_cluster
    from llmos_sim.run import placement_link_bw

    a100 = build_cluster([{"nodes": 2, "devices_per_node": 2, "device": "A100"}])
    assert placement_link_bw(a100, 5e10, 1, (0,), (1,)) == NVLINK  # one node: the peer link
    assert placement_link_bw(a100, 5e10, 2, (0, 1), (2, 3)) == 2 * 5e10  # across: the network, per GPU pair
    assert placement_link_bw(a100, 5e10, 1, (0, 2), (1,)) == 5e10  # a replica spanning nodes: the network
    net = build_cluster([{"nodes": 2, "devices_per_node": 2, "device": "A100"}], link_bw_bytes_s=NET)
    assert placement_link_bw(net, 5e10, 1, (0,), (3,)) == NET  # the cluster's own network first
    odd = build_cluster([{"nodes": 1, "devices_per_node": 2, "device": {"name": "x", "flops": 1e13, "mem_bytes": 4e9}}])
    assert placement_link_bw(odd, 5e10, 1, (0,), (1,)) == 5e10  # a part with no known peer link
