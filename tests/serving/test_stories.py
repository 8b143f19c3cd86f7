"""Story tests: tiny runs with hand-computed iteration schedules (every iteration takes 1 s).

Token rule: a request with prompt P and output O needs its P prompt tokens computed (in one
or more chunks), which emits token 1 at the end of that iteration, then O-1 decode
iterations. Tiny model: 16-token blocks of 8 KiB (512 B per token).
"""
from __future__ import annotations

import pytest

from llmos_sim.serving import simulate
from .helpers import batches, make_cfg, req_events

S, F, D, P, X = "req_schedule", "req_first_token", "req_finish", "req_preempt", "req_fail"
ROWS = [[0, 20, 3], [0, 10, 2], [1, 5, 4]]  # (arrival_s, prompt, output)


def run(rows, batching, **kw):
    kw.setdefault("serving", {"num_kv_blocks": 100})
    return simulate(make_cfg(rows, batching, **kw), seed=0)


@pytest.mark.parametrize("per_iteration", [False, True])
def test_static_batching_runs_batch_to_its_longest_member(per_iteration):
    r = run(ROWS, "static", serving={"num_kv_blocks": 100, "per_iteration_records": per_iteration})
    # t0 batch {0,1} prefills; 1: first tokens; 2: req1 done (slot held); 3: req0 done, batch ends;
    # req2 (arrived at 1) waits for the batch: prefill 3->4, decodes 4->7
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (2.0, D, 1), (3.0, D, 0),
        (3.0, S, 2), (4.0, F, 2), (7.0, D, 2)]
    b = batches(r.log)
    assert b[:4] == [(0.0, 30, 0, 2, 1.0), (1.0, 0, 2, 2, 1.0), (2.0, 0, 2, 2, 1.0), (3.0, 5, 0, 1, 1.0)]
    req = r.tables["requests"].set_index("request")
    assert req.loc[2, "ttft_s"] == 3.0 and req.loc[2, "tpot_s"] == 1.0 and req.loc[2, "queue_s"] == 2.0
    assert r.summary["n_iterations"] == 7


def test_orca_joins_new_prompts_to_running_decodes():
    r = run(ROWS, "orca")
    # t1: req2 joins with its whole prompt while 0,1 decode; t3->5 req2 decodes alone (one span)
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, S, 2), (2.0, F, 2), (2.0, D, 1),
        (3.0, D, 0), (5.0, D, 2)]
    assert batches(r.log) == [(0.0, 30, 0, 2, 1.0), (1.0, 5, 2, 3, 1.0), (2.0, 0, 2, 2, 1.0)]
    assert r.summary["n_iterations"] == 5


def test_continuous_prefill_iterations_pause_decodes():
    r = run(ROWS, "continuous")
    # t1: a prefill-only iteration for req2 (0 and 1 wait), then everybody decodes
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, S, 2), (2.0, F, 2), (3.0, D, 1),
        (4.0, D, 0), (5.0, D, 2)]
    assert batches(r.log)[:3] == [(0.0, 30, 0, 2, 1.0), (1.0, 5, 0, 1, 1.0), (2.0, 0, 3, 3, 1.0)]
    req = r.tables["requests"].set_index("request")
    assert req.loc[0, "tpot_s"] == 1.5 and req.loc[1, "tpot_s"] == 2.0


def test_chunked_prefill_splits_prompts_by_token_budget():
    r = run([[0, 20, 2], [0, 6, 2]], "chunked_prefill", batching_over={"max_num_batched_tokens": 8})
    # t0: 8 of req0; t1: 8 more; t2: last 4 of req0 + first 4 of req1; t3: req0 decode + last 2 of req1
    assert req_events(r.log) == [
        (0.0, S, 0), (2.0, S, 1), (3.0, F, 0), (4.0, F, 1), (4.0, D, 0), (5.0, D, 1)]
    assert batches(r.log) == [(0.0, 8, 0, 1, 1.0), (1.0, 8, 0, 1, 1.0), (2.0, 8, 0, 2, 1.0),
                              (3.0, 2, 1, 2, 1.0), (4.0, 0, 1, 1, 1.0)]


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_preemption_when_decode_growth_does_not_fit(mode):
    # 3 blocks of 16 tokens. A and B (16-token prompts) take one block each; their first
    # decode needs a second block each: only one is free, so B (admitted last) is preempted.
    r = run([[0, 16, 3], [0, 16, 3]], "chunked_prefill", batching_over={"preemption": mode},
            serving={"num_kv_blocks": 3})
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, P, 1), (3.0, D, 0), (5.0, D, 1)]
    pre = [d for t, k, s, d in r.log if k == P]
    assert pre == [(0, mode)]
    b = batches(r.log)
    # t2: B cannot come back (needs 2 blocks, 1 free) until A finishes at 3
    assert b[1] == (1.0, 0, 1, 1, 1.0) and b[2] == (2.0, 0, 1, 1, 1.0)
    # t3: B returns: recompute = 17 prompt+generated tokens as prefill; swap = its decode token
    assert b[3] == ((3.0, 17, 0, 1, 1.0) if mode == "recompute" else (3.0, 0, 1, 1, 1.0))
    assert r.tables["requests"].set_index("request").loc[1, "preemptions"] == 1
    assert r.summary["n_finished"] == 2


@pytest.mark.parametrize("batching", ["static", "orca", "continuous", "chunked_prefill"])
def test_too_small_cache_fails_what_never_fits_and_serves_the_rest(batching):
    # 2 blocks = 32 tokens: request 1 needs 40+2-1 = 41 tokens (3 blocks) and can never run
    rows = [[0, 10, 3], [0, 40, 2], [0, 12, 4], [0.5, 20, 5]]
    r = run(rows, batching, serving={"num_kv_blocks": 2})
    req = r.tables["requests"].set_index("request")
    assert req.loc[1, "fail_reason"].startswith("kv_too_small")
    assert req["finish_s"].notna().sum() == 3
    assert r.summary["n_failed"] == 1


@pytest.mark.parametrize("prompt,output,fits", [(16, 1, True), (15, 2, True), (16, 2, False), (1, 16, True),
                                                (1, 17, False)])
def test_block_boundaries_in_one_block_cache(prompt, output, fits):
    # one 16-token block: a request fits iff prompt + output - 1 <= 16 (the last token is never cached)
    r = run([[0, prompt, output]], "chunked_prefill", serving={"num_kv_blocks": 1})
    req = r.tables["requests"].iloc[0]
    assert (req["finish_s"] == prompt * 0 + output) if fits else isinstance(req["fail_reason"], str)


def test_reserve_mode_holds_max_length_from_admission():
    # contiguous reservation: each sequence takes ceil((P+O)/16) blocks at admission and never grows
    # (10+6 = 16 tokens = 1 block; with 1 block the second request waits for the first to finish)
    r = run([[0, 10, 6], [0, 10, 6]], "orca", serving={"num_kv_blocks": 1, "kv_mode": "reserve"})
    ev = req_events(r.log)
    assert ev == [(0.0, S, 0), (1.0, F, 0), (6.0, D, 0), (6.0, S, 1), (7.0, F, 1), (12.0, D, 1)]
    kv = r.tables["kv"]
    assert set(kv["used_bytes"]) == {16 * 512}
    assert r.summary["n_preemptions"] == 0


def test_priority_order_serves_urgent_first():
    rows = [[0, 10, 2, 5], [0, 10, 2, 1], [0, 10, 2, 3]]  # 4th field: priority (lower first)
    r = run(rows, "chunked_prefill", batching_over={"max_num_seqs": 1, "order": {"_target_": "llmos_sim.policies.batching.PriorityOrder"}})
    order = [s for t, k, s in req_events(r.log) if k == S]
    assert order == [1, 2, 0]


def test_shortest_predicted_first():
    rows = [[0, 10, 9], [0, 10, 2], [0, 10, 5]]
    r = run(rows, "chunked_prefill", batching_over={"max_num_seqs": 1, "order": {"_target_": "llmos_sim.policies.batching.ShortestPredictedFirst"}})
    assert [s for t, k, s in req_events(r.log) if k == S] == [1, 2, 0]


def test_recompute_reuses_its_cached_prefix_with_prefix_caching():
    # as above, but B's one full block is still cached when it returns at t=3: only its
    # 17th token is computed (vLLM's prefix cache after a recompute preemption)
    r = run([[0, 16, 3], [0, 16, 3]], "chunked_prefill", serving={"num_kv_blocks": 3, "prefix_caching": True})
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (1.0, P, 1), (3.0, D, 0), (5.0, D, 1)]
    assert batches(r.log)[3] == (3.0, 0, 1, 1, 1.0)
