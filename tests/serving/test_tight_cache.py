"""A too-small KV cache never livelocks a replica: requests that can never fit fail at arrival,
the rest finish. Stories use the fixed 1 s iteration of the other story tests (tiny model:
16-token blocks); a property test covers every batching policy × preemption mode × tight caches."""
from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim.policies.batching import BatchingPolicy, StaticBatching
from llmos_sim.serving import simulate
from .helpers import batches, make_cfg, req_events
from .test_units import _view

S, F, D, P, X = "req_schedule", "req_first_token", "req_finish", "req_preempt", "req_fail"
PAGED = {"_target_": "llmos_sim.policies.memory.paged.PagedPool", "_partial_": True}
FIRST_FIT = {"_target_": "llmos_sim.policies.memory.fit.FirstFitPool", "_partial_": True}

# the colleague's reproducer, made small: 3 blocks; request 0 needs 1 block at most (10+5-1 = 14
# tokens), request 1 needs 3 (10+30-1 = 39). Both prompts fit at t=0, but not both largest sizes.
REPRO = [[0, 10, 5], [0, 10, 30]]


def _terminal(r):
    """request -> list of its REQ_FINISH/REQ_FAIL kinds."""
    out: dict[int, list[str]] = {}
    for _, k, s, _ in r.log:
        if k in (D, X):
            out.setdefault(s, []).append(k)
    return out


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_static_reproducer_terminates_with_monotone_progress(mode):
    # Before the fix: one batch {0, 1}; 0 finished at t=5 and was held; at t=23 request 1 needed
    # its third block, was preempted, and the batch (only 0, finished, left) padded one-token
    # iterations until max_time_s, 1 never finishing. Now 1 waits for a batch of its own.
    r = simulate(make_cfg(REPRO, "static", batching_over={"preemption": mode},
                          serving={"num_kv_blocks": 3, "max_time_s": 1000.0}), seed=0)
    assert req_events(r.log) == [
        (0.0, S, 0), (1.0, F, 0), (5.0, D, 0), (5.0, S, 1), (6.0, F, 1), (35.0, D, 1)]
    assert _terminal(r) == {0: [D], 1: [D]}  # each finishes exactly once
    assert r.summary["n_preemptions"] == 0 and r.summary["n_iterations"] == 35
    # monotone progress: 35 iterations = 5 for request 0 + 30 for request 1, so every iteration
    # brought a live request a token closer; nothing after the last finish but the run's end
    assert [k for t, k, _, _ in r.log if t > 35.0] == ["end"]
    assert r.tables["kv"]["used_bytes"].max() <= 3 * 16 * 512


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_static_batch_ends_when_its_last_live_member_is_preempted(monkeypatch, mode):
    # The replica's own guard, with the policy's largest-size rule switched off (prompts only, as
    # before the fix; what a fragmenting pool refusing growth also leads to): request 1 is
    # preempted at t=23 (its third block), never request 0 (finished, held: it would finish
    # twice), and the batch, left with finished members only, ends at once.
    monkeypatch.setattr(StaticBatching, "admit", BatchingPolicy.admit)
    r = simulate(make_cfg(REPRO, "static", batching_over={"preemption": mode},
                          serving={"num_kv_blocks": 3, "max_time_s": 1000.0}), seed=0)
    ev = req_events(r.log)
    assert ev[:6] == [(0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (5.0, D, 0), (23.0, P, 1)]
    assert _terminal(r) == {0: [D], 1: [D]}
    assert ev[-1][1:] == (D, 1) and ev[-1][0] < 40.0
    # the other order: request 1 (latest admitted, finished first) is held; 0 is the victim
    r = simulate(make_cfg(REPRO[::-1], "static", batching_over={"preemption": mode},
                          serving={"num_kv_blocks": 3, "max_time_s": 1000.0}), seed=0)
    assert (23.0, P, 0) in req_events(r.log) and _terminal(r) == {0: [D], 1: [D]}


def test_finished_rows_are_never_preemption_victims():
    # static view: row 1 (latest admitted) finished and is held; row 0 must grow, no block free
    rows = [(0, 16, 10, 16, 1, 1, 0, 0, 10, 0.0, False), (1, 16, 2, 17, 2, 2, 1, 0, 2, 0.0, True)]
    d = StaticBatching().next_batch(_view(rows, [], free_blocks=0))
    assert d.preempt == (0,) and d.tokens.tolist() == [0, 1]


@pytest.mark.parametrize("per_iteration", [False, True])
def test_static_story_under_a_tight_cache(per_iteration):
    # 4 blocks. Largest sizes: r0 20+3-1 = 22 tokens (2 blocks), r1 10+8-1 = 17 (2), r2 12+2-1 =
    # 13 (1), r3 5+4-1 = 8 (1). t0: {r0, r1} take all 4 (their prompts alone would have let r2
    # in too); r2 waits head-of-line, r3 (arrives at 1) behind it. r0 decodes to t3 (held), r1 to
    # t8. t8: {r2, r3}: prefill 8->9, r2 done at 10 (held), r3 at 12. No preemption.
    rows = [[0, 20, 3], [0, 10, 8], [0, 12, 2], [1, 5, 4]]
    r = simulate(make_cfg(rows, "static", serving={"num_kv_blocks": 4, "per_iteration_records": per_iteration}),
                 seed=0)
    assert req_events(r.log) == [
        (0.0, S, 0), (0.0, S, 1), (1.0, F, 0), (1.0, F, 1), (3.0, D, 0), (8.0, D, 1),
        (8.0, S, 2), (8.0, S, 3), (9.0, F, 2), (9.0, F, 3), (10.0, D, 2), (12.0, D, 3)]
    b = batches(r.log)
    first = [(0.0, 30, 0, 2, 1.0), (1.0, 0, 2, 2, 1.0), (2.0, 0, 2, 2, 1.0)]
    if per_iteration:
        assert b == first + [(t, 0, 2, 2, 1.0) for t in (3.0, 4.0, 5.0, 6.0, 7.0)] + [
            (8.0, 17, 0, 2, 1.0), (9.0, 0, 2, 2, 1.0), (10.0, 0, 2, 2, 1.0), (11.0, 0, 2, 2, 1.0)]
    else:  # 1->3, 3->8 (r0 held) and 10->12 (r2 held) are spans: (start, iterations, duration)
        assert b == [first[0], (8.0, 17, 0, 2, 1.0), (9.0, 0, 2, 2, 1.0)]
        assert [(t, d[0], d[4]) for t, k, _, d in r.log if k == "batch_span"] == [
            (1.0, 2, 2.0), (3.0, 5, 5.0), (10.0, 2, 2.0)]
    req = r.tables["requests"].set_index("request")
    assert req.loc[2, "queue_s"] == 8.0 and req.loc[3, "queue_s"] == 7.0
    assert r.summary["n_preemptions"] == 0 and r.summary["n_iterations"] == 12
    assert r.tables["kv"]["used_bytes"].max() == 4 * 16 * 512


@st.composite
def _tight_case(draw):
    rows = draw(st.lists(st.tuples(st.integers(0, 10).map(lambda x: x / 2), st.integers(1, 40), st.integers(1, 60)),
                         min_size=1, max_size=6))
    return dict(
        rows=[list(x) for x in sorted(rows)],
        batching=draw(st.sampled_from(["static", "orca", "continuous", "chunked_prefill"])),
        preemption=draw(st.sampled_from(["recompute", "swap"])),
        blocks=draw(st.integers(1, 6)),
        memory=draw(st.sampled_from([None, PAGED, FIRST_FIT])),
        budget=draw(st.sampled_from([8, 64, 2048])),
        prefix_caching=draw(st.booleans()),
        per_iteration=draw(st.booleans()),
    )


@settings(max_examples=150, deadline=None)
@given(_tight_case())
def test_tight_caches_never_livelock(case):
    rows, blocks = case["rows"], case["blocks"]
    over = {"preemption": case["preemption"]}
    if case["batching"] == "chunked_prefill":
        over["max_num_batched_tokens"] = case["budget"]
    # generous: every request alone, recomputed from scratch once per token, takes far less
    limit = 10.0 + sum(p + o for _, p, o in rows) * len(rows) * 4
    r = simulate(make_cfg(rows, case["batching"], batching_over=over, memory=case["memory"],
                          serving={"num_kv_blocks": blocks, "max_time_s": limit,
                                   "prefix_caching": case["prefix_caching"],
                                   "per_iteration_records": case["per_iteration"]}), seed=0)
    term = _terminal(r)
    # every request ends exactly once, finished or failed, and the run drained before the limit
    assert sorted(term) == list(range(len(rows)))
    assert all(len(v) == 1 for v in term.values()), term
    assert max(t for t, k, _, _ in r.log if k in (D, X)) < limit
    assert r.summary["n_iterations"] < limit
    # only requests that could never fit an empty cache alone fail, at arrival
    req = r.tables["requests"].set_index("request")
    for i, (a, p, o) in enumerate(rows):
        fits = math.ceil((p + o - 1) / 16) <= blocks
        reason = req.loc[i, "fail_reason"]
        if fits:
            assert term[i] == [D], (i, reason)
        else:
            assert term[i] == [X] and reason.startswith("kv_too_small"), (i, reason)
    assert Counter(v[0] for v in term.values())[D] == int(r.summary["n_finished"])
