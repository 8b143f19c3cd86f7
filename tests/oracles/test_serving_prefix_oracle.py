"""Prefix caching on one replica against the reference simulator of ``serving_oracle.py``.

Random request sets (≤ 10 requests, arrivals in the first 6 s so they queue) whose prompts
share prefixes: each request's prefix hashes are a path from the root of a small tree of hash
blocks (two children per node, 8-token hash blocks over 4-token KV blocks, so a unit is 2
blocks), its prompt at least one whole hash block and possibly a partial last one. Few blocks,
so units are hit, shared, left evictable, evicted, and running sequences are preempted by
recompute and come back to hit their own units. Every request's first-token time, finish
time, preemption count and first admission's hit (tokens, hash blocks, and the request's
hash block count) must agree, with fast-forwarded decode spans on and off."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_sim.workload.requests import Request
from serving_oracle import blocks_for, simulate
from test_serving_oracle import BLOCK, simulator_schedule

HASH = 8


class HashedRequests:
    """A literal list of ``[arrival_s, prompt_tokens, output_tokens, [hash, ...]]`` over
    ``hash_tokens``-token hash blocks, ids in list order."""

    SEED_VARIES = "nothing"

    def __init__(self, rows, hash_tokens: int) -> None:
        self.rows = rows
        self.hash_tokens = hash_tokens

    def requests(self, rng=None) -> list[Request]:
        return [Request(i, float(a), p, o, prefix_hashes=tuple(h), prefix_block_tokens=self.hash_tokens)
                for i, (a, p, o, h) in enumerate(self.rows)]


def prefix_schedule(rows, n_blocks, limits, cost, fast_forward):
    """The simulator's :func:`simulator_schedule` of ``rows`` with prefix caching on."""
    return simulator_schedule(rows, n_blocks, limits, cost, fast_forward,
                              {"_target_": f"{__name__}.HashedRequests", "rows": rows, "hash_tokens": HASH},
                              {"prefix_caching": True})


@st.composite
def shared_prefix_sets(draw):
    """``(n_blocks, rows)``: hashes are node ids of a binary tree (node ``j``'s children are
    ``2j + 1``, ``2j + 2``), one per hash block the prompt touches, the last maybe partial."""
    n_blocks = draw(st.integers(4, 10))
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        prompt = draw(st.integers(HASH, 3 * HASH + 3))
        output = draw(st.integers(1, 8))
        while output > 1 and blocks_for(prompt + output - 1, BLOCK) > n_blocks:
            output -= 1
        if blocks_for(prompt, BLOCK) > n_blocks:  # could never finish: not in scope
            continue
        node, hashes = 0, [0]
        for _ in range(1, -(-prompt // HASH)):
            node = 2 * node + draw(st.integers(1, 2))
            hashes.append(node)
        rows.append([draw(st.integers(0, 6)), prompt, output, hashes])
    return n_blocks, rows or [[0, HASH, 1, [0]]]


@settings(max_examples=150, deadline=None)
@given(w=shared_prefix_sets(),
       limits=st.fixed_dictionaries({"max_num_seqs": st.integers(1, 4),
                                     "max_num_batched_tokens": st.integers(2, 24),
                                     "reserve_full_prompt": st.booleans()}),
       cost=st.sampled_from([{"base_s": 1.0},
                             {"base_s": 0.5, "per_prefill_token_s": 0.25, "per_decode_token_s": 0.125}]))
def test_prefix_caching_matches_the_oracle(w, limits, cost):
    n_blocks, rows = w
    ref = simulate([(i, float(a), p, o, h) for i, (a, p, o, h) in enumerate(rows)], n_blocks, block=BLOCK,
                   hash_tokens=HASH, **limits, **cost)
    want = {i: [s.first_token, s.finish, s.preempts, (*s.cache, len(rows[i][3]))] for i, s in ref.items()}
    for fast_forward in (True, False):
        assert prefix_schedule(rows, n_blocks, limits, cost, fast_forward) == want, (fast_forward, rows)


def test_an_eviction_by_decode_growth_admits_the_waiting_request_at_once():
    """4 blocks of 4 tokens, 8-token hash blocks, a budget of 4 tokens. Request 0 (8 tokens,
    hash 0) prefills in [0, 2) and finishes: unit 0 is evictable. Request 1 (8 tokens, hash 1,
    4 outputs) prefills in [2, 4). At 4 request 2 (9 tokens, hashes 0, 7) would hit unit 0:
    its 2 blocks plus one more (3) do not fit the 1 block left after request 1's decode growth,
    which evicts unit 0. At 5 request 2 has no hit: its first 3 tokens take the last block, so
    it is admitted then (not when request 1 finishes at 7, as a decode span over [4, 7) would
    have it), and preempted at 6 when its second block does not fit; at 7 it starts again and
    prefills 4, 4, 1 tokens: first token at 10. The same with decode spans on and off."""
    rows = [[0, 8, 1, [0]], [0, 8, 4, [1]], [3, 9, 1, [0, 7]]]
    limits = {"max_num_seqs": 4, "max_num_batched_tokens": 4, "reserve_full_prompt": False}
    for fast_forward in (True, False):
        assert prefix_schedule(rows, 4, limits, {"base_s": 1.0}, fast_forward) == {
            0: [2.0, 2.0, 0, (0, 0, 1)], 1: [4.0, 7.0, 0, (0, 0, 1)], 2: [10.0, 10.0, 1, (0, 0, 2)]}
