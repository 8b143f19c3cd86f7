"""The kernel's assumptions about SimPy: pinned here, so a SimPy release that changes its event
heap fails one named test instead of silently reordering a simulation."""
import simpy
from simpy.core import NORMAL, URGENT

from llmos_sim.kernel import Instant, events_pending, nothing_due_at, outcome, push_at, queue_of


def test_simpy_is_major_version_4():
    assert simpy.__version__.split(".")[0] == "4"


def test_the_heap_is_time_priority_eid_event():
    env = simpy.Environment()
    t = env.timeout(1.5)
    u = env.event()
    u.succeed()  # scheduled now, NORMAL
    heap, eid = queue_of(env)
    assert heap is env._queue
    assert sorted(heap) == [(0.0, NORMAL, 1, u), (1.5, NORMAL, 0, t)]
    ev = push_at((heap, eid), 0.75, Instant(), URGENT)
    assert (0.75, URGENT, 2, ev) in heap
    assert NORMAL == 1 and URGENT == 0


def test_instants_fire_at_their_exact_time_in_priority_then_insertion_order():
    env = simpy.Environment()
    q = queue_of(env)
    seen = []
    t = 0.1 + 0.2  # not representable as now + (t - now) in general: pushed absolute
    push_at(q, t, Instant(lambda ev: seen.append(("b", env.now))), 2)
    push_at(q, t, Instant(lambda ev: seen.append(("a", env.now))), 1)
    push_at(q, t, Instant(lambda ev: seen.append(("c", env.now))), 2)
    env.timeout(t).callbacks.append(lambda ev: seen.append(("timeout", env.now)))  # NORMAL, inserted last
    env.run()
    assert seen == [("a", t), ("timeout", t), ("b", t), ("c", t)]


def test_a_process_can_wait_on_an_instant():
    env = simpy.Environment()
    q = queue_of(env)
    out = []

    def proc():
        yield push_at(q, 2.0, Instant(), NORMAL)
        out.append(env.now)

    env.process(proc())
    env.run()
    assert out == [2.0]


def test_heap_questions_and_outcomes():
    env = simpy.Environment()
    heap, _ = queue_of(env)
    assert nothing_due_at(heap, 0.0) and not events_pending(heap)
    env.timeout(1.0)
    assert nothing_due_at(heap, 0.5) and not nothing_due_at(heap, 1.0) and events_pending(heap)
    bad = env.event()
    bad.fail(RuntimeError("oom"))
    bad.defused = True
    env.run()
    ok, value = outcome(bad)
    assert ok is False and isinstance(value, RuntimeError) and str(value) == "oom"
    good = env.event()
    good.succeed(7)
    assert outcome(good) == (True, 7)
