"""Prefix caching across requests (hash units over any pool) and prefix-aware routing: stories
with hand-computed schedules (every iteration takes 1 s), the Mooncake loader's errors, and a
property test of the bookkeeping.

Tiny model: 512 B per token, 16-token KV blocks. The traces here use 32-token hash blocks, so
one cached unit is 2 KV blocks.
"""
from __future__ import annotations

import gzip
import json

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from llmos_sim.policies.routing import PrefixAware, ReplicaLoad
from llmos_sim.serving import simulate
from llmos_sim.workload.mooncake import MooncakeTrace
from llmos_sim.workload.requests import Request, WorkloadError
from .helpers import batches, make_cfg, req_events

S, F, D, P = "req_schedule", "req_first_token", "req_finish", "req_preempt"
POOLS = {
    "ideal": {"_target_": "llmos_sim.policies.memory.IdealPool", "_partial_": True},
    "paged": {"_target_": "llmos_sim.policies.memory.paged.PagedPool", "_partial_": True},
    "first_fit": {"_target_": "llmos_sim.policies.memory.fit.FirstFitPool", "_partial_": True, "alignment_bytes": 512},
    "buddy": {"_target_": "llmos_sim.policies.memory.buddy.BuddyPool", "_partial_": True, "min_block_bytes": 512},
}


def trace(tmp_path, rows, name="t.jsonl"):
    """A Mooncake-format file of ``(timestamp_s, input, output, hash_ids)`` rows."""
    p = tmp_path / name
    p.write_text("".join(json.dumps({"timestamp": int(t * 1000), "input_length": i, "output_length": o,
                                     "hash_ids": h}) + "\n" for t, i, o, h in rows))
    return str(p)


def run(path, batching="chunked_prefill", caching=True, serving=None, **kw):
    s = {"num_kv_blocks": 100, "prefix_caching": caching, **(serving or {})}
    wl = {"_target_": "llmos_sim.workload.mooncake.MooncakeTrace", "path": path, "block_tokens": 32}
    r = simulate(make_cfg(workload=wl, batching=batching, serving=s, **kw), seed=0)
    for rep in r.extra["replicas"]:
        rep.kv.check()
    return r


def hits(r):
    return r.tables["requests"]["cached_tokens"].tolist()


def test_a_hit_skips_exactly_the_cached_blocks_prefill(tmp_path):
    # 70 tokens = 2 whole 32-token hash blocks + a partial one (private, never cached).
    # req1 shares hash blocks 1, 2 (64 tokens) -> computes 6; req2 (64 tokens, both blocks
    # cached) takes only 32: vLLM always computes the last prompt token
    path = trace(tmp_path, [(0, 70, 3, [1, 2, 3]), (10, 70, 3, [1, 2, 4]), (20, 64, 2, [1, 2])])
    on, off = run(path), run(path, caching=False)
    assert [b[1] for b in batches(off.log) if b[1]] == [70, 70, 64]
    assert [b[1] for b in batches(on.log) if b[1]] == [70, 6, 32]
    assert hits(on) == [0, 64, 32] and hits(off) == [0, 0, 0]
    req = on.tables["requests"]
    assert req["hit_blocks"].tolist() == [0, 2, 1] and req["hash_blocks"].tolist() == [3, 3, 2]
    assert on.summary["prefix_hit_rate_tokens"] == pytest.approx(96 / 204)
    assert on.summary["prefix_hit_rate_blocks"] == pytest.approx(3 / 8)
    # same times (1 s per iteration), the same requests finish
    assert req_events(on.log) == req_events(off.log)
    kv = on.extra["replicas"][0].kv
    assert list(kv._lru) == [2, 1]  # released tail unit first: evicted first
    assert kv.used_bytes == 0 and kv.cached_bytes == 4 * 16 * 512


def test_a_running_sequences_prefix_is_shared_and_not_counted_again(tmp_path):
    # 7 blocks. A (66 tokens, 10 out) holds 5 blocks (4 in its two units). B arrives at t=2 with
    # the same two hash blocks: it references A's units (shared, 4 blocks) and needs 1 new
    # block for its last 2 prompt tokens, which fits in the 2 free ones. Without caching B
    # needs 5 blocks and waits until A finishes at t=10.
    path = trace(tmp_path, [(0, 66, 10, [1, 2, 3]), (2, 66, 2, [1, 2, 5])])
    on = run(path, serving={"num_kv_blocks": 7})
    assert req_events(on.log) == [(0.0, S, 0), (1.0, F, 0), (2.0, S, 1), (3.0, F, 1), (4.0, D, 1), (10.0, D, 0)]
    assert batches(on.log)[:3] == [(0.0, 66, 0, 1, 1.0), (1.0, 0, 1, 1, 1.0), (2.0, 2, 1, 2, 1.0)]
    off = run(path, caching=False, serving={"num_kv_blocks": 7})
    assert req_events(off.log)[-4:] == [(10.0, D, 0), (10.0, S, 1), (11.0, F, 1), (12.0, D, 1)]


@pytest.mark.parametrize("pool", ["ideal", "paged", "first_fit", "buddy"])
def test_lru_eviction_of_unreferenced_units_over_any_pool(tmp_path, pool):
    # 6 blocks; each request: 33 tokens = one 2-block unit + 1 private block, output 1.
    # After r0, r1: units {1, 2} cached (4 blocks); r2 needs 3 with 2 free -> evicts unit 1
    # (least recently used); r3 (hash 1 again) misses and evicts unit 2; r4 (hash 3) hits.
    rows = [(10 * i, 33, 1, [h, 9]) for i, h in enumerate([1, 2, 3, 1, 3])]
    r = run(trace(tmp_path, rows), serving={"num_kv_blocks": 6}, memory=POOLS[pool])
    assert hits(r) == [0, 0, 0, 0, 32]
    kv = r.extra["replicas"][0].kv
    assert kv.n_evicted_units == 2 and sorted(kv._table) == [1, 3]
    assert r.summary["n_finished"] == 5


@pytest.mark.parametrize("batching", ["static", "orca", "continuous", "chunked_prefill"])
def test_every_batching_policy_takes_the_hit(tmp_path, batching):
    path = trace(tmp_path, [(0, 70, 3, [1, 2, 3]), (10, 70, 3, [1, 2, 4])])
    r = run(path, batching=batching)
    assert hits(r) == [0, 64]
    assert [b[1] for b in batches(r.log) if b[1]] == [70, 6]


def test_recompute_preemption_takes_its_units_back_from_the_cache(tmp_path):
    # 5 blocks; A and B: 32-token prompts (one 2-block unit each), 3 outputs. After prefill
    # both hold 2 blocks; their first decode needs a 3rd block each: only 1 free, so B is
    # preempted (recompute) at t=1; its unit stays cached (evictable). B needs 3 blocks to
    # return (2 of them its cached unit): it waits for A's finish at t=3, then computes only
    # its 33rd token (a decode-shaped step) instead of all 33 known tokens
    path = trace(tmp_path, [(0, 32, 3, [1]), (0, 32, 3, [2])])
    on, off = run(path, serving={"num_kv_blocks": 5}), run(path, caching=False, serving={"num_kv_blocks": 5})
    for r in (on, off):
        assert req_events(r.log) == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, P, 1), (3.0, D, 0),
                                     (5.0, D, 1)]
    assert batches(on.log)[3] == (3.0, 0, 1, 1, 1.0)
    assert batches(off.log)[3] == (3.0, 33, 0, 1, 1.0)
    assert hits(on) == [0, 0]  # (the rates count first admissions only)


def test_block_size_must_divide_the_hash_block(tmp_path):
    path = trace(tmp_path, [(0, 70, 3, [1, 2, 3])])
    with pytest.raises(ValueError, match="serving.block_tokens"):
        run(path, serving={"block_tokens": 48})


def test_prefix_aware_routing_trades_cache_affinity_against_load(tmp_path):
    # r0 (hashes 1,2) runs on replica 0 and finishes at t=3; r1 (no shared prefix, long)
    # arrives at t=5 -> replica 0 (all equal, lowest index); r2 (hashes 1,2) at t=10:
    # replica 0 has 64 of its 70 tokens cached but 1 request outstanding
    rows = [(0, 70, 3, [1, 2, 3]), (5, 20, 50, [7]), (10, 70, 3, [1, 2, 4])]
    path = trace(tmp_path, rows)

    def route(router, load_tokens=None):
        r = run(path, serving={"replicas": 2}, router=router) if load_tokens is None else \
            _run_router(path, load_tokens)
        req = r.tables["requests"]
        return int(req.loc[2, "replica"]), int(req.loc[2, "cached_tokens"])

    assert route("least_outstanding") == (1, 0)
    assert route(None, 10) == (0, 64)  # cost 6 + 10·1 = 16 < 70 + 0
    assert route(None, 100) == (1, 0)  # cost 6 + 100 > 70


def _run_router(path, load_tokens):
    cfg = make_cfg(workload={"_target_": "llmos_sim.workload.mooncake.MooncakeTrace", "path": path, "block_tokens": 32},
                   serving={"num_kv_blocks": 100, "prefix_caching": True, "replicas": 2}, router="prefix_aware")
    cfg.router.load_tokens = load_tokens
    return simulate(cfg, seed=0)


def test_prefix_aware_score_on_hand_built_loads():
    req = Request(0, 0.0, 1000, 10, prefix_hashes=(1, 2), prefix_block_tokens=512)
    loads = [ReplicaLoad(0, 3, 0.5, 1, 0), ReplicaLoad(1, 4, 0.5, 2, 512), ReplicaLoad(2, 3, 0.1, 0, 0)]
    assert PrefixAware(load_tokens=100).route(req, loads) == 1  # 488 + 400 < 1000 + 300
    assert PrefixAware(load_tokens=1000).route(req, loads) == 0  # ties on cost and load: lowest index
    assert PrefixAware(load_tokens=0).route(req, loads) == 1
    with pytest.raises(ValueError):
        PrefixAware(load_tokens=-1)


# -- the loader --------------------------------------------------------------------------------
def test_mooncake_loader_reads_the_shipped_traces():
    conv = MooncakeTrace("conversation").requests()
    assert len(conv) == 12031 and conv[0].prefix_hashes[:3] == (0, 1, 2) and conv[0].prefix_block_tokens == 512
    assert all(len(r.prefix_hashes) == -(-r.prompt_tokens // 512) for r in conv)
    assert conv[-1].arrival_s == pytest.approx(3536.999)
    syn = MooncakeTrace("synthetic", max_requests=10, rate_scale=2.0).requests()
    assert len(syn) == 10 and [r.id for r in syn] == list(range(10))


@pytest.mark.parametrize("line,msg", [
    ('{"timestamp": 0, "input_length": 70, "output_length": 3, "hash_ids": [1, 2]}', ":2: 'hash_ids' has 2 ids"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 3, "hash_ids": []}', ":2: 'input_length' must be"),
    ('{"timestamp": -1, "input_length": 5, "output_length": 3, "hash_ids": [1]}', ":2: 'timestamp' must be"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 3}', ":2: missing key 'hash_ids'"),
    ('{"timestamp": 0, "input_length": 5, "output_length": 3, "hash_ids": ["a"]}', ":2: 'hash_ids' must be a list"),
    ('{"timestamp": 0, "input_length": 5,', ":2:36: not valid JSON"),
    ('[1, 2]', ":2: expected a JSON object"),
])
def test_mooncake_loader_names_file_and_line(tmp_path, line, msg):
    p = tmp_path / "bad.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write('{"timestamp": 0, "input_length": 5, "output_length": 3, "hash_ids": [1]}\n' + line + "\n")
    with pytest.raises(WorkloadError, match=msg.replace("[", r"\[")) as e:
        MooncakeTrace(path=str(p), block_tokens=32).requests()
    assert str(p) in str(e.value)


# -- property: nothing lost, duplicated or double-freed; references return to zero ------------
ROW = st.tuples(st.integers(0, 8), st.integers(1, 120), st.integers(1, 12), st.lists(st.integers(0, 3), max_size=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=12), batching=st.sampled_from(["static", "orca", "continuous",
                                                                             "chunked_prefill"]),
       pool=st.sampled_from(sorted(POOLS)), blocks=st.integers(4, 30), mode=st.sampled_from(["recompute", "swap"]),
       replicas=st.integers(1, 2), router=st.sampled_from(["round_robin", "prefix_aware"]),
       host=st.sampled_from([None, 0, 20_000, 10**7]))
# found by this property: unit 808 offloaded, recomputed on the GPU, then evicted again kept two host copies
@example(rows=[(0, 1, 1, []), (0, 32, 1, [0]), (0, 32, 1, [0]), (0, 1, 1, [])], batching="static", pool="buddy",
         blocks=4, mode="recompute", replicas=1, router="round_robin", host=10**7)
def test_prefix_caching_bookkeeping_property(tmp_path, rows, batching, pool, blocks, mode, replicas, router, host):
    # hashes from a small tree (a prefix of (a, b, c) choices): shared prefixes are common
    rows = [(t, n, o, [hash(tuple(pick[:j + 1])) % 1000 for j in range(-(-n // 32))] if pick else
             [1000 + 10 * i + j for j in range(-(-n // 32))])
            for i, (t, n, o, pick) in enumerate(rows)]
    rows = [(t, n, o, (h + [5000 + 10 * i + j for j in range(len(h), -(-n // 32))])[: -(-n // 32)])
            for i, (t, n, o, h) in enumerate(rows)]
    path = trace(tmp_path, rows, "p.jsonl")
    over = {"preemption": mode} if batching != "static" else None
    r = run(path, batching=batching, serving={"num_kv_blocks": blocks, "replicas": replicas, "host_kv_bytes": host},
            memory=POOLS[pool], router=router, batching_over=over)
    ends = [(s, k) for t, k, s, d in r.log if k in (D, "req_fail")]
    assert sorted(s for s, _ in ends) == list(range(len(rows)))  # each exactly once: finished xor failed
    for rep in r.extra["replicas"]:
        kv = rep.kv
        assert not kv._units and not kv._hdone and not kv._hseq and not kv._hfill  # no references left, nothing registered
        assert all(u.ref == 0 for u in kv._table.values()) and len(kv._lru) == len(kv._table)
        assert kv.used_bytes == 0 and kv.unheld_blocks == kv.total_blocks
        while kv._evict_one():  # the cached units are the pool's only live allocations
            pass
        assert kv.pool.stats().n_live == 0 and kv.cached_bytes == 0
        if kv.host is not None:  # nothing swapped is left behind; host copies are whole units
            assert not kv.host._swapped and kv.host.used_bytes == len(kv.host._units) * UNIT_BYTES


# -- the host-memory tier ----------------------------------------------------------------------
UNIT_BYTES = 2 * 16 * 512  # one 32-token unit of the tiny model


def test_a_unit_the_host_already_holds_is_not_copied_again():
    from llmos_sim.serving.kv import HostTier

    host = HostTier(10 * UNIT_BYTES)
    assert host.put_unit(7, UNIT_BYTES) and host.put_unit(8, UNIT_BYTES)
    assert not host.put_unit(7, UNIT_BYTES)  # the GPU recomputed unit 7 and evicts it again: one copy
    assert host.used_bytes == 2 * UNIT_BYTES and list(host._units) == [8, 7]  # 7 is now most recently used


def _shapes(monkeypatch):
    """Record every iteration's shape (the cost model's input)."""
    from llmos_sim.serving.cost import LinearCost

    seen = []
    orig = LinearCost.iteration_s

    def rec(self, b):
        seen.append(b)
        return orig(self, b)

    monkeypatch.setattr(LinearCost, "iteration_s", rec)
    return seen


def test_evicted_units_go_to_host_memory_and_come_back_priced(tmp_path, monkeypatch):
    # the LRU story above with a host tier: r2 evicts unit 1 to host memory (an offload of
    # one unit's bytes), r3 finds it there: a hit of 32 tokens copied back (its bytes again);
    # r3's own growth evicts unit 2 to host; r4 hits unit 3 on the GPU
    seen = _shapes(monkeypatch)
    rows = [(10 * i, 33, 1, [h, 9]) for i, h in enumerate([1, 2, 3, 1, 3])]
    r = run(trace(tmp_path, rows), serving={"num_kv_blocks": 6, "host_kv_bytes": 10 * UNIT_BYTES})
    assert hits(r) == [0, 0, 0, 32, 32]
    req = r.tables["requests"]
    assert req["host_blocks"].tolist() == [0, 0, 0, 1, 0]
    assert [b.n_prefill_tokens for b in seen] == [33, 33, 33, 1, 1]
    # r2's prefill carries unit 1's offload; r3's carries the copy back + unit 2's offload
    assert [b.swap_bytes for b in seen] == [0, 0, UNIT_BYTES, 2 * UNIT_BYTES, 0]
    kv = r.extra["replicas"][0].kv
    assert kv.n_host_hits == 1 and 2 in kv.host and 1 not in kv.host
    assert r.summary["prefix_host_hit_rate_blocks"] == pytest.approx(1 / 10)


def test_host_tier_capacity_is_lru_and_bounded(tmp_path):
    # room for one unit on the host: unit 1 (offloaded first) is dropped when unit 2 comes
    rows = [(10 * i, 33, 1, [h, 9]) for i, h in enumerate([1, 2, 3, 4, 1])]
    r = run(trace(tmp_path, rows), serving={"num_kv_blocks": 6, "host_kv_bytes": UNIT_BYTES})
    assert hits(r) == [0, 0, 0, 0, 0]
    assert r.extra["replicas"][0].kv.host.n_dropped_units >= 1


@pytest.mark.parametrize("host,mode", [(None, "swap"), (10**6, "swap"), (100, "recompute")])
def test_swap_needs_room_in_host_memory(host, mode):
    # the swap story of test_stories: B's 17 tokens (8,704 B) go to host memory if they fit;
    # with 100 B of host memory the swap becomes a recompute
    r = simulate(make_cfg([[0, 16, 3], [0, 16, 3]], "chunked_prefill", batching_over={"preemption": "swap"},
                          serving={"num_kv_blocks": 3, "host_kv_bytes": host}), seed=0)
    assert [d for t, k, s, d in r.log if k == P] == [(0, mode)]
    assert r.summary["n_finished"] == 2
    kv = r.extra["replicas"][0].kv
    if kv.host is not None:
        assert kv.host.used_bytes == 0  # swapped back in: nothing left on the host
