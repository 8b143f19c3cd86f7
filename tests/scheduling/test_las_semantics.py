"""LAS and 2D-LAS semantics: progress between preemptions, demotion at the crossing, the order
within a queue, tie-breaks and the Gittins index (hand-computed schedules on 1 FLOP/s devices)."""
import pytest

from llmos_sim import events as E
from llmos_sim.policies.scheduling import FIFO
from llmos_sim.policies.scheduling.base import Preempt, Start
from llmos_sim.policies.scheduling.preemptive import LAS, DiscretizedLAS
from llmos_sim.view import ClusterView, FinishedJob
from sched_helpers import cluster, job, running, story


def _finish(log):
    return {s: t for t, k, s, _ in log.records if k == E.FINISH}


# -- a job always computes between two preemptions ---------------------------------------------
def test_las_finishes_when_the_restore_overhead_exceeds_the_round():
    """Three 100 s jobs on one device, 30 s rounds, 60 s restore after each preemption. When the
    restore counted as attained service and a restoring job could be preempted, every restore
    was cut short by the next round and no job ever finished."""
    jobs = [job(i, i, 100) for i in range(3)]
    seq, log = story(cluster(1, 1), LAS(round_s=30.0), jobs, preempt_overhead_s=60.0)
    assert _finish(log) == {2: 822.0, 0: 891.0, 1: 960.0}
    done = {}
    for t, k, s, d in log.records:  # every preemption follows compute since the job's last start
        if k == E.PREEMPT:
            assert d[1] > done.get(s, 0.0), (t, s)
            done[s] = d[1]
    assert len(done) == 3


@pytest.mark.parametrize("kw", [{"service_overhead": True}, {"preempt_in_overhead": True}])
def test_either_rule_alone_guarantees_progress_here(kw):
    jobs = [job(i, i, 100) for i in range(3)]
    _, log = story(cluster(1, 1), LAS(round_s=30.0, **kw), jobs, preempt_overhead_s=60.0)
    assert sorted(_finish(log)) == [0, 1, 2]


def test_without_both_rules_las_livelocks_until_the_horizon():
    """The old semantics, still selectable: restores count as service and can be preempted."""
    from llmos_sim.engine import Engine

    eng = Engine(cluster(1, 1), LAS(round_s=30.0, service_overhead=True, preempt_in_overhead=True),
                 preempt_overhead_s=60.0)
    log = eng.run([job(i, i, 100) for i in range(3)], until_s=3000.0)
    assert _finish(log) == {}
    assert sum(1 for r in log.records if r[1] == E.PREEMPT) > 90


def test_attained_service_counts_compute_only_by_default():
    las, held = LAS(), LAS(service_overhead=True)
    r = running(job(0, 0, 100), (0, 1), start=10.0)
    r.seg_overhead_s = 5.0
    v = ClusterView.build(cluster(1, 2), running={0: r}, now_s=20.0)
    assert las.served(r.job, r, v) == 10.0  # 5 s computing on 2 devices
    assert held.served(r.job, r, v) == 20.0  # 10 s held on 2 devices


# -- 2D-LAS: demotion at the crossing, running jobs ahead within a queue ------------------------
def _tiresias_jobs():
    return [job(0, 0, 20), job(1, 1, 100), job(2, 2, 100)]


def test_2dlas_demotes_at_the_crossing_and_keeps_running_jobs_ahead_in_a_queue():
    """Thresholds [30] device-s, 10 s rounds, one device. Job 1 starts at 20, crosses 30 at
    t=50 and is preempted by job 2 (queue 0). Job 2 crosses at 80: both are in queue 1 now and
    the running job 2 stays ahead, so it runs to the end (150) before job 1 resumes."""
    seq, log = story(cluster(1, 1), DiscretizedLAS(round_s=10.0, thresholds=[30.0]), _tiresias_jobs())
    assert seq == [(0.0, E.START, 0), (20.0, E.FINISH, 0), (20.0, E.START, 1), (50.0, E.PREEMPT, 1),
                   (50.0, E.START, 2), (150.0, E.FINISH, 2), (150.0, E.START, 1), (220.0, E.FINISH, 1)]


def test_2dlas_fifo_within_a_queue_lets_an_earlier_waiting_job_preempt():
    sched = DiscretizedLAS(round_s=10.0, thresholds=[30.0], running_first=False)
    seq, _ = story(cluster(1, 1), sched, _tiresias_jobs())
    assert [(t, k, s) for t, k, s in seq if k != E.FINISH][4:] == [
        (80.0, E.PREEMPT, 2), (80.0, E.START, 1), (150.0, E.START, 2)]


def test_2dlas_demotes_between_rounds_and_without_rounds():
    """The threshold (25 device-s) is crossed at t=45, between the 10 s rounds and with no
    rounds at all: the demotion happens at 45 either way."""
    for round_s in (10.0, None):
        seq, _ = story(cluster(1, 1), DiscretizedLAS(round_s=round_s, thresholds=[25.0]), _tiresias_jobs())
        assert (45.0, E.PREEMPT, 1) in seq and (45.0, E.START, 2) in seq, round_s
        assert seq[-1] == (220.0, E.FINISH, 1)


def test_2dlas_wakes_at_promotion_time():
    sched = DiscretizedLAS(round_s=None, thresholds=[10.0], promote_after_s=15.0, running_first=False)
    seq, _ = story(cluster(1, 1), sched, [job(0, 0, 100), job(1, 1, 100)])
    # job 0 demoted at 10 -> job 1 runs 10..20 (demoted at 20, both in queue 1: job 0 is older);
    # job 0 then runs 20.., job 1 waits from 20 and is promoted at 35 -> preempts job 0
    assert [(t, k, s) for t, k, s in seq][:6] == [
        (0.0, E.START, 0), (10.0, E.PREEMPT, 0), (10.0, E.START, 1), (20.0, E.PREEMPT, 1),
        (20.0, E.START, 0), (35.0, E.PREEMPT, 0)]


# -- tie-breaks and the Gittins index ------------------------------------------------------------
def _two_pass(tie_break):
    """Pass 1 (t=20): B (arrived 5, 12 device-s: queue 1) runs; A (arrived 0, 5 device-s:
    queue 0) waits and preempts it. Pass 2 (t=30): A has 15 device-s (queue 1, entering it now)
    and runs; B waits in queue 1 since pass 1."""
    cl = cluster(1, 1)
    sched = DiscretizedLAS(thresholds=[10.0], running_first=False, tie_break=tie_break)
    a, b = job(0, 0, 100), job(1, 5, 100)
    rb = running(b, (0,), start=8.0, attained=0.0)
    sa = running(a, (0,), attained=5.0, done=5.0)
    sa.stopped_s = 5.0
    d1 = sched.decide(ClusterView.build(cl, queue=[a], running={1: rb}, now_s=20.0, suspended={0: sa}))
    assert d1.preempts == (Preempt(1),)
    ra = running(a, (0,), start=20.0, attained=5.0, done=5.0)
    sb = running(b, (0,), attained=12.0, done=12.0)
    sb.stopped_s = 20.0
    return sched.decide(ClusterView.build(cl, queue=[b], running={0: ra}, now_s=30.0, suspended={1: sb}))


def test_2dlas_tie_break_by_arrival_or_by_previous_rank():
    assert not _two_pass("arrival")  # A arrived first: it keeps running
    d = _two_pass("previous_rank")  # B was in queue 1 first: it goes ahead
    assert d.preempts == (Preempt(0),) and d.starts == (Start(1, (0,)),)


def test_gittins_index_from_the_finished_jobs_service():
    """Finished services 10, 20, 30, 100 device-s; threshold 50. At a=15 with Δ=35:
    P(S-a<=Δ | S>a) = 2/3, E[min(S-a, Δ) | S>a] = (5+15+35)/3, index = 2/55."""
    sched = DiscretizedLAS(thresholds=[50.0], order="gittins")
    fin = [FinishedJob(job(i, 0, s), 0.0, float(s), (0,), float(s)) for i, s in enumerate([10, 20, 30, 100])]
    v = ClusterView.build(cluster(1, 1), finished=fin)
    assert sched.gittins_index(15.0, 0, v) == pytest.approx(2 / 55)
    assert sched.gittins_index(0.0, 0, v) == pytest.approx(3 / 110)
    assert sched.gittins_index(5.0, 0, v) == pytest.approx(3 / 90)
    assert sched.gittins_index(60.0, 1, v) == pytest.approx(1 / 40)  # last queue: Δ unbounded
    assert sched.gittins_index(100.0, 1, v) == 0.0  # beyond every finished job
    # the waiting job at 15 device-s has the higher index: it preempts the running one at 5
    r = running(job(0, 0, 100), (0,), start=0.0)
    s = running(job(1, 1, 100), (0,), attained=15.0, done=15.0)
    s.stopped_s = 15.0
    view = ClusterView.build(cluster(1, 1), queue=[job(1, 1, 100)], running={0: r}, now_s=5.0,
                             finished=fin, suspended={1: s})
    sched_rf = DiscretizedLAS(thresholds=[50.0], order="gittins", running_first=False)
    assert sched_rf.decide(view).preempts == (Preempt(0),)
    assert not DiscretizedLAS(thresholds=[50.0], running_first=False).decide(view)  # FIFO: job 0 first


def test_2dlas_options_are_checked():
    with pytest.raises(ValueError, match="order"):
        DiscretizedLAS(order="random")
    with pytest.raises(ValueError, match="tie_break"):
        DiscretizedLAS(tie_break="coin")


# -- consolidated placement (Tiresias) -------------------------------------------------------
def test_consolidated_placement_keeps_a_job_on_one_node_or_whole_free_nodes():
    from llmos_sim.policies.scheduling import Consolidated, Pack

    cl = cluster(3, 4)  # nodes 0..2, devices 0-3, 4-7, 8-11
    c, pack = Consolidated(), Pack()
    v = ClusterView.build(cl, free=[2, 3, 6, 7])  # two free on node 0, two on node 1
    assert c.place(job(0, 0, 1, gpus=3), 3, v) is None  # fits a node, but no node has 3 free
    assert pack.place(job(0, 0, 1, gpus=3), 3, v) == (2, 3, 6)  # Pack spills instead
    assert c.place(job(0, 0, 1, gpus=2), 2, v) == (2, 3)  # best fit: one node
    v = ClusterView.build(cl, free=[3, 4, 5, 6, 7, 8, 9, 10, 11])  # nodes 1, 2 whole; node 0: one
    assert c.place(job(0, 0, 1, gpus=6), 6, v) == (4, 5, 6, 7, 8, 9)  # two whole nodes
    assert c.place(job(0, 0, 1, gpus=9), 9, v) is None  # only 8 devices on whole nodes
    assert c.place(job(0, 0, 1, gpus=1), 1, v) == (3,)  # best fit: the node with one free
    seq, _ = story(cl, FIFO(Consolidated()), [job(0, 0, 10, gpus=3), job(1, 0, 10, gpus=2),
                                               job(2, 1, 10, gpus=8)])
    assert seq == [(0.0, E.START, 0), (0.0, E.START, 1), (10.0, E.FINISH, 0), (10.0, E.FINISH, 1),
                   (10.0, E.START, 2), (20.0, E.FINISH, 2)]
