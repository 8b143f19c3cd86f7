"""One serving replica against the reference simulator of ``serving_oracle.py``.

Random request sets (≤ 10 requests, short prompts and outputs, integer arrivals) on a paged
KV cache of few 4-token blocks (so decodes run out of blocks and preempt, by recompute or
swap), chunked prefill with small token budgets and sequence limits, and a linear iteration
cost in dyadic seconds (every time exact in binary). Every request's first-token time, finish time and preemption
count must agree, with fast-forwarded decode spans on and off."""
from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from llmos_sim.run import compose
from llmos_sim.serving import simulate as sim_serving
from serving_oracle import blocks_for, simulate

BLOCK = 4


@functools.lru_cache(maxsize=1)
def base_cfg():
    return compose(["mode=serving", "batching=chunked_prefill", "model=tiny", "memory=paged"])


def simulator_schedule(rows, n_blocks, limits, cost, fast_forward, workload=None, serving=None, router=None):
    """Per request of ``rows`` (``ExplicitRequests`` rows, or ``workload``'s requests), in the
    simulator's run: ``[first token, finish, preemptions]``, and the data of its ``req_cache``
    record after them when it has one (with prefix caching: cached tokens, hit hash blocks, all
    its hash blocks). With a ``router`` (its config), the replica of its first token first."""
    cfg = base_cfg().copy()
    cfg.workload = workload or {"_target_": "llmos_sim.workload.requests.ExplicitRequests", "rows": rows}
    cfg.cost = {"_target_": "llmos_sim.serving.cost.LinearCost", "_partial_": True, **cost}
    cfg.serving = OmegaConf.merge(cfg.serving, {"num_kv_blocks": n_blocks, "block_tokens": BLOCK,
                                                "fast_forward": fast_forward, **(serving or {})})
    cfg.batching = OmegaConf.merge(cfg.batching, limits)
    if router is not None:
        cfg.router = router
    log = sim_serving(cfg, seed=0).log
    out = {i: [None, None, 0] for i in range(len(rows))}
    replica = {}
    for t, k, s, d in log:
        if k == "req_first_token":
            out[s][0] = t
            replica[s] = d[0]
        elif k == "req_finish":
            out[s][1] = t
        elif k == "req_preempt":
            out[s][2] += 1
        elif k == "req_cache":
            out[s].append(tuple(d[1:4]))
        elif k == "req_fail":
            raise AssertionError(f"request {s} failed")
    return out if router is None else {i: [replica.get(i), *v] for i, v in out.items()}


@st.composite
def request_sets(draw):
    n_blocks = draw(st.integers(2, 8))
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        prompt = draw(st.integers(1, 12))
        output = draw(st.integers(1, 10))
        if blocks_for(prompt + output - 1, BLOCK) > n_blocks:  # could never finish: not in scope
            output = max(1, n_blocks * BLOCK - prompt + 1)
            if blocks_for(prompt + output - 1, BLOCK) > n_blocks:
                continue
        rows.append([draw(st.integers(0, 12)), prompt, output])
    return n_blocks, rows or [[0, 1, 1]]


@settings(max_examples=150, deadline=None)
@given(w=request_sets(),
       limits=st.fixed_dictionaries({"max_num_seqs": st.integers(1, 4),
                                     "max_num_batched_tokens": st.integers(2, 16),
                                     "reserve_full_prompt": st.booleans(),
                                     "preemption": st.sampled_from(["recompute", "swap"])}),
       cost=st.sampled_from([{"base_s": 1.0},
                             {"base_s": 0.5, "per_prefill_token_s": 0.25, "per_decode_token_s": 0.125}]))
def test_replica_matches_the_oracle(w, limits, cost):
    n_blocks, rows = w
    ref = simulate([(i, float(a), p, o) for i, (a, p, o) in enumerate(rows)], n_blocks, block=BLOCK,
                   **limits, **cost)
    want = {i: [s.first_token, s.finish, s.preempts] for i, s in ref.items()}
    for fast_forward in (True, False):
        assert simulator_schedule(rows, n_blocks, limits, cost, fast_forward) == want, (fast_forward, rows)
