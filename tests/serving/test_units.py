"""Units: KV block accounting, cost model numbers, routers, batching decisions on hand-built
views, fast-forward equivalence and determinism."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmos_sim.policies.batching import ChunkedPrefill, ContinuousBatching, OrcaBatching
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.memory.paged import PagedPool
from llmos_sim.policies.routing import LeastKV, LeastOutstanding, ReplicaLoad, RoundRobin
from llmos_sim.serving import simulate
from llmos_sim.serving.cost import BatchShape, LinearCost, MeasuredCost, RooflineCost
from llmos_sim.serving.kv import KVCacheManager, make_pool
from llmos_sim.serving.specs import H100, LLAMA31_8B, LLAMA3_70B, RTX4090
from llmos_sim.serving.view import ReplicaView, SeqTable, WaitingSeq
from .helpers import make_cfg

BPT = 512  # tiny model: bytes of KV per token


@pytest.mark.parametrize("pool_cls", [IdealPool, PagedPool])
def test_block_boundaries(pool_cls):
    pool = make_pool(pool_cls, 10 * 16 * BPT, 16 * BPT)
    kv = KVCacheManager(pool, BPT, 16)
    assert [kv.blocks_for(n) for n in (0, 1, 15, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]
    assert kv.max_blocks(16, 1) == 1 and kv.max_blocks(16, 2) == 2  # the last token is never cached
    assert kv.total_blocks == 10
    assert kv.grow("a", 1) and kv.grow("a", 2) and kv.grow("b", 7)
    assert kv.free_blocks == 0 and not kv.grow("b", 1)
    assert pool.stats().allocated_bytes == 10 * 16 * BPT == kv.used_bytes
    assert kv.release("a") == 3 and kv.free_blocks == 3 and kv.held_blocks("b") == 7
    assert kv.release("b") == 7 and pool.stats().n_live == 0 and kv.used_bytes == 0


def test_paged_pool_gets_the_kv_block_size():
    import functools
    pool = make_pool(functools.partial(PagedPool, block_bytes=262144), 100 * 8192, 8192)
    assert pool.block_bytes == 8192 and pool.n_blocks == 100


def test_model_sizes():
    assert LLAMA31_8B.params == pytest.approx(8.03e9, rel=0.002)
    assert LLAMA3_70B.params == pytest.approx(70.55e9, rel=0.002)
    assert LLAMA31_8B.kv_bytes_per_token == 131072 and LLAMA3_70B.kv_bytes_per_token == 327680


def test_roofline_decode_is_memory_bound_and_prefill_compute_bound():
    c = RooflineCost(LLAMA31_8B, H100, mfu=1.0, mbu=1.0, overhead_s=0.0)
    w = LLAMA31_8B.matmul_params * 2
    # one decode token at context 0: the weights (+ one token's KV) over the bandwidth
    t = c.iteration_s(BatchShape(n_decode_tokens=1, decode_ctx_tokens=1, n_seqs=1, n_logits=1))
    assert t == pytest.approx((w + 2 * 131072) / 3.35e12)
    # 8192 prefill tokens: compute bound, 2 FLOPs per parameter per token + attention
    n = 8192
    b = BatchShape(n_prefill_tokens=n, prefill_attn_pairs=n * (n + 1) // 2, prefill_ctx_tokens=n, n_seqs=1, n_logits=1)
    flops = 2 * 32 * LLAMA31_8B.layer_params * n + 2 * 128256 * 4096 + 4 * 32 * 4096 * n * (n + 1) // 2
    assert c.iteration_s(b) == pytest.approx(flops / 989.4e12)
    # spans agree with single iterations
    span = c.decode_span_s(4, 1000, 3)
    one = [c.iteration_s(BatchShape(0, 0, 0, 4, 1000 + 4 * j, 4, 4)) for j in range(3)]
    assert np.allclose(span, one)


def test_tensor_parallel_adds_allreduce_and_splits_work():
    c1 = RooflineCost(LLAMA3_70B, H100, tp=1, overhead_s=0.0)
    c4 = RooflineCost(LLAMA3_70B, H100, tp=4, overhead_s=0.0, allreduce_latency_s=0.0)
    b = BatchShape(n_decode_tokens=8, decode_ctx_tokens=8000, n_seqs=8, n_logits=8)
    ar = 2 * 80 * 2 * 3 / 4 * 8192 * 2 * 8 / H100.link_bw_bytes_s
    assert c4.iteration_s(b) == pytest.approx(c1.iteration_s(b) / 4 + ar)


def test_measured_and_linear_costs():
    m = MeasuredCost([1, 100], [0.01, 0.02], per_ctx_token_s=1e-6)
    assert m.iteration_s(BatchShape(n_decode_tokens=50, decode_ctx_tokens=1000)) == pytest.approx(0.01 + 0.01 * 49 / 99 + 1e-3)
    assert LinearCost(0.5, 0.001, 0.01).iteration_s(BatchShape(n_prefill_tokens=100, n_decode_tokens=2)) == 0.62


def test_routers():
    loads = [ReplicaLoad(0, 5, 0.9, 1), ReplicaLoad(1, 2, 0.5, 3), ReplicaLoad(2, 2, 0.1, 0)]
    rr = RoundRobin()
    assert [rr.route(None, loads) for _ in range(4)] == [0, 1, 2, 0]
    assert LeastOutstanding().route(None, loads) == 1
    assert LeastKV().route(None, loads) == 2


def _view(running_rows, waiting, free_blocks, total=100):
    tab = SeqTable()
    tab.append(running_rows)
    pool = IdealPool(total * 16 * BPT)
    kv = KVCacheManager(pool, BPT, 16)
    if total - free_blocks:
        kv.grow("other", total - free_blocks)
    return ReplicaView(0.0, tab, waiting, kv)


def row(rid, prompt, output, computed, generated, blocks, admit):
    return (rid, prompt, output, computed, generated, blocks, admit, 0, output, 0.0, False)


def test_chunked_budget_goes_to_running_first_then_chunks():
    v = _view([row(0, 100, 10, 100, 1, 7, 0), row(1, 300, 10, 200, 0, 13, 1)],
              [WaitingSeq(2, 500, 5, 0.0), WaitingSeq(3, 10, 5, 0.0)], free_blocks=50)
    d = ChunkedPrefill(max_num_batched_tokens=150).next_batch(v)
    assert d.tokens.tolist() == [1, 100] and d.admit == ((0, 49),) and not d.preempt


def test_reserve_full_prompt_blocks_admission():
    v = _view([], [WaitingSeq(0, 1000, 5, 0.0)], free_blocks=20)  # 1000 tokens = 63 blocks
    assert ChunkedPrefill(max_num_batched_tokens=256).next_batch(v).admit == ((0, 256),)
    assert ChunkedPrefill(max_num_batched_tokens=256, reserve_full_prompt=True).next_batch(v).admit == ()


def test_preempts_latest_admitted_until_growth_fits():
    # three decoding rows each at a block boundary need one block each; one block is free
    rows = [row(i, 16, 10, 16, 1, 1, i) for i in range(3)]
    d = OrcaBatching().next_batch(_view(rows, [], free_blocks=1))
    assert d.preempt == (2,) and d.tokens.tolist() == [1, 1, 0]
    d = OrcaBatching().next_batch(_view(rows, [], free_blocks=0))
    assert d.preempt == (2, 1) and d.tokens.tolist() == [1, 0, 0]


def test_continuous_watermark_and_prefill_first():
    v = _view([row(0, 16, 10, 16, 1, 1, 0)], [WaitingSeq(1, 32, 5, 0.0)], free_blocks=3)
    d = ContinuousBatching(watermark=0.01).next_batch(v)  # 2 blocks + 1 watermark block fit in 3
    assert d.admit == ((0, 32),) and d.tokens.tolist() == [0]
    v = _view([row(0, 16, 10, 16, 1, 1, 0)], [WaitingSeq(1, 32, 5, 0.0)], free_blocks=2)
    d = ContinuousBatching(watermark=0.01).next_batch(v)
    assert d.admit == () and d.tokens.tolist() == [1]


SYN = {"_target_": "llmos_sim.workload.requests.SyntheticRequests", "n": 150, "rate_per_s": 30.0,
       "prompt_min": 16, "prompt_max": 600, "output_min": 1, "output_max": 300}
ROOF = {"_target_": "llmos_sim.serving.cost.RooflineCost", "_partial_": True, "mfu": 0.5, "mbu": 0.7, "overhead_s": 0.003}


@pytest.mark.parametrize("batching", ["static", "orca", "continuous", "chunked_prefill"])
def test_fast_forward_changes_no_request_event(batching):
    def go(ff):
        cfg = make_cfg(workload=SYN, batching=batching, cost=ROOF, model="llama31_8b", gpu="rtx4090",
                       serving={"num_kv_blocks": 600, "fast_forward": ff, "replicas": 2},
                       router="least_outstanding")
        return simulate(cfg, seed=3)
    a, b = go(True), go(False)
    ra, rb = a.tables["requests"], b.tables["requests"]
    assert ra["finish_s"].notna().all()
    for col in ("schedule_s", "first_token_s", "finish_s"):
        assert np.allclose(ra[col], rb[col], rtol=1e-9, atol=1e-9), col
    assert ra["preemptions"].tolist() == rb["preemptions"].tolist()
    assert a.summary["n_iterations"] == b.summary["n_iterations"]
    assert a.summary["n_batch_records"] <= b.summary["n_batch_records"]


def test_same_seed_same_tables():
    cfg = make_cfg(workload=SYN, cost=ROOF, model="llama31_8b", serving={"num_kv_blocks": 300})
    a, b = simulate(cfg, seed=5), simulate(cfg, seed=5)
    pd.testing.assert_frame_equal(a.tables["requests"], b.tables["requests"])
    assert a.log.records == b.log.records
    assert simulate(cfg, seed=6).log.records != a.log.records


def test_summary_metrics():
    r = simulate(make_cfg([[0, 10, 3], [0, 10, 1]], "orca", serving={"num_kv_blocks": 10, "slo_ttft_s": 1.0,
                                                                     "slo_tpot_s": 0.5}), seed=0)
    s = r.summary
    # one iteration of prefill (both), then request 0 decodes twice; each iteration 1 s
    assert s["makespan_s"] == 3.0 and s["throughput_tok_s"] == pytest.approx(4 / 3)
    assert s["goodput_req_s"] == pytest.approx(1 / 3)  # request 0 misses TPOT 0.5 s; request 1 has none
    assert s["ttft_s_mean"] == 1.0 and s["n_iterations"] == 3
