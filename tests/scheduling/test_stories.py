"""Short runs through the engine with exact, hand-computed START/FINISH/PREEMPT sequences.

Devices run at 1 FLOP/s (``sched_helpers.UNIT``) so a job's work is its device-seconds and
every time below is worked out by hand in the comment above the expectation.
"""
from __future__ import annotations

import pytest

from llmos_sim import events as E
from llmos_sim.backends.simpy_cluster import CrossNodeSlowdown, SimPyCluster
from llmos_sim.backends.simpy_cluster.cost import DeviceAffinity, RingAllReduce
from llmos_sim.policies.scheduling import (
    DRF, FIFO, LAS, SRTF, DiscretizedLAS, EASYBackfill, Elastic, HeterogeneityAware, Pack, PredictedSJF, Spread,
    TopologyAware,
)
from llmos_sim.types import Cluster, Job

from sched_helpers import FAST, SLOW, cluster, job, starts, story

S, F, P, R = E.START, E.FINISH, E.PREEMPT, E.RESIZE


def test_srtf_preempts_with_checkpoint_overhead() -> None:
    # job0 (10 s) runs from 0; job1 (3 s) arrives at 2 with less remaining (3 < 8): preempt.
    # job1 runs 2..5; job0 resumes at 5 after 1 s restore, 8 s left: finishes at 14.
    seq, _ = story(cluster(), SRTF(round_s=None), [job(0, 0, 10), job(1, 2, 3)], preempt_overhead_s=1.0)
    assert seq == [(0, S, 0), (2, P, 0), (2, S, 1), (5, F, 1), (5, S, 0), (14, F, 0)]


def test_las_time_shares_by_quantum() -> None:
    # quantum 2 s. t=1: job1 (0 attained) preempts job0 (1). t=2: tie at 1 → older job0.
    # t=4: job0 has 3, job1 1 → job1. t=6: job1 done (1+2=3 s); job0 resumes, 2 s left → 8.
    seq, _ = story(cluster(), LAS(round_s=2.0), [job(0, 0, 5), job(1, 1, 3)])
    assert seq == [(0, S, 0), (1, P, 0), (1, S, 1), (2, P, 1), (2, S, 0), (4, P, 0), (4, S, 1), (6, F, 1),
                   (6, S, 0), (8, F, 0)]


def test_discretized_las_demotes_after_threshold() -> None:
    # threshold 2 device-s, passes every 1 s. t=1: both in queue 0, FIFO keeps job0.
    # t=2: job0 reaches 2 → queue 1; job1 (queue 0) preempts it, runs 2..4; job0 4..6.
    seq, _ = story(cluster(), DiscretizedLAS(round_s=1.0, thresholds=[2.0]), [job(0, 0, 4), job(1, 1, 2)])
    assert seq == [(0, S, 0), (2, P, 0), (2, S, 1), (4, F, 1), (4, S, 0), (6, F, 0)]


def test_cross_node_slowdown_changes_finish_time_by_placement() -> None:
    # a 2-GPU job of 10 s: packed on one node 10 s; spread over 2 nodes 1.5x slower = 15 s.
    cl = cluster(2, 2)
    backend = lambda: SimPyCluster(CrossNodeSlowdown(0.5))  # noqa: E731
    seq, log = story(cl, FIFO(Pack()), [job(0, 0, 10, gpus=2)], backend=backend())
    assert seq == [(0, S, 0), (10, F, 0)] and starts(log)[0] == (0, 1)
    seq, log = story(cl, FIFO(Spread()), [job(0, 0, 10, gpus=2)], backend=backend())
    assert seq == [(0, S, 0), (15, F, 0)] and starts(log)[0] == (0, 2)


def test_ring_allreduce_topology_aware_beats_spread() -> None:
    # 2 switches x 2 nodes x 2 GPUs; link 1 GB/s, 2x oversubscribed across switches; 1 GB of
    # gradients, 1 s steps. 4 GPUs: one switch → comm 2·3/4·1e9/1e9 = 1.5 s → factor 2.5;
    # across switches (Spread: one GPU on each node) bandwidth halves → 3 s → factor 4.
    cl = cluster(4, 2, nodes_per_switch=2, link_bw_bytes_s=1e9)
    cost = RingAllReduce(grad_bytes=1e9, step_s=1.0, intra_node_bw_bytes_s=1e10, cross_switch_oversubscription=2.0)
    seq, log = story(cl, FIFO(TopologyAware()), [job(0, 0, 10, gpus=4)], backend=SimPyCluster(cost))
    assert seq == [(0, S, 0), (25, F, 0)] and starts(log)[0] == (0, 1, 2, 3)
    seq, log = story(cl, FIFO(Spread()), [job(0, 0, 10, gpus=4)], backend=SimPyCluster(cost))
    assert seq == [(0, S, 0), (40, F, 0)] and starts(log)[0] == (0, 2, 4, 6)


def test_easy_backfill_respects_reservation() -> None:
    # 4 GPUs. job0 (2 GPUs, 10 s) runs; head job1 (4 GPUs) waits for the shadow time 10.
    # job2 (2 GPUs, 5 s) ends at 7 <= 10: backfilled at 2. job3 (2 GPUs, 20 s) would delay
    # the head: waits until after job1 (10..15) → 15..35.
    jobs = [job(0, 0, 10, gpus=2, duration_hint_s=10.0), job(1, 1, 5, gpus=4, duration_hint_s=5.0),
            job(2, 2, 5, gpus=2, duration_hint_s=5.0), job(3, 3, 20, gpus=2, duration_hint_s=20.0)]
    seq, _ = story(cluster(1, 4), EASYBackfill(), jobs)
    assert seq == [(0, S, 0), (2, S, 2), (7, F, 2), (10, F, 0), (10, S, 1), (15, F, 1), (15, S, 3), (35, F, 3)]


def test_drf_gives_the_freed_device_to_the_other_tenant() -> None:
    # 2 GPUs. tenant a: a0 (10 s), a1 (20 s), a2 (10 s) at 0; tenant b: b0 (10 s) at 1.
    # t=10: a holds 1 of 2 GPUs (share .5), b 0 → b0 starts (FIFO would start a2).
    jobs = [job(0, 0, 10, tenant="a"), job(1, 0, 20, tenant="a"), job(2, 0, 10, tenant="a"), job(3, 1, 10, tenant="b")]
    seq, _ = story(cluster(1, 2), DRF(), jobs)
    assert seq == [(0, S, 0), (0, S, 1), (10, F, 0), (10, S, 3), (20, F, 1), (20, F, 3), (20, S, 2), (30, F, 2)]


def test_qssf_learns_from_finished_jobs() -> None:
    # 1 GPU. job0 (tenant x, 2 s) and job1 (y, 8 s) teach x → 2 s, y → 8 s. Then job2 (y,
    # truly 1 s) and job3 (x, truly 5 s) wait; at 10 the predictor runs x's job first.
    jobs = [job(0, 0, 2, tenant="x"), job(1, 1, 8, tenant="y"), job(2, 3, 1, tenant="y"), job(3, 4, 5, tenant="x")]
    seq, _ = story(cluster(), PredictedSJF(), jobs)
    assert seq == [(0, S, 0), (2, F, 0), (2, S, 1), (10, F, 1), (10, S, 3), (15, F, 3), (15, S, 2), (16, F, 2)]


def test_heterogeneity_aware_with_affinity_cost() -> None:
    # node0: 1 slow GPU (1 FLOP/s), node1: 1 fast (2 FLOP/s). b runs at 0.25 on slow.
    # max_min: b (8x sensitive) takes fast: 4/2 = 2 s; a takes slow: 4 s.
    # throughput (arrival order): a takes fast (2 s), b slow at 0.25 → 16 s.
    cl = Cluster.from_groups([(1, 1, SLOW, 0, 0), (1, 1, FAST, 0, 0)])
    aff = {"b": {"slow": 0.25}}
    jobs = [Job(0, 0, 4, name="a-0"), Job(1, 0, 4, name="b-1")]
    seq, _ = story(cl, HeterogeneityAware(affinity=aff, objective="max_min"), jobs,
                   backend=SimPyCluster(DeviceAffinity(aff)))
    assert seq == [(0, S, 1), (0, S, 0), (2, F, 1), (4, F, 0)]
    seq, _ = story(cl, HeterogeneityAware(affinity=aff), jobs, backend=SimPyCluster(DeviceAffinity(aff)))
    assert seq == [(0, S, 0), (0, S, 1), (2, F, 0), (16, F, 1)]
    # unaware FIFO + pack puts a on the slow node first: a 4 s, b on fast 2 s
    seq, _ = story(cl, FIFO(), jobs, backend=SimPyCluster(DeviceAffinity(aff)))
    assert seq == [(0, S, 0), (0, S, 1), (2, F, 1), (4, F, 0)]


def test_elastic_shrinks_to_admit_then_grows_back() -> None:
    # 4 GPUs. job0 elastic (4 GPUs, min 1, 40 device-s) starts on 4. At 2 (8 done) rigid job1
    # (2 GPUs, 5 s) arrives: job0 shrinks to 2, job1 runs 2..7. At 7 job0 (8+10=18 done)
    # grows back to 4: 22 left / 4 = 5.5 s → 12.5.
    jobs = [job(0, 0, 10, gpus=4, min_gpus=1), job(1, 2, 5, gpus=2)]
    seq, _ = story(cluster(1, 4), Elastic(), jobs, kinds=(S, F, P, R))
    assert seq == [(0, S, 0), (2, R, 0), (2, S, 1), (7, F, 1), (7, R, 0), (12.5, F, 0)]


def test_pipeline_phases_preprocess_and_output_hold_devices() -> None:
    # job0: 2 s preprocess + 5 s compute + 1 s output → devices held 0..8; job1 then 8..13.
    jobs = [job(0, 0, 5, preprocess_s=2.0, output_s=1.0), job(1, 0, 5)]
    seq, _ = story(cluster(), FIFO(), jobs)
    assert seq == [(0, S, 0), (8, F, 0), (8, S, 1), (13, F, 1)]


def test_preemptive_policies_never_reject() -> None:
    # a busier run: every decision the preemptive base makes must be applicable
    jobs = [job(i, i * 0.7, 1 + (i * 37 % 11), gpus=1 + i % 3) for i in range(60)]
    for pol in (SRTF(round_s=None), LAS(round_s=3.0), DiscretizedLAS(round_s=3.0, thresholds=[4.0, 16.0])):
        seq, log = story(cluster(2, 2), pol, jobs, kinds=(S, F, P, E.REJECT), preempt_overhead_s=0.5)
        assert not [e for e in seq if e[1] == E.REJECT]
        assert sum(1 for e in seq if e[1] == F) == 60
