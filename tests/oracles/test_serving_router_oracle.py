"""Several replicas behind a router against the reference simulator of ``serving_oracle.py``.

Random request sets (≤ 10 requests, short prompts and outputs) over 2 or 3 replicas of the
single-replica scope of ``test_serving_oracle.py`` (chunked prefill, few 4-token blocks,
recompute preemption), routed round robin or to the replica with the fewest outstanding
requests. Arrivals are integers plus a distinct 1/128 fraction per request, so no arrival
coincides with an iteration's end (every duration is a multiple of 1/8 s) and "outstanding at
the arrival" has one meaning. Every request's replica, first-token time, finish time and
preemption count must agree."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from serving_oracle import route
from test_serving_oracle import BLOCK, request_sets, simulator_schedule

ROUTERS = {"round_robin": "llmos_sim.policies.routing.RoundRobin",
           "least_outstanding": "llmos_sim.policies.routing.LeastOutstanding"}


@settings(max_examples=60, deadline=None)
@given(w=request_sets(), n_replicas=st.integers(2, 3), router=st.sampled_from(sorted(ROUTERS)),
       limits=st.fixed_dictionaries({"max_num_seqs": st.integers(1, 4),
                                     "max_num_batched_tokens": st.integers(2, 16),
                                     "reserve_full_prompt": st.booleans()}),
       cost=st.sampled_from([{"base_s": 1.0},
                             {"base_s": 0.5, "per_prefill_token_s": 0.25, "per_decode_token_s": 0.125}]))
def test_routed_replicas_match_the_oracle(w, n_replicas, router, limits, cost):
    n_blocks, rows = w
    rows = [[a + (i + 1) / 128, p, o] for i, (a, p, o) in enumerate(rows)]
    where, ref = route([(i, a, p, o) for i, (a, p, o) in enumerate(rows)], n_replicas, router, n_blocks,
                       block=BLOCK, **limits, **cost)
    want = {i: [where[i], s.first_token, s.finish, s.preempts] for i, s in ref.items()}
    got = simulator_schedule(rows, n_blocks, limits, cost, True, serving={"replicas": n_replicas},
                             router={"_target_": ROUTERS[router]})
    assert got == want, rows
