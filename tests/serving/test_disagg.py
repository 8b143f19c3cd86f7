"""Prefill/decode disaggregation: hand-computed schedules (every iteration takes 1 s), the
transfer's price, the pools' own GPUs, and a property test of the bookkeeping.

Tiny model: 512 B of KV per token. A request (arrival, prompt P, output O) is prefilled on a
prefill replica (first token at the end of that iteration), its P·512 bytes cross the link in
``latency + bytes / bandwidth``, then the decode replica decodes its O − 1 other tokens.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from omegaconf import OmegaConf

from llmos_sim import events as E
from llmos_sim.serving import simulate
from llmos_sim.serving.disagg import KVLink
from .helpers import CONFIGS, batches, make_cfg, req_events

S, F, D, X = "req_schedule", "req_first_token", "req_finish", "req_fail"
BPT = 512  # tiny model: KV bytes per token


def disagg_cfg(rows, prefill=1, decode=1, bw=8192.0, latency=0.5, pools=None, **kw):
    kw.setdefault("serving", {"num_kv_blocks": 100})
    cfg = make_cfg(rows, **kw)
    topo = OmegaConf.load(CONFIGS / "topology" / "disaggregated.yaml")
    topo.prefill.replicas, topo.decode.replicas = prefill, decode
    topo.link.bw_bytes_s, topo.link.latency_s = bw, latency
    if pools:
        topo = OmegaConf.merge(topo, pools)
    cfg.topology = topo
    return cfg


def run(rows, **kw):
    r = simulate(disagg_cfg(rows, **kw), seed=0)
    for rep in r.extra["replicas"]:
        rep.kv.check()
    return r


def transfers(log):
    return [(t, s, d) for t, k, s, d in log if k == E.KV_TRANSFER]


def test_link_prices_latency_plus_bytes_over_bandwidth():
    assert KVLink(8192.0, 0.5).seconds(16 * BPT) == 1.5
    assert KVLink(1e9, 0.0).seconds(0) == 0.0
    with pytest.raises(ValueError, match="topology.link.bw_bytes_s"):
        KVLink(0.0, 0.1)
    with pytest.raises(ValueError, match="topology.link.latency_s"):
        KVLink(1.0, -1.0)


def test_decode_starts_exactly_when_the_transfer_ends():
    # prefill 0->1 (first token at 1); 20·512 B at 8192 B/s + 0.5 s = 1.75 s: lands at 2.75;
    # the decode replica (idle) starts at 2.75: tokens 2 and 3 at 3.75 and 4.75
    r = run([[0, 20, 3]])
    assert req_events(r.log) == [(0.0, S, 0), (1.0, F, 0), (4.75, D, 0)]
    assert transfers(r.log) == [(1.0, 0, ("start", 0, 1, 20 * BPT)), (2.75, 0, ("end", 0, 1, 20 * BPT))]
    assert [(t, s) for t, k, s, d in r.log if k == "batch"] == [(0.0, 0), (2.75, 1), (3.75, 1)]
    req = r.tables["requests"].set_index("request")
    assert req.loc[0, "ttft_s"] == 1.0 and req.loc[0, "tpot_s"] == 1.875 and req.loc[0, "e2e_s"] == 4.75
    assert req.loc[0, "replica"] == 0  # where it was first scheduled: the prefill replica
    # the first decode token's gap includes the transfer (2.75 s), the second is one iteration
    assert r.summary["mean_itl_ms"] == 1875.0 and r.summary["p99_itl_ms"] == pytest.approx(2732.5)
    tr = r.tables["transfers"]
    assert tr.to_dict("records") == [{"request": 0, "from_replica": 0, "to_replica": 1, "nbytes": 20 * BPT,
                                      "first_token_s": 1.0, "start_s": 1.0, "end_s": 2.75, "wait_s": 0.0,
                                      "transfer_s": 1.75}]
    assert r.summary["kv_transfers"] == 1 and r.summary["gpus"] == 2


def test_a_one_token_request_finishes_on_its_prefill_replica():
    r = run([[0, 20, 1]])
    assert req_events(r.log) == [(0.0, S, 0), (1.0, F, 0), (1.0, D, 0)]
    assert transfers(r.log) == [] and len(r.tables["transfers"]) == 0


def test_two_transfers_share_the_link_fairly():
    # both prefilled together 0->1, both start at 1 and move bytes from 1.5 (latency) on the
    # prefill replica's link (8192 B/s): A 20·512 = 10240 B, B 10·512 = 5120 B, 4096 B/s each
    # while both move. B ends at 1.5 + 5120/4096 = 2.75; A has 5120 B left, alone at 8192 B/s:
    # ends at 2.75 + 0.625 = 3.375. The decode replica takes B at 2.75 (2.75->3.75, its last
    # token); A waits for that iteration's end (3.75) and decodes 3.75->5.75
    r = run([[0, 20, 3], [0, 10, 2]])
    assert req_events(r.log) == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (3.75, D, 1), (5.75, D, 0)]
    assert [(t, k, s) for t, s, (k, *_) in transfers(r.log)] == [
        (1.0, "start", 0), (1.0, "start", 1), (2.75, "end", 1), (3.375, "end", 0)]
    assert batches(r.log) == [(0.0, 30, 0, 2, 1.0), (2.75, 0, 1, 1, 1.0), (3.75, 0, 1, 1, 1.0), (4.75, 0, 1, 1, 1.0)]
    req = r.tables["requests"].set_index("request")
    assert req.loc[0, "tpot_s"] == 2.375 and req.loc[1, "tpot_s"] == 2.75


def test_two_transfers_take_the_link_in_turn_under_fifo():
    # the same two, sharing: fifo. A (handed off first) moves at 8192 B/s from 1.5: ends at
    # 1.5 + 1.25 = 2.75; B then, 5120/8192 = 0.625: ends at 3.375. The decode replica takes A
    # at 2.75 (2.75->3.75: its 2nd token), B lands during that iteration and joins at 3.75:
    # 3.75->4.75 is A's last token and B's
    r = run([[0, 20, 3], [0, 10, 2]], pools={"link": {"sharing": "fifo"}})
    assert [(t, k, s) for t, s, (k, *_) in transfers(r.log)] == [
        (1.0, "start", 0), (1.0, "start", 1), (2.75, "end", 0), (3.375, "end", 1)]
    assert req_events(r.log) == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (4.75, D, 0), (4.75, D, 1)]
    assert batches(r.log) == [(0.0, 30, 0, 2, 1.0), (2.75, 0, 1, 1, 1.0), (3.75, 0, 2, 2, 1.0)]


@pytest.mark.parametrize("scope,sharing,ends", [
    ("source", "fair", [2.75, 2.75]), ("pair", "fair", [2.75, 2.75]),  # one link each: no contention
    ("destination", "fair", [4.0, 4.0]), ("single", "fair", [4.0, 4.0]),  # one link: 4096 B/s each
    ("destination", "fifo", [2.75, 4.0]),  # one link, one at a time: 1.25 s each
])
def test_the_link_scope_says_which_transfers_share(scope, sharing, ends):
    # two prefill replicas, one decode replica: A on prefill 0, B on prefill 1, both 20·512 B
    # handed off at 1, moving from 1.5 at 8192 B/s per link
    r = run([[0, 20, 3], [0, 20, 3]], prefill=2, pools={"link": {"scope": scope, "sharing": sharing}})
    assert [(t, s) for t, s, (k, *_) in transfers(r.log) if k == "end"] == list(zip(ends, [0, 1]))


@pytest.mark.parametrize("fast_forward", [True, False])
def test_a_decode_span_never_runs_past_a_landing(fast_forward):
    # A: prefill 0->1, 16 tokens land at 2.5, decodes from 2.5 (its 10th token at 11.5). B
    # arrives at 3, prefill 3->4, lands at 5.5: the decode iteration starting at 5.5 takes it
    # (B's tokens at 6.5 and 7.5). Fast-forwarding A's decodes must stop at 5.5 all the same.
    r = run([[0, 16, 10], [3, 16, 3]], serving={"num_kv_blocks": 100, "fast_forward": fast_forward})
    assert req_events(r.log) == [(0.0, S, 0), (1.0, F, 0), (3.0, S, 1), (4.0, F, 1), (7.5, D, 1), (11.5, D, 0)]
    dec = [(t, d) for t, k, s, d in r.log if k in ("batch", "batch_span") and s == 1]
    starts = [t for t, _ in dec]
    assert 5.5 in starts and all(t < 5.5 or t >= 5.5 for t in starts)
    # the records before 5.5 cover A's decodes from 2.5 to 5.5 exactly (3 iterations)
    before = [d for t, d in dec if t < 5.5]
    assert sum(d[0] if len(d) == 6 else 1 for d in before) == 3
    t55 = [d for t, d in dec if t == 5.5][0]
    assert (t55[3] if len(t55) == 6 else t55[2]) == 2  # both decode from 5.5


def test_kv_is_held_by_the_prefill_until_sent_and_by_the_decode_before_it_starts(monkeypatch):
    # 4 blocks of 16 tokens per replica. A and B (prompt 32, output 3) prefill together 0->1
    # on the prefill replica: 2 blocks each. At 1 the decode replica allocates A's 3 blocks
    # (prompt + first token: 33 tokens) and A's transfer starts (32·512 B: 0.5 + 2.0 s, ends at
    # 3.5); B needs 3 more, 1 is free: it waits. The prefill replica keeps both requests' blocks
    # until their transfers end. A decodes 3.5->4.5->5.5 in its 3 blocks and frees them at 5.5;
    # B's transfer starts then (ends at 8.0) and B decodes 8->9->10.
    from llmos_sim.serving import disagg

    samples = []
    run_system = disagg.DisaggSystem.run

    def probed(system, until=None):
        def probe():
            for t in (0.5, 2.0, 4.0, 6.0, 9.0, 11.0):
                yield system.env.timeout(t - system.env.now)
                samples.append((t, [rep.kv.total_blocks - rep.kv.unheld_blocks for rep in system.all_replicas]))
        system.env.process(probe())
        run_system(system, until)

    monkeypatch.setattr(disagg.DisaggSystem, "run", probed)
    r = run([[0, 32, 3], [0, 32, 3]], serving={"num_kv_blocks": 4, "block_tokens": 16})
    assert req_events(r.log) == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (5.5, D, 0), (10.0, D, 1)]
    assert [(t, k, s) for t, s, (k, *_) in transfers(r.log)] == [
        (1.0, "start", 0), (3.5, "end", 0), (5.5, "start", 1), (8.0, "end", 1)]
    # blocks in use [prefill, decode] over time
    assert samples == [(0.5, [4, 0]), (2.0, [4, 3]), (4.0, [2, 3]), (6.0, [2, 3]), (9.0, [0, 3]), (11.0, [0, 0])]
    tr = r.tables["transfers"].set_index("request")
    assert tr["wait_s"].tolist() == [0.0, 4.5]
    assert r.summary["kv_transfer_wait_max_queue"] == 1 and r.summary["prefill_held_blocks_max"] == 4


def test_a_prefill_replica_short_of_blocks_waits_for_a_transfer_to_end():
    # 4 blocks: A (prompt 48: 3 blocks) prefills 0->1 and its blocks stay until its transfer
    # ends (48·512 B: 0.5 + 3.0 s, at 4.5). B (prompt 32: 2 blocks) arrives at 0.5 and must
    # wait for them: it is not failed, it prefills 4.5->5.5
    r = run([[0, 48, 2], [0.5, 32, 2]], serving={"num_kv_blocks": 4, "block_tokens": 16})
    assert req_events(r.log)[:4] == [(0.0, S, 0), (1.0, F, 0), (4.5, S, 1), (5.5, F, 1)]
    assert sorted(s for t, k, s, d in r.log if k == D) == [0, 1]


def test_the_decode_router_counts_transfers_under_way():
    # least-outstanding over two decode replicas: A and B are handed off together; B must see
    # A's transfer to replica 2 (index 1 of the decode pool) and go to the other one
    r = run([[0, 20, 3], [0, 20, 3]], prefill=1, decode=2, router="least_outstanding")
    assert [(s, d[2]) for t, s, d in transfers(r.log) if d[0] == "start"] == [(0, 1), (1, 2)]


def test_pools_take_their_own_gpu_and_tp():
    # decode on H200 (more memory: more KV blocks by vLLM's rule); TP 2 on both: twice the link
    r = run([[0, 20, 3]], serving={}, pools={"prefill": {"tp": 2}, "decode": {"gpu": "H200", "tp": 2}}, bw=8192.0)
    assert r.extra["kv_blocks_decode"] > r.extra["kv_blocks_per_replica"]
    assert transfers(r.log)[1][0] == 1.0 + 0.5 + 20 * BPT / (2 * 8192.0)
    assert r.summary["gpus"] == 4


@pytest.mark.parametrize("key,value,msg", [
    (("prefill", "replicas"), 0, "topology.prefill.replicas"),
    (("decode", "tp"), 1.5, "topology.decode.tp"),
    (("link", "bw_bytes_s"), -1.0, "topology.link.bw_bytes_s"),
    (("link", "latency_s"), "x", "topology.link"),
    (("kind",), "split", "topology.kind"),
    (("link", "sharing"), "lottery", "topology.link.sharing"),
    (("link", "scope"), "rack", "topology.link.scope"),
])
def test_bad_topology_names_the_key(key, value, msg):
    cfg = disagg_cfg([[0, 20, 3]])
    node = cfg.topology
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value
    with pytest.raises(ValueError, match=msg):
        simulate(cfg, seed=0)


def test_colocated_topology_is_the_plain_run():
    rows = [[0, 20, 3], [0, 10, 2], [1, 5, 4]]
    plain = simulate(make_cfg(rows, serving={"num_kv_blocks": 100}), seed=0)
    cfg = make_cfg(rows, serving={"num_kv_blocks": 100})
    cfg.topology = OmegaConf.load(CONFIGS / "topology" / "colocated.yaml")
    assert simulate(cfg, seed=0).log.records == plain.log.records


# -- property: nothing lost, duplicated or double-freed; every pool empty at the end ------------
ROW = st.tuples(st.integers(0, 6), st.integers(1, 80), st.integers(1, 10))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(ROW, min_size=1, max_size=10),
       batching=st.sampled_from(["static", "orca", "continuous", "chunked_prefill"]),
       pool=st.sampled_from(["ideal", "paged"]), blocks=st.integers(3, 20), mode=st.sampled_from(["recompute", "swap"]),
       prefill=st.integers(1, 2), decode=st.integers(1, 2), router=st.sampled_from(["round_robin", "least_outstanding"]),
       link=st.sampled_from([(8192.0, 0.5), (1e6, 0.0), (1000.0, 0.25)]), fast_forward=st.booleans(),
       sharing=st.sampled_from(["fair", "fifo"]), scope=st.sampled_from(["source", "destination", "pair", "single", "both"]))
def test_disaggregation_bookkeeping_property(rows, batching, pool, blocks, mode, prefill, decode, router, link,
                                             fast_forward, sharing, scope):
    memory = {"ideal": None, "paged": {"_target_": "llmos_sim.policies.memory.paged.PagedPool", "_partial_": True}}[pool]
    over = {"preemption": mode} if batching != "static" else None
    rows = [list(x) for x in rows]
    pools = {"link": {"sharing": sharing, "scope": scope}}
    from unittest import mock

    from llmos_sim.serving import disagg

    land, landed = disagg.DisaggSystem._land, []

    def checked_land(system, x, now):  # when a transfer ends, both pools hold the request's KV
        rid = x.req.id
        landed.append(rid)
        kv = system.prefill[x.src].kv
        assert kv.held_blocks(rid) == -(-x.req.prompt_tokens // kv.block_tokens)  # its prompt's blocks
        assert system.decode[x.j].kv.held_blocks(rid) == x.blocks > 0  # allocated before the transfer
        land(system, x, now)
        assert system.prefill[x.src].kv.held_blocks(rid) == 0 or rid in system._held[x.src]  # freed now (or with
        # the replica's own release, still to come)

    with mock.patch.object(disagg.DisaggSystem, "_land", checked_land):
        r = run(rows, prefill=prefill, decode=decode, bw=link[0], latency=link[1], batching=batching,
                batching_over=over, memory=memory, router=router,
                serving={"num_kv_blocks": blocks, "fast_forward": fast_forward}, pools=pools)
    assert sorted(landed) == sorted(s for t, s, d in transfers(r.log) if d[0] == "end")
    ends = [s for t, k, s, d in r.log if k in (D, X)]
    assert sorted(ends) == list(range(len(rows)))  # each exactly once: finished xor failed
    first = [s for t, k, s, d in r.log if k == F]
    assert len(first) == len(set(first))
    tr = {}
    for t, s, (phase, src, dst, nbytes) in transfers(r.log):
        assert phase not in tr.setdefault(s, {})
        tr[s][phase] = (t, src, dst, nbytes)
        assert src < prefill <= dst < prefill + decode and nbytes == rows[s][1] * BPT
    fin = {s: t for t, k, s, d in r.log if k == D}
    ft = {s: t for t, k, s, d in r.log if k == F}
    too_big = {s for t, k, s, d in r.log if k == X and d[0].startswith("kv_too_small")}
    for s, (arr, p, o) in enumerate(rows):
        if o > 1 and s in ft and s not in too_big:  # prefilled: its KV went to the decode pool, and landed
            (t0, *_), (t1, *_) = tr[s]["start"], tr[s]["end"]
            # it waits for the decode pool's blocks, then shares its link: never faster than alone
            assert t0 >= ft[s] and t1 >= t0 + link[1] + p * BPT / link[0] - 1e-9
            if s in fin:
                assert fin[s] >= t1 + 1.0  # at least one decode iteration after it landed
        else:  # (one the decode pool can never hold fails at its first token: nothing is sent)
            assert s not in tr
    for rep in r.extra["replicas"]:  # every pool empty, every count back to zero
        assert rep.kv.used_bytes == 0 and rep.kv.unheld_blocks == rep.kv.total_blocks
        assert rep.kv.pool.stats().n_live == 0
        assert rep.outstanding == 0 and not rep.waiting and not len(rep.table)
    # fast-forwarded decode spans stop at every landing: the same request events without them
    # (events of different replicas at one time may come in another order)
    other = run(rows, prefill=prefill, decode=decode, bw=link[0], latency=link[1], batching=batching,
                batching_over=over, memory=memory, router=router, pools=pools,
                serving={"num_kv_blocks": blocks, "fast_forward": not fast_forward})
    mine, theirs = (sorted(req_events(x.log), key=lambda e: (round(e[0], 9), e[1], e[2])) for x in (r, other))
    assert [e[1:] for e in mine] == [e[1:] for e in theirs]
    assert [e[0] for e in mine] == pytest.approx([e[0] for e in theirs], rel=1e-12, abs=1e-9)


def test_disaggregation_is_for_simulated_serving_runs():
    class RealBackend:  # a backend whose replicas execute their iterations
        def environment(self):
            return None

        def serving_replica(self, model):
            return object

    with pytest.raises(ValueError, match="simulated replicas"):
        simulate(disagg_cfg([[0, 20, 3]]), seed=0, backend=RealBackend())


@pytest.mark.parametrize("override,key", [("topology.decode.replicas=0", "topology.decode.replicas"),
                                          ("topology.link.bw_bytes_s=0", "topology.link.bw_bytes_s"),
                                          ("topology.link.sharing=lottery", "topology.link.sharing"),
                                          ("+topology.prefill.router.foo=1", "topology.prefill.router")])
def test_the_config_check_names_bad_topology_keys(override, key):
    from hydra import compose, initialize_config_dir

    from llmos_sim.validate import ConfigError, check_config

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose("config", overrides=["experiment=serving_disagg", "topology=disaggregated", override])
    with pytest.raises(ConfigError, match=f"config key '{key}"):
        check_config(cfg)


HROW = st.tuples(st.integers(0, 6), st.integers(1, 100), st.integers(1, 8), st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(HROW, min_size=1, max_size=10), blocks=st.integers(4, 24), mode=st.sampled_from(["recompute", "swap"]),
       host=st.sampled_from([None, 0, 20_000]), prefill=st.integers(1, 2), decode=st.integers(1, 2),
       scope=st.sampled_from(["source", "both"]), router=st.sampled_from(["round_robin", "prefix_aware"]))
def test_disaggregation_with_prefix_caching_and_host_memory_property(rows, blocks, mode, host, prefill, decode, scope,
                                                                     router):
    # prompts share their first 32-token hash blocks by a small family id: hits on both pools
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.jsonl"
        path.write_text("".join(json.dumps({"timestamp": t * 1000, "input_length": n, "output_length": o,
                                            "hash_ids": [100 * fam + j for j in range(-(-n // 32))]}) + "\n"
                                for t, n, o, fam in rows))
        wl = {"_target_": "llmos_sim.workload.mooncake.MooncakeTrace", "path": str(path), "block_tokens": 32}
        r = run(None, prefill=prefill, decode=decode, workload=wl, batching_over={"preemption": mode}, router=router,
                serving={"num_kv_blocks": blocks, "prefix_caching": True, "host_kv_bytes": host},
                pools={"link": {"scope": scope}})
    ends = [s for t, k, s, d in r.log if k in (D, X)]
    assert sorted(ends) == list(range(len(rows)))  # each exactly once: finished xor failed
    first = [s for t, k, s, d in r.log if k == F]
    assert len(first) == len(set(first))
    # a transfer sends the prompt less the whole hash blocks the decode replica had cached
    tr = r.tables["transfers"]
    prompt = r.tables["requests"].set_index("request")["prompt_tokens"]
    for rid, nbytes, cached in zip(tr["request"], tr["nbytes"], tr["cached_tokens"]):
        assert nbytes == (prompt[rid] - cached) * BPT and cached % 32 == 0 and 0 <= cached <= prompt[rid]
    assert r.summary["kv_transfer_cached_tokens"] == tr["cached_tokens"].sum()
    for rep in r.extra["replicas"]:
        kv = rep.kv
        assert not kv._units and not kv._hseq and kv.used_bytes == 0  # no references, nothing registered
        assert all(u.ref == 0 for u in kv._table.values()) and len(kv._lru) == len(kv._table)  # counts back to 0
        # the pool holds exactly the cached units' allocations: nothing leaked, nothing freed twice
        assert kv.pool.stats().n_live == sum(len(u.allocs) for u in kv._table.values())
        assert rep.outstanding == 0 and not rep.waiting and not len(rep.table)
        if kv.host is not None:
            assert not kv.host._swapped


# -- the decode pool's prefix cache: a transfer sends only what the decode replica lacks -------
def hashed_run(rows, tmp_path, prefix_caching=True, **kw):
    """``rows``: (arrival, prompt, output, hash ids over 32-token blocks)."""
    import json

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": t * 1000, "input_length": n, "output_length": o,
                                        "hash_ids": list(h)}) + "\n" for t, n, o, h in rows))
    wl = {"_target_": "llmos_sim.workload.mooncake.MooncakeTrace", "path": str(path), "block_tokens": 32}
    kw.setdefault("serving", {})
    kw["serving"] = {"num_kv_blocks": 100, "block_tokens": 16, "prefix_caching": prefix_caching, **kw["serving"]}
    return run(None, workload=wl, **kw)


def test_a_transfer_sends_only_the_prompt_the_decode_replica_has_not_cached(tmp_path):
    # 8192 B/s, 0.5 s latency, 32-token hash blocks (2 KV blocks of 16). A (prompt 40: one whole
    # hash block, key 1) prefills 0->1; the decode pool has nothing: 40·512 B, 0.5 + 2.5 s, lands
    # at 4; decodes 4->5. Its hash block is cached on the decode replica from its landing. B
    # (prompt 40, key 1 too) arrives at 5: the prefill replica has key 1 cached (32 tokens),
    # computes 8, first token at 6; the decode replica has key 1 too: only 8·512 B are sent,
    # 0.5 + 0.5 s, landing at 7; B decodes 7->8.
    rows = [(0, 40, 2, (1, 2)), (5, 40, 2, (1, 3))]
    r = hashed_run(rows, tmp_path)
    assert req_events(r.log) == [(0.0, S, 0), (1.0, F, 0), (5.0, D, 0), (5.0, S, 1), (6.0, F, 1), (8.0, D, 1)]
    assert transfers(r.log) == [(1.0, 0, ("start", 0, 1, 40 * BPT)), (4.0, 0, ("end", 0, 1, 40 * BPT)),
                                (6.0, 1, ("start", 0, 1, 8 * BPT)), (7.0, 1, ("end", 0, 1, 8 * BPT))]
    tr = r.tables["transfers"]
    assert tr["cached_tokens"].tolist() == [0, 32] and tr["transfer_s"].tolist() == [3.0, 1.0]
    assert r.summary["kv_transfer_cached_tokens"] == 32 and r.summary["kv_transfer_bytes"] == 48 * BPT
    dec = r.extra["replicas"][1].kv
    assert set(dec._table) == {1} and not dec._hseq and not dec._units  # cached there, no one holds it
    # without prefix caching every prompt crosses whole: B's 40·512 B land at 6 + 3 = 9
    off = hashed_run(rows, tmp_path, prefix_caching=False)
    assert [(t, s) for t, s, d in transfers(off.log)][2:] == [(6.0, 1), (9.0, 1)]
    assert "cached_tokens" not in off.tables["transfers"]


def test_a_prompt_cached_whole_on_the_decode_replica_crosses_in_the_latency_only(tmp_path):
    # A (prompt 64: hash blocks 1, 2) lands at 1 + 0.5 + 4.0 = 5.5 and decodes 5.5->6.5. B, the
    # same prompt at 7: the prefill replica reuses 32 tokens (it always computes the last
    # token), first token at 8; the decode replica has all 64: 0 bytes, it lands after the
    # 0.5 s latency (8.5) and decodes 8.5->9.5
    r = hashed_run([(0, 64, 2, (1, 2)), (7, 64, 2, (1, 2))], tmp_path)
    assert req_events(r.log)[-3:] == [(7.0, S, 1), (8.0, F, 1), (9.5, D, 1)]
    assert transfers(r.log)[2:] == [(8.0, 1, ("start", 0, 1, 0)), (8.5, 1, ("end", 0, 1, 0))]
    assert r.tables["transfers"]["cached_tokens"].tolist() == [0, 64]


def test_a_hit_on_the_decode_replica_does_not_take_blocks_other_sequences_hold(tmp_path):
    # decode pool of 6 blocks. A (prompt 64, output 6: hash blocks 1, 2; 65 tokens = 5 blocks)
    # lands at 5.5 and decodes 5.5 -> 10.5 holding 5 (its 69 tokens fit). B (the same 64
    # tokens, arriving at 6, first token at 7) needs 5 blocks, 4 of them A's units, which A
    # holds: 1 new block, and 1 is free: its transfer starts at 7 (0 bytes), lands at 7.5 and
    # B joins A's iterations from 7.5 (A's 7.5->8.5 is B's second token). Counting the shared
    # units as needed, B would wait for A's end (10.5).
    r = hashed_run([(0, 64, 6, (1, 2)), (6, 64, 2, (1, 2))], tmp_path, serving={"num_kv_blocks": 6})
    assert transfers(r.log)[2:] == [(7.0, 1, ("start", 0, 1, 0)), (7.5, 1, ("end", 0, 1, 0))]
    assert req_events(r.log)[-2:] == [(8.5, D, 1), (10.5, D, 0)]


def test_a_waiting_transfer_starts_at_the_free_leaving_the_running_rows_their_growth(monkeypatch):
    # 5 blocks of 16 tokens per replica, one transfer at a time (fifo). B (prompt 30, output 6)
    # and A (prompt 16, output 2) prefill 0->1; the decode replica allocates 2 blocks to each
    # (31 and 17 tokens). B's 30·512 B: 1.5 -> 3.375; A's 16·512 B: 3.375 -> 4.375. C (prompt
    # 16) arrives at 2, first token at 3: it needs 2 blocks, 1 is free: it waits. B decodes from
    # 3.375, A joins at 4.375; A's last token at 5.375 frees 2 blocks: B needs 1 for its next
    # token (33 tokens), C takes the other 2 at once: its transfer starts at 5.375 (0.5 + 1.0 s,
    # lands at 6.875) and C decodes 7.375->8.375 beside B, which is never preempted.
    from llmos_sim.serving import disagg

    tries, start = [], disagg.DisaggSystem._start_pending

    def traced(system, j, now, keep=0):  # (time, blocks kept back, transfers waiting before / after)
        before = len(system._pending[j])
        start(system, j, now, keep)
        tries.append((now, keep, before, len(system._pending[j])))

    monkeypatch.setattr(disagg.DisaggSystem, "_start_pending", traced)
    r = run([[0, 30, 6], [0, 16, 2], [2, 16, 2]], serving={"num_kv_blocks": 5, "block_tokens": 16},
            pools={"link": {"sharing": "fifo"}})
    assert (5.375, 1, 1, 0) in tries  # started in A's release, B's next block kept back
    assert [(t, k, s) for t, s, (k, *_) in transfers(r.log)] == [
        (1.0, "start", 0), (1.0, "start", 1), (3.375, "end", 0), (4.375, "end", 1), (5.375, "start", 2),
        (6.875, "end", 2)]
    assert req_events(r.log)[-3:] == [(5.375, D, 1), (8.375, D, 0), (8.375, D, 2)]
    assert r.tables["transfers"].set_index("request")["wait_s"].tolist() == [0.0, 0.0, 2.375]
    assert not [e for e in r.log if e[1] == "req_preempt"]


# -- scope: both (a transfer shares its source's NICs and its destination's NICs) -------------
def test_both_scope_rates_are_max_min_fair_by_progressive_filling():
    from llmos_sim.serving.disagg import FabricState, Transfer

    # A: prefill 0 -> decode 2; B: 0 -> 3; C, D: 1 -> 3; every NIC 6144 B/s. Rising together,
    # decode 3's NIC (B, C, D) fills first at 2048 each; A rises on alone until prefill 0's NIC
    # (A + B) is full: 6144 - 2048 = 4096
    def flows(fair):
        st = FabricState(6144.0, fair)
        st.active = [Transfer(None, s, d - 2, d, 1, 0.0) for s, d in ((0, 2), (0, 3), (1, 3), (1, 3))]
        for x, nbytes in zip(st.active, (8192, 2048, 2048, 4096)):
            x.rem = float(nbytes)
        return st

    st = flows(True)
    assert st.plan() == 1.0 and [x.rate for x in st.active] == [4096.0, 2048.0, 2048.0, 2048.0]
    assert st.due() == st.active[1:3]  # B and C end at 1.0 (D has 2048 B left then)
    st.advance(1.0)
    st.active = [st.active[0], st.active[3]]
    assert st.plan() == 1.0 + 2048 / 6144 and [x.rate for x in st.active] == [6144.0, 6144.0]  # alone on their NICs
    # fifo: in join order, each takes what its two NICs have left: B waits for A (prefill 0),
    # D for C (decode 3)
    st = flows(False)
    st.plan()
    assert [x.rate for x in st.active] == [6144.0, 0.0, 6144.0, 0.0]


@pytest.mark.parametrize("scope,ends", [("source", (2.75, 2.75, 3.375)), ("destination", (2.75, 3.375, 2.75)),
                                        ("both", (2.75, 3.375, 3.375))])
def test_both_scope_shares_the_source_and_the_destination_nics(scope, ends):
    # two prefill and two decode replicas, round robin at both stages: requests 0 (10 tokens)
    # and 2 (20) prefill on replica 0, request 1 (20) on replica 1, 0 -> 1; the decode router
    # sends 0 -> 2, 2 -> 3, 1 -> 2. From 1.5 at 8192 B/s per NIC: 0 and 2 share prefill 0's NIC,
    # 0 and 1 decode 2's. source: 0 and 2 at 4096 (0 ends at 2.75), 1 alone (2.75); 2's last
    # 5120 B alone: 3.375. destination: the same with 1 and 2 swapped. both: each NIC holds
    # two of the three, all move at 4096; 0 ends at 2.75, then 1 and 2 each alone on their
    # NICs with 5120 B left: 3.375
    r = run([[0, 10, 2], [0, 20, 2], [0, 20, 2]], prefill=2, decode=2, pools={"link": {"scope": scope}})
    assert [(s, d[1], d[2]) for t, s, d in transfers(r.log) if d[0] == "start"] == [(0, 0, 2), (2, 0, 3), (1, 1, 2)]
    got = {s: t for t, s, d in transfers(r.log) if d[0] == "end"}
    assert (got[0], got[1], got[2]) == ends


def test_the_config_check_takes_the_both_scope():
    from hydra import compose, initialize_config_dir

    from llmos_sim.validate import check_config

    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        check_config(compose("config", overrides=["experiment=serving_disagg", "topology=disaggregated",
                                                  "topology.link.scope=both"]))


def test_the_kv_managers_release_hook_decides_when_blocks_free():
    from llmos_sim.policies.memory.paged import PagedPool
    from llmos_sim.serving.kv import KVCacheManager

    kv = KVCacheManager(PagedPool(capacity_bytes=8 * 16 * BPT, block_bytes=16 * BPT), BPT)
    assert kv.grow("a", 3) and kv.grow("b", 2) and kv.unheld_blocks == 3
    kept = []
    kv.release_hook = lambda seq, cache_tokens: kept.append(seq) or 0  # keep: free later
    assert kv.release("a") == 0 and kept == ["a"] and kv.unheld_blocks == 3
    assert kv.free_now("a") == 3 and kv.unheld_blocks == 6
    kv.release_hook = None  # no hook: a release frees at once
    assert kv.release("b") == 2 and kv.unheld_blocks == 8
    kv.check()


def test_a_stalled_decode_replica_waits_for_a_landing_instead_of_failing(monkeypatch):
    # 378 blocks of 16 tokens, 1 MB/s, 0.5 s latency; two prefill replicas. B (arrival 0,
    # prompt 6000: 376 blocks) prefills in three 2048-token chunks on replica 0, first token at
    # 3. A (arrival 0.5, prompt 31, output 6) prefills 0.5->1.5 on replica 1 and lands at
    # 1.5 + 0.5 + 31·512 / 1e6 = 2.015872 with 2 blocks; its second decode iteration needs a
    # third. At 3 B's transfer takes the other 376 blocks (3 + 0.5 + 3.072 s: lands at 6.572),
    # so A is preempted at 3.015872 and cannot come back (34 tokens: 3 blocks, 2 free) while
    # B's blocks are held for the transfer: the decode replica waits for B to land. B (first
    # in arrival order) decodes 6.572->7.572 and frees its blocks; A recomputes its 33 known
    # tokens 7.572->8.572 and decodes its last three tokens: it finishes at 11.572.
    rows = [[0, 6000, 2], [0.5, 31, 6]]
    kw = dict(prefill=2, serving={"num_kv_blocks": 378, "block_tokens": 16}, bw=1e6, latency=0.5,
              batching_over={"preemption": "recompute"})
    r = run(rows, **kw)
    assert req_events(r.log)[-3:] == [(3.015872, "req_preempt", 1), (7.572, D, 0), (11.572, D, 1)]
    # without the wait, A stalls behind blocks held for a transfer and fails
    from llmos_sim.serving import disagg

    monkeypatch.setattr(disagg.DisaggSystem, "_landing_event", lambda system, j: None)
    r = run(rows, **kw)
    assert [(s, d[0][:13]) for t, k, s, d in r.log if k == X] == [(1, "unschedulable")]


def test_a_preempted_head_goes_first_the_landed_behind_it_recompute():
    # 6 blocks of 16 tokens on each replica, fifo link at 1024 B/s after 0.5 s. Both prefill at
    # 0 (first tokens at 1); their transfers start at 1 (A: 2 blocks for 17 tokens, B: 4 for 49:
    # the decode pool is full). A (16·512 B) lands at 1.5 + 8 = 9.5, B (48·512 B) after it at
    # 9.5 + 24 = 33.5. A decodes from 9.5 until its 33rd token needs a 3rd block (iteration 17,
    # at 25.5): preempted by recompute, it waits at the head. B lands behind it holding 4
    # blocks; nothing else runs. A goes first (vLLM's waiting queue puts preempted requests at
    # its front): B gives up its blocks and waits to recompute. A recomputes 16 + 17 tokens in
    # 33.5-34.5 (token 18), then decodes 22 more: finishes at 56.5; B then recomputes 49
    # tokens (A's 3 + its 4 blocks did not fit together) and finishes at 57.5
    r = run([[0, 16, 40], [0, 48, 2]], bw=1024.0, serving={"num_kv_blocks": 6},
            pools={"link": {"sharing": "fifo"}})
    assert transfers(r.log) == [(1.0, 0, ("start", 0, 1, 16 * BPT)), (1.0, 1, ("start", 0, 1, 48 * BPT)),
                                (9.5, 0, ("end", 0, 1, 16 * BPT)), (33.5, 1, ("end", 0, 1, 48 * BPT))]
    ev = [(t, k, s) for t, k, s in req_events(r.log) if k in ("req_preempt", D, X)]
    assert ev == [(25.5, "req_preempt", 0), (33.5, "req_preempt", 1), (56.5, D, 0), (57.5, D, 1)]


@pytest.mark.parametrize("hash_tokens, a_computes, units, evicted", [(64, 0, set(), 0), (32, 0, {7}, 0),
                                                                   (16, 17, {5, 7, 8, 9}, 1)])
def test_a_landed_request_that_yields_takes_back_what_the_decode_replicas_cache_kept(tmp_path, hash_tokens,
                                                                                     a_computes, units, evicted):
    # The story above with prefix caching on (6 blocks of 16 tokens per replica), the same
    # events at the same times: A (prompt 16) is preempted at 25.5 holding 2 blocks (17
    # tokens); B lands at 33.5 holding 4 (49 tokens) and yields, A takes B's blocks, B returns
    # at 56.5. Which blocks each finds cached on its return:
    # - 64-token hash blocks: neither has a whole one, both unhashed; each freed its blocks
    #   into the free queue, tail first. A takes its 2 back (32 cached tokens: its 33rd comes
    #   as a decode row); its 3rd and 4th blocks (at 33.5 and 49.5) take the first two of B's
    #   from the queue's head (the 49th token's block, then tokens 32-47): B finds its tokens
    #   0-31 and computes 17 of its 49, not 49.
    # - 32-token hash blocks: A unhashed as above; B hashed (key 7: tokens 0-31). Its unit
    #   goes to the cache's LRU list, its 2 private blocks to the free queue; A's growth takes
    #   plain free blocks (a unit is evicted only when none is left), so B references key 7
    #   on its return: 32 tokens hit, 17 computed.
    # - 16-token hash blocks: both hashed (A: key 5; B: 7, 8, 9), every unit one block. A's
    #   preemption returns key 5 to the cache and frees its private block (tokens 16-31): on
    #   its return it hits 16 tokens and computes 17. Its 4th block (at 49.5) finds no plain
    #   free block and evicts the least recently used unit, B's tail unit (9): B hits keys 7
    #   and 8, computes 17, and caches key 9 again.
    import json

    path = tmp_path / "t.jsonl"
    b_hashes = {16: (7, 8, 9), 32: (7, 8), 64: (7,)}[hash_tokens]
    rows = [(0, 16, 40, (5,)), (0, 48, 2, b_hashes)]
    path.write_text("".join(json.dumps({"timestamp": t * 1000, "input_length": n, "output_length": o,
                                        "hash_ids": list(h)}) + "\n" for t, n, o, h in rows))
    wl = {"_target_": "llmos_sim.workload.mooncake.MooncakeTrace", "path": str(path), "block_tokens": hash_tokens}
    r = run(None, workload=wl, bw=1024.0, serving={"num_kv_blocks": 6, "block_tokens": 16, "prefix_caching": True},
            pools={"link": {"sharing": "fifo"}})
    ev = [(t, k, s) for t, k, s in req_events(r.log) if k in ("req_preempt", D, X)]
    assert ev == [(25.5, "req_preempt", 0), (33.5, "req_preempt", 1), (56.5, D, 0), (57.5, D, 1)]
    # (B waits with a hit on its evictable units from 33.5, so no decode span runs meanwhile)
    dec = [(t, d[0]) for t, k, s, d in r.log if k == E.BATCH and s == 1 and t in (33.5, 56.5)]
    assert dec == [(33.5, a_computes), (56.5, 17)]  # prompt tokens computed: A's return, B's (49 − 32)
    kv = r.extra["replicas"][1].kv
    assert (set(kv._table), kv.n_evicted_units) == (units, evicted)


def test_static_batching_counts_a_landed_requests_blocks_as_its_own():
    # 4 blocks of 16 tokens, static batching. A (prompt 16, output 40) prefills 0->1 and its
    # 16·512 B land at 1 + 0.5 + 8 = 9.5 with the 2 blocks of its 17 known tokens; its largest
    # size (55 tokens: 4 blocks) is those 2 plus the 2 free: the batch forms at once and it
    # decodes its 39 other tokens, finishing at 48.5 (counting its 2 held blocks against the
    # free ones failed it as unschedulable)
    r = run([[0, 16, 40]], bw=1024.0, batching="static", serving={"num_kv_blocks": 4})
    assert [(t, k, s) for t, k, s in req_events(r.log) if k in (D, X)] == [(48.5, D, 0)]


def test_a_landed_head_goes_first_the_landed_behind_it_recompute():
    # 6 blocks of 16 tokens, static batching, fifo link at 1024 B/s after 0.5 s. A (prompt 16,
    # output 40: 4 blocks at its largest) and B (prompt 48, output 2: 4 blocks) prefill 0->1;
    # their transfers take 2 and 4 blocks at 1: A lands at 9.5 and waits for B's transfer (its
    # batch needs 2 more blocks), B lands at 33.5. Each holds its prompt's blocks and A needs
    # two more: A, first, goes first: B gives up its blocks to recompute, A's batch decodes 39
    # tokens 33.5->72.5, then B recomputes its 49 known tokens 72.5->73.5 and finishes
    r = run([[0, 16, 40], [0, 48, 2]], bw=1024.0, batching="static", serving={"num_kv_blocks": 6},
            pools={"link": {"sharing": "fifo"}})
    assert transfers(r.log)[2:] == [(9.5, 0, ("end", 0, 1, 16 * BPT)), (33.5, 1, ("end", 0, 1, 48 * BPT))]
    ev = [(t, k, s) for t, k, s in req_events(r.log) if k in ("req_preempt", D, X)]
    assert ev == [(33.5, "req_preempt", 1), (72.5, D, 0), (73.5, D, 1)]


def test_a_stalled_replica_empties_a_caching_pools_cache_before_failing_its_head():
    """A caching allocator keeps freed segments reserved: with nothing held, 3 cached 30-block
    segments serve at most 30 blocks without emptying the cache, though all 100 are free.
    A stalled replica empties it (as the allocator's own failed allocation would) before it
    fails a head as unschedulable."""
    from llmos_sim.policies.memory.caching import CachingPool
    from llmos_sim.run import compose
    from llmos_sim.serving.kv import KVCacheManager

    mib = 1 << 20
    k = KVCacheManager(CachingPool(100 * mib), mib // 16, 16)  # 1 MiB blocks
    for s in "ABC":
        assert k.grow(s, 30)
    for s in "ABC":
        k.release(s)
    assert (k.unheld_blocks, k.free_blocks) == (100, 30)
    assert k.empty_pool_cache() and k.free_blocks == 100
    assert not k.empty_pool_cache()  # nothing left cached
    # a stress draw whose prefill replica failed three requests (1,205-1,773 blocks) as
    # unschedulable with all 28,252 blocks free, 519 of them served without emptying the cache
    ov = ["mode=serving", "batching=chunked_prefill", "memory=caching", "seed=39", "output.plots=false",
          "workload=mooncake_synthetic", "workload.max_requests=40", "batching.preemption=swap",
          "serving.host_kv_bytes=100000000", "topology=disaggregated", "topology.prefill.replicas=1",
          "topology.decode.replicas=2", "topology.link.bw_bytes_s=1000000.0", "topology.link.sharing=fair",
          "topology.link.scope=pair"]
    res = simulate(compose(ov), seed=39)
    fails = [d[0] for _, kind, _, d in res.log if kind == E.REQ_FAIL]
    assert not [f for f in fails if f.startswith("unschedulable")]
    assert len([1 for _, kind, _, _ in res.log if kind == E.REQ_FINISH]) + len(fails) == 40


def test_a_stalled_replica_empties_a_caching_pools_cache_once_then_fails_its_head():
    """A request the caching pool can never hold, though its blocks fit: 40 KV blocks of
    2 MiB (80 MiB), prefix caching on, request 11 (prompt 546 tokens, output 78: 39 blocks at
    its largest) first takes its whole hash block's unit, 32 blocks in one 64 MiB segment,
    then asks for its other blocks (6 MiB), which need a new 20 MiB segment: 16 MiB are left,
    so the allocation is refused and the row gives its blocks back, the 64 MiB segment
    staying cached. Emptying that cache and deciding again repeats the same refusal, so the
    stalled replica empties it once per stall and then fails the head (emptying it after
    every refusal ran for ever)."""
    from llmos_sim.run import compose
    from llmos_sim.stress import cpu_limit

    ov = ["mode=serving", "batching=static", "memory=caching", "router=round_robin", "seed=691",
          "output.plots=false", "workload=mooncake_synthetic", "workload.max_requests=40", "workload.rate_scale=1.0",
          "serving.replicas=2", "serving.num_kv_blocks=40", "batching.preemption=recompute",
          "serving.prefix_caching=true", "serving.host_kv_bytes=null"]
    with cpu_limit(30.0):  # (the stress check's hang limit: 0.4 CPU-s here)
        res = simulate(compose(ov), seed=691)
    arrive = {s: d[1:] for _, kind, s, d in res.log if kind == E.REQ_ARRIVE}
    fails = [(s, d[0]) for _, kind, s, d in res.log if kind == E.REQ_FAIL]
    assert [(s, arrive[s], why) for s, why in fails if why.startswith("unschedulable")] == [
        (11, (546, 78), "unschedulable: needs 35 KV blocks, the empty CachingPool grants at most 32 of its 40 at once")]
    assert len(fails) == 26 and {why.split(":")[0] for _, why in fails} == {"kv_too_small", "unschedulable"}
    assert len([1 for _, kind, _, _ in res.log if kind == E.REQ_FINISH]) == 14


def test_a_buddy_pool_of_40_blocks_holds_no_prompt_of_33_to_40_blocks():
    """Why disaggregated stress draws with the buddy pool fail prompts as unschedulable: not a
    bug. 40 KV blocks of 2 MiB (Llama-3.1-8B: 128 KiB per token, 16 tokens) are 80 MiB, which
    a buddy allocator covers with two top-level blocks, 64 MiB and 16 MiB (32 and 8 KV
    blocks). A pool other than the paged one takes each admission's blocks in one allocation,
    so a prompt of 33-40 blocks (513-640 tokens) can never be placed, though it is within
    the 40 blocks ``can_ever_fit`` counts: the empty pool offers 32 (``free_blocks``), and the
    replica fails it as unschedulable once nothing else runs. The paged pool takes them."""
    from llmos_sim.policies.memory.buddy import BuddyPool
    from llmos_sim.run import compose
    from llmos_sim.serving.kv import KVCacheManager

    mib = 1 << 20
    k = KVCacheManager(BuddyPool(80 * mib), 128 * 1024, 16)
    assert (k.total_blocks, k.free_blocks) == (40, 32)
    assert not k.grow("a", 33) and k.grow("a", 32) and k.free_blocks == 8
    # the stress draw: its three unschedulable requests have prompts of 617, 640 and 606
    # tokens (39, 40 and 38 blocks; continuous batching admits a prompt whole; output 1 on a
    # prefill replica); the four kv_too_small ones need 41-47 blocks at their largest
    ov = ["mode=serving", "batching=continuous", "router=least_kv", "seed=735", "output.plots=false",
          "workload=requests_synthetic", "workload.n=10", "workload.rate_per_s=50.0", "workload.output_max=16",
          "serving.num_kv_blocks=40", "batching.preemption=recompute", "serving.host_kv_bytes=100000000",
          "topology=disaggregated", "topology.prefill.replicas=2", "topology.decode.replicas=2",
          "topology.link.bw_bytes_s=1000000.0", "topology.link.sharing=fair", "topology.link.scope=pair"]

    def fails(memory, whole=False):
        res = simulate(compose(ov + [f"memory={memory}"]), seed=735)
        prompt = {s: d[1] for _, kind, s, d in res.log if kind == E.REQ_ARRIVE}
        return sorted((d[0] if whole else d[0].split(":")[0], s, prompt[s])
                      for _, kind, s, d in res.log if kind == E.REQ_FAIL)

    too_small = [("kv_too_small", 3, 694), ("kv_too_small", 5, 748), ("kv_too_small", 6, 731), ("kv_too_small", 9, 651)]
    assert fails("buddy") == too_small + [("unschedulable", 1, 617), ("unschedulable", 4, 640),
                                          ("unschedulable", 7, 606)]
    buddy = "unschedulable: needs {} KV blocks, the empty BuddyPool grants at most 32 of its 40 at once"
    assert [f for f in fails("buddy", whole=True) if f[0].startswith("unsch")] == [
        (buddy.format(38), 7, 606), (buddy.format(39), 1, 617), (buddy.format(40), 4, 640)]
    # paged: requests 1 and 7 finish; request 4 prefills and fails at its first token, as its
    # 655 tokens at their largest need 41 blocks on the decode replica
    assert fails("paged") == sorted(too_small + [("kv_too_small", 4, 640)])
