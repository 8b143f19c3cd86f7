"""The serving loop's fast paths against their plain counterparts: batch block growth in the
paged pool and the KV manager, closed-form decode spans in the cost models, and whole runs
with spans (closed form, several iterations per SimPy step) against one iteration at a time."""
from __future__ import annotations

import random

import numpy as np
import pytest

from llmos_sim.policies.memory.paged import PagedPool
from llmos_sim.serving import simulate
from llmos_sim.serving.cost import LinearCost, MeasuredCost, RooflineCost, span_of_lines
from llmos_sim.serving.kv import KVCacheManager
from llmos_sim.serving.specs import H100, LLAMA31_8B
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
