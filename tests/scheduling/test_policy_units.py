"""Each policy on hand-built views: a view in, a decision out."""
from __future__ import annotations

import numpy as np
import pytest

from llmos_sim.policies.scheduling import (
    DRF, LAS, SRTF, DiscretizedLAS, EASYBackfill, Elastic, HeterogeneityAware, OnlinePredictor, Pack,
    PredictedSJF, Preempt, RandomPlacement, Resize, Spread, Start, TopologyAware,
)
from llmos_sim.policies.scheduling.preemptive import released_view
from llmos_sim.types import Cluster, Job
from llmos_sim.view import ClusterView, FinishedJob

from sched_helpers import FAST, SLOW, cluster, job, running


# -- SRTF / LAS / 2D-LAS -----------------------------------------------------------------------
def test_srtf_preempts_longer_running_job_and_starts_on_its_devices() -> None:
    cl = cluster(1, 2)
    long = running(job(0, 0, 100, gpus=2), (0, 1), start=0.0)
    short = job(1, 5, 3, gpus=2)
    d = SRTF().decide(ClusterView.build(cl, queue=[short], running={0: long}, now_s=5.0))
    assert d.preempts == (Preempt(0),)
    assert d.starts == (Start(1, (0, 1)),)


def test_srtf_keeps_shorter_running_job() -> None:
    cl = cluster(1, 2)
    r = running(job(0, 0, 10, gpus=2), (0, 1))
    d = SRTF().decide(ClusterView.build(cl, queue=[job(1, 5, 30, gpus=2)], running={0: r}, now_s=5.0))
    assert not d


def test_srtf_only_preempts_victims_whose_devices_are_used() -> None:
    cl = cluster(1, 3)
    a = running(job(0, 0, 100), (0,))  # longest: the one that must go
    b = running(job(1, 0, 90), (1,))
    c = running(job(2, 0, 80), (2,))
    d = SRTF().decide(ClusterView.build(cl, queue=[job(3, 1, 1)], running={0: a, 1: b, 2: c}, now_s=1.0))
    assert d.preempts == (Preempt(0),)
    assert d.starts == (Start(3, (0,)),)


def test_las_ranks_by_attained_gpu_seconds() -> None:
    cl = cluster(1, 1)
    r = running(job(0, 0, 100), (0,), start=0.0)  # attained 10 device-s at t=10
    d = LAS().decide(ClusterView.build(cl, queue=[job(1, 9, 50)], running={0: r}, now_s=10.0))
    assert d.preempts == (Preempt(0),) and d.starts == (Start(1, (0,)),)


def test_las_ranks_preempted_jobs_by_the_engines_record_of_their_service() -> None:
    cl = cluster(1, 1)
    las = LAS()
    r = running(job(0, 0, 100), (0,))
    d = las.decide(ClusterView.build(cl, queue=[job(1, 9, 50)], running={0: r}, now_s=10.0))
    assert d.preempts == (Preempt(0),)
    # the engine keeps job 0's record while it waits: 10 device-s attained, stopped at t=10
    waiting = running(job(0, 0, 100), (0,), attained=r.attained_at(10.0), done=r.done_at(10.0))
    waiting.stopped_s = 10.0
    # now job 1 has run 4 s: job 0 (10 device-s) still waits behind it
    r1 = running(job(1, 9, 50), (0,), start=10.0)
    d = las.decide(ClusterView.build(cl, queue=[job(0, 0, 100)], running={1: r1}, now_s=14.0,
                                     suspended={0: waiting}))
    assert not d
    d = las.decide(ClusterView.build(cl, queue=[job(0, 0, 100)], running={1: r1}, now_s=21.0,
                                     suspended={0: waiting}))
    assert d.preempts == (Preempt(1),) and d.starts == (Start(0, (0,)),)


def test_las_time_service_divides_by_width() -> None:
    cl = cluster(1, 4)
    wide = running(job(0, 0, 100, gpus=4), (0, 1, 2, 3))  # at t=4: 16 device-s, 4 s
    narrow = job(1, 1, 50)
    before = running(narrow, (0,), attained=10.0, done=10.0)  # the narrow job ran 10 s on 1 GPU before
    before.stopped_s = 1.0
    for service, preempts in (("gpu_s", True), ("time_s", False)):
        las = LAS(service=service)
        d = las.decide(ClusterView.build(cl, queue=[narrow], running={0: wide}, now_s=4.0, suspended={1: before}))
        assert bool(d.preempts) is preempts
        if preempts:
            assert d.starts == (Start(1, (0,)),)


def test_discretized_las_fifo_within_queue_and_preempts_lower_queue() -> None:
    cl = cluster(1, 1)
    pol = DiscretizedLAS(thresholds=[5.0])
    r = running(job(0, 0, 100), (0,))
    # at t=3 job 0 (3 device-s) is still in queue 0: FIFO, no preemption of the older job
    assert not pol.decide(ClusterView.build(cl, queue=[job(1, 1, 10)], running={0: r}, now_s=3.0))
    # at t=6 it has passed the threshold: queue 1, preempted by job 1 in queue 0
    d = pol.decide(ClusterView.build(cl, queue=[job(1, 1, 10)], running={0: r}, now_s=6.0))
    assert d.preempts == (Preempt(0),) and d.starts == (Start(1, (0,)),)


def test_discretized_las_promotes_starving_job() -> None:
    cl = cluster(1, 1)
    pol = DiscretizedLAS(thresholds=[5.0], promote_after_s=100.0)
    waiting = running(job(0, 0, 100), (0,), attained=50.0, done=50.0)  # queue 1, stopped at t=60
    waiting.stopped_s = 60.0
    r = running(job(1, 61, 1000), (0,), start=61.0)
    assert not pol.decide(ClusterView.build(cl, queue=[job(0, 0, 100)], running={1: r}, now_s=63.0,
                                            suspended={0: waiting}))
    d = pol.decide(ClusterView.build(cl, queue=[job(0, 0, 100)], running={1: r}, now_s=161.0,
                                     suspended={0: waiting}))
    assert d.preempts == (Preempt(1),)


def test_min_run_protects_young_segments() -> None:
    cl = cluster(1, 1)
    r = running(job(0, 0, 100), (0,), start=8.0)
    v = ClusterView.build(cl, queue=[job(1, 9, 1)], running={0: r}, now_s=10.0)
    assert not SRTF(min_run_s=5.0).decide(v)


def test_released_view_does_not_touch_original() -> None:
    cl = cluster(2, 2)
    r = running(job(0, 0, 10, gpus=2), (0, 1))
    v = ClusterView.build(cl, running={0: r})
    v2 = released_view(v, [(r, r.devices)])
    assert v.free.total == 2 and v2.free.total == 4
    assert v.free.ids(0) == [] and v2.free.ids(0) == [0, 1]


# -- DRF -----------------------------------------------------------------------------------------
def test_drf_serves_tenant_with_lowest_share() -> None:
    cl = cluster(1, 4)
    ra = running(job(0, 0, 100, gpus=2, tenant="a"), (0, 1))
    q = [job(1, 1, 10, tenant="a"), job(2, 2, 10, tenant="a"), job(3, 3, 10, tenant="b")]
    d = DRF().decide(ClusterView.build(cl, queue=q, running={0: ra}))
    assert [s.job_id for s in d.starts] == [3, 1]


def test_drf_weights() -> None:
    cl = cluster(1, 4)
    q = [job(i, i, 10, tenant="a") for i in range(4)] + [job(10 + i, 0, 10, tenant="b") for i in range(4)]
    d = DRF(weights={"a": 3.0}).decide(ClusterView.build(cl, queue=q))
    ids = [s.job_id for s in d.starts]
    assert sum(i < 10 for i in ids) == 3 and sum(i >= 10 for i in ids) == 1


# -- EASY -----------------------------------------------------------------------------------------
def test_easy_backfills_only_what_does_not_delay_the_head() -> None:
    cl = cluster(1, 4)
    r = running(job(0, 0, 10, gpus=2, duration_hint_s=10.0), (0, 1), start=0.0)
    head = job(1, 1, 5, gpus=4, duration_hint_s=5.0)
    short = job(2, 2, 5, gpus=2, duration_hint_s=5.0)
    long = job(3, 2, 50, gpus=2, duration_hint_s=50.0)
    d = EASYBackfill().decide(ClusterView.build(cl, queue=[head, long, short], running={0: r}, now_s=2.0))
    assert d.starts == (Start(2, (2, 3)),)
    sh = EASYBackfill().shadow(head, ClusterView.build(cl, running={0: r}, now_s=2.0))
    assert sh == (10.0, 0.0)


# -- QSSF -----------------------------------------------------------------------------------------
def test_online_predictor_falls_back_key_tenant_global_default() -> None:
    p = OnlinePredictor(default_s=99.0)
    assert p.predict_s(job(0, 0, 1, tenant="x")) == 99.0
    fin = [FinishedJob(job(0, 0, 4, tenant="x"), 0.0, 4.0, (0,)),
           FinishedJob(job(1, 0, 8, gpus=2, tenant="x"), 0.0, 8.0, (0, 1))]
    p.observe(fin)
    assert p.predict_s(job(5, 0, 1, tenant="x")) == 4.0          # (x, 1)
    assert p.predict_s(job(5, 0, 1, gpus=4, tenant="x")) == 6.0  # tenant x
    assert p.predict_s(job(5, 0, 1, tenant="y")) == 6.0          # global
    p.observe(fin)  # idempotent
    assert p.seen == 2 and p.total == [12.0, 2.0]


def test_qssf_orders_by_predicted_service() -> None:
    cl = cluster(1, 1)
    fin = [FinishedJob(job(0, 0, 2, tenant="x"), 0.0, 2.0, (0,)), FinishedJob(job(1, 0, 8, tenant="y"), 2.0, 10.0, (0,))]
    q = [job(2, 3, 1, tenant="y"), job(3, 4, 5, tenant="x")]
    d = PredictedSJF().decide(ClusterView.build(cl, queue=q, finished=fin, now_s=10.0))
    assert d.starts == (Start(3, (0,)),)


# -- heterogeneity-aware -------------------------------------------------------------------------
def _hetero() -> Cluster:
    return Cluster.from_groups([(1, 2, SLOW, 0, 0), (1, 2, FAST, 0, 0)])


def test_hetero_picks_fastest_free_type_and_honours_pins() -> None:
    cl = _hetero()
    pol = HeterogeneityAware()
    d = pol.decide(ClusterView.build(cl, queue=[job(0, 0, 10, gpus=2), job(1, 0, 10, gpus=2)]))
    assert d.starts == (Start(0, (2, 3)), Start(1, (0, 1)))
    d = pol.decide(ClusterView.build(cl, queue=[job(0, 0, 10, device_type="slow")]))
    assert d.starts == (Start(0, (0,)),)


def test_hetero_affinity_and_max_min_order() -> None:
    cl = _hetero()
    aff = {"b": {"slow": 0.25}}
    q = [Job(0, 0, 4, name="a-0"), Job(1, 0, 4, name="b-1")]
    d = HeterogeneityAware(affinity=aff, objective="max_min").decide(ClusterView.build(cl, queue=q, free=[0, 2]))
    assert d.starts == (Start(1, (2,)), Start(0, (0,)))
    d = HeterogeneityAware(affinity=aff, min_normalised=0.5).decide(ClusterView.build(cl, queue=q, free=[0, 2]))
    assert d.starts == (Start(0, (2,)),)  # b would run at 1/8 of its best on slow: it waits


# -- elastic -------------------------------------------------------------------------------------
def test_elastic_shrinks_to_admit() -> None:
    cl = cluster(1, 4)
    r = running(job(0, 0, 40, gpus=4, min_gpus=1), (0, 1, 2, 3))
    d = Elastic().decide(ClusterView.build(cl, queue=[job(1, 2, 5, gpus=2)], running={0: r}, now_s=2.0))
    assert d.resizes == (Resize(0, (0, 1)),)
    assert d.starts == (Start(1, (2, 3)),)


def test_elastic_does_not_shrink_below_min() -> None:
    cl = cluster(1, 4)
    r = running(job(0, 0, 40, gpus=4, min_gpus=3), (0, 1, 2, 3))
    assert not Elastic().decide(ClusterView.build(cl, queue=[job(1, 2, 5, gpus=2)], running={0: r}))


# -- placement -----------------------------------------------------------------------------------
def test_spread_round_robins_across_nodes() -> None:
    cl = cluster(3, 2)
    v = ClusterView.build(cl)
    assert Spread().place(job(0, 0, 1, gpus=4), 4, v) == (0, 1, 2, 4)
    assert Pack().place(job(0, 0, 1, gpus=2), 2, v) == (0, 1)


def test_random_placement_is_seeded() -> None:
    cl = cluster(4, 4)
    a, b = RandomPlacement(), RandomPlacement()
    a.set_rng(np.random.default_rng(7))
    b.set_rng(np.random.default_rng(7))
    v = ClusterView.build(cl)
    pa = [a.place(job(0, 0, 1, gpus=3), 3, v) for _ in range(5)]
    assert pa == [b.place(job(0, 0, 1, gpus=3), 3, v) for _ in range(5)]
    assert len(set(pa)) > 1 and all(len(set(p)) == 3 for p in pa)


def test_topology_prefers_one_node_then_one_switch() -> None:
    cl = cluster(4, 2, nodes_per_switch=2)  # switch 0: nodes 0,1 (devs 0-3); switch 1: nodes 2,3 (4-7)
    # free: node0 {1}, node1 {3}, node2 {4}, node3 {6, 7}
    v = ClusterView.build(cl, free=[1, 3, 4, 6, 7])
    topo = TopologyAware()
    assert topo.place(job(0, 0, 1, gpus=2), 2, v) == (6, 7)           # one node
    assert topo.place(job(0, 0, 1, gpus=3), 3, v) == (4, 6, 7)        # one switch
    assert topo.place(job(0, 0, 1, gpus=5), 5, v) == (1, 3, 4, 6, 7)  # spill
