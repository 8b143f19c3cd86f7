"""vLLM-fidelity details: admissions see the blocks the running rows take first, async
scheduling frees finished sequences' blocks one decision late, and the per-operator roofline's
exact formula."""
from __future__ import annotations

import numpy as np
import pytest

from llmos_sim.policies.batching import ChunkedPrefill
from llmos_sim.policies.memory import IdealPool
from llmos_sim.serving import simulate
from llmos_sim.serving.cost import BatchShape, OperatorRooflineCost, RooflineCost
from llmos_sim.serving.kv import KVCacheManager
from llmos_sim.serving.specs import H100, LLAMA31_8B, RTX4090
from llmos_sim.serving.view import ReplicaView, SeqTable, WaitingSeq
from .helpers import make_cfg, req_events

BPT = 512
S, F, D = "req_schedule", "req_first_token", "req_finish"


def _view(rows, waiting, free_blocks, total=100):
    tab = SeqTable()
    tab.append(rows)
    kv = KVCacheManager(IdealPool(total * 16 * BPT), BPT, 16)
    kv.grow("other", total - free_blocks)
    return ReplicaView(0.0, tab, waiting, kv)


def _decoding(rid, admit):  # 16 tokens computed in 1 block: its next token needs a second block
    return (rid, 15, 10, 16, 2, 1, admit, 0, 10, 0.0, False)


@pytest.mark.parametrize("free, admitted", [(3, False), (4, True)])
def test_admission_sees_the_blocks_running_rows_take(free, admitted):
    # two decodes take a block each this iteration; the 32-token prompt needs 2 more
    v = _view([_decoding(0, 0), _decoding(1, 1)], [WaitingSeq(2, 32, 5, 0.0)], free_blocks=free)
    d = ChunkedPrefill(reserve_full_prompt=True).next_batch(v)
    assert d.tokens.tolist() == [1, 1] and not d.preempt
    assert d.admit == (((0, 32),) if admitted else ())


@pytest.mark.parametrize("per_iteration", [False, True])
@pytest.mark.parametrize("async_scheduling", [False, True])
def test_async_scheduling_frees_finished_blocks_after_the_next_decision(async_scheduling, per_iteration):
    # 3 blocks of 16 tokens; 1 s per iteration. t0: req0 (16 tokens, 1 output) and req1 (8, 4)
    # prefill, one block each; t1: req0 is done. req2 (32 tokens: 2 blocks) arrived at 0.5.
    rows = [[0, 16, 1], [0, 8, 4], [0.5, 32, 1]]
    r = simulate(make_cfg(rows, serving={"num_kv_blocks": 3, "async_scheduling": async_scheduling,
                                         "per_iteration_records": per_iteration},
                          batching_over={"reserve_full_prompt": True}), seed=0)
    # sync: req0's block is free for the decision at 1, req2 joins req1's decode then.
    # async: the decision at 1 still sees it held (req0's output is processed while iteration
    # 1 runs), so req2 waits one iteration; req1 is unaffected.
    t2 = 2.0 if async_scheduling else 1.0
    assert req_events(r.log) == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, D, 0), (t2, S, 2),
                                 (t2 + 1, F, 2), (t2 + 1, D, 2), (4.0, D, 1)]


def test_operator_roofline_exact_formula():
    c = OperatorRooflineCost(LLAMA31_8B, RTX4090, mfu=0.8, mbu=0.9, overhead_s=0.001, per_seq_s=1e-4, attn_mbu=0.5)
    m = LLAMA31_8B
    # a mixed batch: a 512-token chunk after 1000 cached tokens, and 30 decodes over 30,000 tokens
    n, ctx = 512, 1000
    b = BatchShape(n_prefill_tokens=n, prefill_attn_pairs=n * ctx + n * (n + 1) // 2, prefill_ctx_tokens=ctx + n,
                   n_decode_tokens=30, decode_ctx_tokens=30_000, n_seqs=31, n_logits=31)
    gemm = 2 * m.layers * m.layer_params * (n + 30) + 2 * m.vocab * m.hidden * 31
    attn = 4 * m.layers * m.hidden * (b.prefill_attn_pairs + 30_000)
    kv = m.kv_bytes_per_token * (ctx + n + 30_000 + n + 30)
    want = (max(gemm / (RTX4090.flops * 0.8), m.matmul_params * m.dtype_bytes / (RTX4090.mem_bw_bytes_s * 0.9))
            + max(attn / (RTX4090.flops * 0.8), kv / (RTX4090.mem_bw_bytes_s * 0.5)) + 0.001 + 31e-4)
    assert c.iteration_s(b) == pytest.approx(want, rel=1e-12)
    # here the GEMMs are compute-bound and the attention memory-bound: the one-max roofline hides the KV reads
    assert c.iteration_s(b) > RooflineCost(LLAMA31_8B, RTX4090, mfu=0.8, mbu=0.9, overhead_s=0.001,
                                           per_seq_s=1e-4).iteration_s(b)


def test_operator_roofline_equals_roofline_for_pure_batches():
    kw = dict(mfu=0.7, mbu=0.8, overhead_s=0.002)
    op, one = OperatorRooflineCost(LLAMA31_8B, H100, **kw), RooflineCost(LLAMA31_8B, H100, **kw)
    decode = BatchShape(n_decode_tokens=8, decode_ctx_tokens=8000, n_seqs=8, n_logits=8)
    n = 4096
    prefill = BatchShape(n_prefill_tokens=n, prefill_attn_pairs=n * (n + 1) // 2, prefill_ctx_tokens=n, n_seqs=1,
                         n_logits=1)
    for b in (decode, prefill):
        assert op.iteration_s(b) == pytest.approx(one.iteration_s(b), rel=1e-12)
    assert op.iteration_s(BatchShape()) == 0.0


@pytest.mark.parametrize("cost", [OperatorRooflineCost(LLAMA31_8B, RTX4090, attn_mbu=0.4),
                                  OperatorRooflineCost(LLAMA31_8B, H100, mfu=0.01, per_seq_s=1e-4)])
def test_operator_roofline_spans_agree_with_iterations(cost):
    for n, ctx, k, g in [(4, 1000, 3, 4), (32, 40_000, 50, 31), (200, 400_000, 20, 200)]:
        one = [cost.iteration_s(BatchShape(0, 0, 0, n, ctx + j * g, n, n)) for j in range(k)]
        assert np.allclose(cost.decode_span_s(n, ctx, k, g), one, rtol=1e-12)
        lines = cost.decode_lines(n, ctx, g)
        assert np.allclose([max(a + b_ * j for a, b_ in lines) for j in range(k)], one, rtol=1e-12)


@pytest.mark.parametrize("per_iteration", [False, True])
@pytest.mark.parametrize("async_scheduling", [False, True])
def test_async_scheduling_admits_a_request_one_decision_late(async_scheduling, per_iteration):
    # 1 s per iteration. req0 (8 tokens, 6 outputs) runs alone from 0 (decode spans when
    # fast-forwarding). req1 arrives at 0.5, during iteration 0: the decision at 1 was vLLM's
    # decision for iteration 1, taken while iteration 0 ran, so req1 first joins at 2.
    # req2 arrives at 6.5, when nothing is running (req0 finished at 6): no step was in
    # flight, so it starts at once (the replica is idle, as vLLM would be).
    rows = [[0, 8, 6], [0.5, 8, 2], [6.5, 8, 1]]
    r = simulate(make_cfg(rows, serving={"async_scheduling": async_scheduling, "per_iteration_records": per_iteration}),
                 seed=0)
    t1 = 2.0 if async_scheduling else 1.0
    ev = req_events(r.log)
    assert [e for e in ev if e[2] == 1] == [(t1, S, 1), (t1 + 1, F, 1), (t1 + 2, D, 1)]
    assert [e for e in ev if e[2] == 0] == [(0.0, S, 0), (1.0, F, 0), (6.0, D, 0)]
    assert [e for e in ev if e[2] == 2] == [(6.5, S, 2), (7.5, F, 2), (7.5, D, 2)]


def test_async_admission_keeps_every_request_and_runs_later_not_earlier():
    """Property over a random trace: with async scheduling no request is lost or starts earlier
    than it arrived, and on an unloaded replica each starts at most two iterations after it arrived."""
    rng = np.random.default_rng(3)
    arr = np.sort(rng.uniform(0, 40, 30)).round(3)
    rows = [[float(a), int(rng.integers(4, 40)), int(rng.integers(1, 8))] for a in arr]
    r = simulate(make_cfg(rows, serving={"async_scheduling": True}), seed=0)
    sched = {e[2]: e[0] for e in req_events(r.log) if e[1] == S}
    assert sorted(sched) == list(range(len(rows)))
    for i, (a, _, _) in enumerate(rows):
        assert a <= sched[i] <= a + 2.0 + 1e-9
