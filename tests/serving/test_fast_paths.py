"""The serving loop's fast paths against their plain counterparts: batch block growth in the
paged pool and the KV manager, closed-form decode spans in the cost models, and whole runs
with spans (closed form, several iterations per SimPy step) against one iteration at a time."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import simpy

from llmos_sim import events as E
from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.chunked import ChunkedPrefill
from llmos_sim.policies.batching.continuous import ContinuousBatching
from llmos_sim.policies.batching.orca import OrcaBatching
from llmos_sim.policies.batching.static import StaticBatching
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.policies.memory.paged import PagedPool
from llmos_sim.serving import simulate
from llmos_sim.serving.cost import LinearCost, MeasuredCost, RooflineCost, span_of_lines
from llmos_sim.serving.kv import KVCacheManager
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.specs import H100, LLAMA31_8B
from llmos_sim.serving.view import ReplicaView, SeqTable, WaitingSeq
from .helpers import make_cfg, req_events

BB = 16 * 512  # tiny model: one 16-token block


def test_append_blocks_many_is_append_blocks_in_turn():
    rng = random.Random(0)
    a, b = PagedPool(200 * BB, BB), PagedPool(200 * BB, BB)
    xs = [a.allocate_blocks(rng.randint(1, 5), i) for i in range(8)]
    ys = [b.allocate_blocks(len(x.blocks), i) for i, x in enumerate(xs)]
    for _ in range(10):
        counts = [rng.choice([0, 1, 1, 2, 3]) for _ in xs]
        xs = a.append_blocks_many(xs, counts)
        ys = [b.append_blocks(y, n) for y, n in zip(ys, counts)]
        assert xs == ys and a.stats() == b.stats() and a.live() == b.live()
    free = a.n_free_blocks
    assert a.append_blocks_many(xs, [free] + [1] * (len(xs) - 1)) is None  # all or nothing
    assert a.n_free_blocks == free and a.live() == b.live() and a.stats().n_failures == 1
    with pytest.raises(ValueError):
        a.append_blocks_many([xs[0], xs[0]], [1, 1])
    with pytest.raises(ValueError):
        a.append_blocks_many([ys[0]], [1])  # not this pool's object
    with pytest.raises(ValueError):
        a.append_blocks_many([xs[0]], [-1])


@pytest.mark.parametrize("prefix_caching", [False, True])
def test_grow_many_is_grow_in_turn(prefix_caching):
    def kv():
        k = KVCacheManager(PagedPool(64 * BB, BB), 512, 16, prefix_caching=prefix_caching)
        for s in range(4):
            k.grow(s, 2)
        k.release(3, 32)  # a cached prefix, taken back below
        k.take_cached(3, 32)
        return k
    a, b = kv(), kv()
    assert a.grow_many([0, 1, 2, 3], [1, 3, 2, 4]) == 4
    for s, n in zip([0, 1, 2, 3], [1, 3, 2, 4]):
        assert b.grow(s, n)
    for x, y in ((a, b),):
        assert (x.free_blocks, x.used_bytes, x._pops, x.pool.stats()) == (y.free_blocks, y.used_bytes, y._pops, y.pool.stats())
        assert [x.held_blocks(s) for s in range(4)] == [y.held_blocks(s) for s in range(4)]
    assert a.grow_many([0, 1], [a.free_blocks, 1]) == 1  # stops at the first refusal, like grow one by one
    assert a.free_blocks == 0 and a.held_blocks(1) == 5


def _lines_reference(lines, k, start, limit):
    d = np.max([a + b * np.arange(k, dtype=float) for a, b in lines], axis=0)
    n = k
    if start + d.sum() - d[-1] >= limit:
        n = max(1, int(np.searchsorted(start + (np.cumsum(d) - d), limit, side="left")))
    return n, float(d[:n].sum())


def test_span_of_lines_matches_iteration_by_iteration():
    rng = random.Random(1)
    for _ in range(3000):
        lines = [(rng.uniform(1e-3, 0.05), rng.choice([0.0, rng.uniform(0, 1e-4), rng.uniform(0, 1e-3)]))
                 for _ in range(rng.choice([1, 2]))]
        k, start = rng.randint(2, 300), rng.uniform(0, 3000)
        d_last = max(a + b * (k - 1) for a, b in lines)
        limit = start + rng.uniform(0.0, 1.2) * k * d_last + 1e-9
        n, total = span_of_lines(lines, k, start, limit)
        n_ref, total_ref = _lines_reference(lines, k, start, limit)
        assert n == n_ref and total == pytest.approx(total_ref, rel=1e-12)


@pytest.mark.parametrize("cost", [RooflineCost(LLAMA31_8B, H100), RooflineCost(LLAMA31_8B, H100, mfu=0.05),
                                  LinearCost(0.5, 0.0, 0.01), MeasuredCost([1, 64], [0.01, 0.02], 1e-6)])
def test_decode_span_agrees_with_decode_span_s(cost):
    for n, ctx, k, limit in [(8, 8000, 50, 1e9), (8, 8000, 50, 100.3), (200, 400_000, 300, 101.0), (1, 10, 2, 1e9)]:
        d = cost.decode_span_s(n, ctx, k, n)
        m, total = cost.decode_span(n, ctx, k, n, 100.0, limit)
        m_ref = max(1, int(np.searchsorted(100.0 + np.cumsum(d) - d, limit, side="left")))
        assert m == m_ref and total == pytest.approx(float(d[:m].sum()), rel=1e-12)


SYN = {"_target_": "llmos_sim.workload.requests.SyntheticRequests", "n": 60, "rate_per_s": 40.0,
       "prompt_min": 4, "prompt_max": 400, "output_min": 1, "output_max": 200}
ROOF = {"_target_": "llmos_sim.serving.cost.RooflineCost", "_partial_": True, "mfu": 0.5, "mbu": 0.7, "overhead_s": 0.003}
PAGED = {"_target_": "llmos_sim.policies.memory.paged.PagedPool", "_partial_": True}


def _cases(n):
    rng = random.Random(7)
    for seed in range(n):
        yield dict(batching=rng.choice(["static", "orca", "continuous", "chunked_prefill"]),
                   preemption=rng.choice(["recompute", "swap"]), memory=rng.choice([None, PAGED]),
                   blocks=rng.choice([40, 120, 600]), replicas=rng.choice([1, 2]),
                   prefix_caching=rng.random() < 0.3, seed=seed)


@pytest.mark.parametrize("case", list(_cases(12)), ids=lambda c: f"{c['batching']}-{c['seed']}")
def test_fast_paths_change_no_request_event(case):
    """Spans (closed-form durations, many iterations per SimPy step), spans logged iteration by
    iteration (durations one by one) and no fast-forward at all give the same request events."""
    def go(**serving):
        over = {} if case["batching"] == "static" else {"preemption": case["preemption"]}
        cfg = make_cfg(workload=SYN, batching=case["batching"], batching_over=over, cost=ROOF, model="llama31_8b",
                       gpu="rtx4090", memory=case["memory"], router="least_outstanding",
                       serving={"num_kv_blocks": case["blocks"], "replicas": case["replicas"],
                                "prefix_caching": case["prefix_caching"], **serving})
        return simulate(cfg, seed=case["seed"])
    runs = [go(), go(per_iteration_records=True), go(fast_forward=False)]
    evs = [req_events(r.log) for r in runs]
    for e in evs[1:]:
        assert [(k, s) for _, k, s in e] == [(k, s) for _, k, s in evs[0]]
        assert np.allclose([t for t, _, _ in e], [t for t, _, _ in evs[0]], rtol=1e-9, atol=1e-9)
    assert len({r.summary["n_iterations"] for r in runs}) == 1
    for r in runs:  # typed columns whether a run logged spans, iterations or both
        assert not (r.tables["batches"].dtypes == object).any(), r.tables["batches"].dtypes


def test_finishes_and_failures_happen_at_simpy_time(monkeypatch):
    """A replica may run iterations ahead of SimPy's clock, but with ``sync_finishes`` (as on the
    shared cluster, where a service host reacts to them at once) never emits a finish or a
    failure ahead of it. A standalone system, where nothing reacts, turns it off: the same log."""
    from llmos_sim import events as E
    from llmos_sim.serving import system

    seen = []

    class TapLog(E.EventLog):
        env = None

        def emit(self, time_s, kind, subject, data=()):
            if kind in (E.REQ_FINISH, E.REQ_FAIL):
                seen.append((time_s, TapLog.env.now))
            super().emit(time_s, kind, subject, data)

    init = system.ServingSystem.__init__

    def patched(self, requests, factory, router, n, log=None, progress=False, env=None, own_cuts=True):

        def make(i, env, log_, next_arrival):
            TapLog.env = env
            return factory(i, env, log_, next_arrival)
        init(self, requests, make, router, n, TapLog(), progress, env, own_cuts)
        for rep in self.replicas:
            rep.sync_finishes = True

    cfg = make_cfg(workload=dict(SYN, n=120), batching="continuous", cost=ROOF, model="llama31_8b", gpu="rtx4090",
                   serving={"num_kv_blocks": 200, "replicas": 2}, router="least_outstanding")
    free = simulate(cfg, seed=0)
    monkeypatch.setattr(system.ServingSystem, "__init__", patched)
    r = simulate(cfg, seed=0)
    assert r.summary["n_finished"] + r.summary["n_failed"] == 120 == len(seen)
    assert all(t == now for t, now in seen)
    assert r.log.records == free.log.records


@pytest.mark.parametrize("check", [True, False])
def test_defer_blocks_many_is_append_blocks_in_turn(check):
    """Deferred growth takes the same blocks with the same counters; the objects catch up when
    looked at (settle, live, free, resize), so freeing returns every block. Unchecked (the KV
    cache's call) and with one block each (its common case) alike."""
    rng = random.Random(1)
    a, b = PagedPool(300 * BB, BB), PagedPool(300 * BB, BB)
    xs = [a.allocate_blocks(rng.randint(1, 5), i, rng.randint(1, BB)) for i in range(8)]
    ys = [b.allocate_blocks(len(x.blocks), i, x.requested) for i, x in enumerate(xs)]
    for j in range(10):
        counts = [1] * len(xs) if j % 3 == 0 else [rng.choice([0, 1, 1, 2, 3]) for _ in xs]
        assert a.defer_blocks_many(xs, counts, check)
        ys = [b.append_blocks(y, n) for y, n in zip(ys, counts)]
        assert a.stats() == b.stats() and a.n_free_blocks == b.n_free_blocks
    assert [a.settle(x) for x in xs[:3]] == ys[:3]
    assert a.live() == b.live() and a.stats() == b.stats()
    free = a.n_free_blocks
    xs = a.live()
    assert not a.defer_blocks_many(xs, [free + 1] + [0] * (len(xs) - 1))  # all or nothing
    assert a.n_free_blocks == free and a.stats().n_failures == 1
    assert a.defer_blocks_many(xs[:1], [2]) and a.resize(xs[0], 0).blocks == (ys[0].blocks[0],)
    for x in a.live():
        a.free(x)
    assert a.n_free_blocks == a.n_blocks and a.stats().allocated_bytes == 0 and a.stats().requested_bytes == 0
    with pytest.raises(ValueError):
        a.defer_blocks_many([ys[0]], [1])  # not this pool's object


def test_blocks_taken_back_from_the_free_queue_move_the_later_ones_up():
    """vLLM's free queue on a hand-built case (16-token blocks, 20 blocks): A (4 blocks) and
    B (3) are preempted in turn, their full blocks cached; A is admitted again taking its 4
    blocks back from the middle of the queue, which moves B's blocks 4 places up. 14 blocks
    popped after that reach into B's: its tail block (queued first) is evicted, its two
    leading blocks are still hits. Without the move, the queue would look 4 blocks longer
    and all 3 of B's blocks would look alive."""
    k = KVCacheManager(PagedPool(20 * BB, BB), 512, 16, prefix_caching=True)
    assert k.grow("A", 4) and k.grow("B", 3) and k.grow("C", 13)  # the 20 initial positions popped
    assert k.release("A", 64) == 4 and k.release("B", 48) == 3  # A: positions 20-23, B: 24-26
    k.check()
    assert k.cached_tokens("A", 65) == 64 and k.cached_tokens("B", 49) == 48
    k.take_cached("A", 64)
    assert k.grow("A", 4)  # A's own blocks: nothing popped
    k.check()
    assert (k._pops, k._pushes, k.free_blocks) == (20, 23, 3)  # B now at 20-22
    assert k.cached_tokens("B", 49) == 48
    k.release("C", 0)  # 13 uncached blocks queued behind B: positions 23-35
    assert k.grow("D", 14)  # pops 20-33: B's 3 blocks and 11 of C's
    assert k.cached_tokens("B", 49) == 0
    k.check()


def test_taking_back_blocks_evicts_in_vllms_order():
    """Two victims, the later one partly evicted: A (3 full blocks) queued before B (2 full
    blocks and a partial tail). A takes its 2 leading blocks back (its tail stays queued),
    which moves B up 2 places; 3 pops after that take A's tail, B's tail and B's second
    block: B keeps its leading block (16 tokens)."""
    k = KVCacheManager(PagedPool(8 * BB, BB), 512, 16, prefix_caching=True)
    assert k.grow("A", 3) and k.grow("B", 3) and k.grow("C", 2)
    k.release("A", 48)  # positions 8-10
    k.release("B", 40)  # positions 11-13: its tail block (not full) at 11, then 12, 13
    k.take_cached("A", 32)  # A's two leading blocks (positions 9, 10) leave; A's tail (8) stays
    assert k.grow("A", 2)
    assert k.cached_tokens("B", 41) == 32  # B at 9-11 now
    assert k.grow("D", 3)  # pops 8 (A's tail), 9 (B's tail), 10 (B's second block)
    assert k.cached_tokens("B", 41) == 16
    k.check()


def test_a_refused_grow_pops_nothing_from_the_free_queue():
    """A fragmenting pool can refuse a growth while enough blocks are free in total: the free
    queue then loses nothing (its length stays the free count), and the sequence's blocks
    taken back from the cache still count as taken back when a later growth succeeds."""
    k = KVCacheManager(FirstFitPool(10 * BB), 512, 16, prefix_caching=True)
    assert k.grow("A", 3) and k.grow("B", 2) and k.grow("C", 3) and k.grow("D", 2)
    k.release("A", 48)
    k.release("C", 48)  # 6 blocks free, in two extents of 3
    k.check()
    assert k.unheld_blocks == 6 and k.free_blocks == 3 and not k.grow("E", 4)  # no extent of 4
    k.check()
    assert (k._pushes, k._pops, k.unheld_blocks) == (16, 10, 6)
    k.take_cached("A", 32)
    assert not k.grow("A", 5)  # refused: A's take-back is still pending
    assert k._hit == {"A": 2}
    assert k.grow("A", 3)  # its own 2 cached blocks and 1 popped
    k.check()
    assert (k._pushes, k._pops, k.unheld_blocks) == (14, 11, 3)


def _victim_behind_growth():
    """A 30-block cache (16-token blocks): R1 and R2 (8 full blocks each) run and cross into
    a new block this iteration; V (4 full blocks cached, 65 tokens known) was preempted and
    its blocks queued first (tail first: positions 30-33), X's 10 uncached blocks behind them."""
    k = KVCacheManager(PagedPool(30 * BB, BB), 512, 16, prefix_caching=True)
    assert k.grow("R1", 8) and k.grow("R2", 8) and k.grow("V", 4) and k.grow("X", 10)
    k.release("V", 64)
    k.release("X", 0)
    rows = [("R1", 100, 200, 128, 29, 8, 0, 0, 200, 0.0, False), ("R2", 100, 200, 128, 29, 8, 1, 0, 200, 0.0, False)]
    v = WaitingSeq("V", 60, 100, 0.5, generated=5, computed=k.cached_tokens("V", 65), started=True)
    return k, rows, v


def test_a_returning_victim_finds_its_hits_after_the_running_growth():
    """vLLM's scheduler allocates the running requests' new blocks (here 2, from the free
    queue's head: V's tail blocks) before it looks up a waiting request's cached blocks, so V
    finds 2 of its 4 blocks and recomputes 65 - 32 = 33 tokens (counted as hits before the
    growth: 64 cached, 1 token)."""
    k, rows, v = _victim_behind_growth()
    assert v.computed == 64
    tab = SeqTable()
    tab.append(rows)
    d = ChunkedPrefill(reserve_full_prompt=True).next_batch(ReplicaView(0.0, tab, [v], k))
    assert d.tokens.tolist() == [1, 1] and d.admit == ((0, 33),)


def test_the_replica_takes_back_the_hits_the_policy_counted():
    """The replica applies that decision: V takes its 2 leading blocks back and 3 new ones for
    its 65 tokens (32 cached, 33 computed now); the running rows' 2 blocks evicted V's tail;
    the free queue's length stays the free count (30 - 9 - 9 - 5 = 7)."""
    k, rows, v = _victim_behind_growth()
    env = simpy.Environment()
    rep = Replica(0, env, E.EventLog(), ChunkedPrefill(reserve_full_prompt=True), k, LinearCost(1.0),
                  lambda: math.inf)
    rep.table.append(rows)
    rep._insert(v)
    rep._cached_waiting.append(v)
    plan = rep._start()
    assert plan.tokens == [1, 1, 33]
    assert rep.table.rid == ["R1", "R2", "V"] and rep.table.computed[2] == 32 and rep.table.blocks == [9, 9, 5]
    k.check()
    assert k.unheld_blocks == 7 and k.cached_tokens("V", 65) == 0


def _random_view(rng):
    """A running table of 1-8 rows (most decoding, some mid-prompt or held finished), maybe a
    waiting sequence, over a paged cache with few or many free blocks."""
    k = KVCacheManager(PagedPool(rng.choice([12, 40, 400]) * BB, BB), 512, 16)
    tab = SeqTable()
    for r in range(rng.randint(1, 8)):
        prompt, gen = rng.randint(1, 60), rng.choice([0, 1, rng.randint(1, 40)])
        known = prompt + gen
        computed = known - 1 if gen and rng.random() < 0.9 else rng.randint(0, known - 1)
        blocks = -(-computed // 16)
        if blocks and not k.grow(r, blocks):
            break
        done = rng.random() < 0.05
        tab.append([(r, prompt, gen + rng.randint(1, 30), computed, gen, blocks, r, 0, 10, 0.0, done)])
    waiting = [WaitingSeq(99, 10, 5, 1.0)] if rng.random() < 0.2 else []
    return ReplicaView(0.0, tab, waiting, k)


@pytest.mark.parametrize("policy", [ContinuousBatching(), ChunkedPrefill(max_num_batched_tokens=4), OrcaBatching()],
                         ids=lambda p: type(p).__name__)
def test_decode_growth_is_the_decision_of_next_batch(policy):
    """Where the shortcut answers, the policy's full decision is: every row one token, no
    admission, no preemption, that block growth; it answers in the common case."""
    rng = random.Random(3)
    answered = 0
    for _ in range(400):
        view = _random_view(rng)
        grow = policy.decode_growth(view)
        if grow is None:
            continue
        answered += 1
        d = policy.next_batch(view)
        assert d.tokens.tolist() == [1] * len(view.running) and not d.admit and not d.preempt
        assert not d.hold_finished and d.grow == grow
    assert answered > 50


def test_decode_growth_only_for_a_plan_with_its_own_hooks():
    """A subclass that overrides the plan or a hook is always asked for its decision."""
    class Halving(ContinuousBatching):
        def schedule_running(self, view, budget):
            return super().schedule_running(view, budget // 2)

    rng = random.Random(4)
    views = [_random_view(rng) for _ in range(100)]
    assert any(ContinuousBatching().decode_growth(v) is not None for v in views)
    assert all(Halving().decode_growth(v) is None for v in views)
    assert all(StaticBatching().decode_growth(v) is None for v in views)


@pytest.mark.parametrize("case", list(_cases(10)), ids=lambda c: f"{c['batching']}-{c['seed']}")
def test_decode_shortcut_changes_no_record(case, monkeypatch):
    """Whole runs with the replica's decode shortcut (:meth:`BatchingPolicy.decode_growth`) and
    without it (the policy asked every iteration) log the same records, exactly."""
    def go():
        over = {} if case["batching"] == "static" else {"preemption": case["preemption"]}
        cfg = make_cfg(workload=dict(SYN, n=120), batching=case["batching"], batching_over=over, cost=ROOF,
                       model="llama31_8b", gpu="rtx4090", memory=case["memory"], router="least_outstanding",
                       serving={"num_kv_blocks": case["blocks"], "replicas": case["replicas"],
                                "prefix_caching": case["prefix_caching"]})
        return simulate(cfg, seed=case["seed"])
    fast = go()
    monkeypatch.setattr(BatchingPolicy, "decode_growth", lambda self, view: None)
    assert go().log.records == fast.log.records
