"""A request that can never be placed fails with a reason naming the limit it hits, with the
numbers: the token budget of a policy that runs prompts whole, the watermark, a pool that
grants fewer blocks at once than are free (or refuses what it counted), a fixed reservation
per sequence. Stories use the
fixed 1 s iteration of the other story tests (tiny model: 16-token blocks)."""
from __future__ import annotations

import pytest

from llmos_sim.policies.batching import ChunkedPrefill, ContinuousBatching, OrcaBatching
from llmos_sim.policies.memory.buddy import BuddyPool
from llmos_sim.policies.memory.ideal import IdealPool
from llmos_sim.serving import simulate
from llmos_sim.serving.kv import KVCacheManager
from llmos_sim.serving.view import ReplicaView, SeqTable, WaitingSeq
from .helpers import make_cfg, req_events
from .test_units import _view

D, X = "req_finish", "req_fail"


def fails(r):
    """``(time_s, request, reason)`` of the failures."""
    return [(t, s, d[0]) for t, k, s, d in r.log if k == X]


@pytest.mark.parametrize("batching, name", [("continuous", "ContinuousBatching"), ("orca", "OrcaBatching")])
def test_a_prompt_over_the_token_budget_of_a_policy_that_runs_prompts_whole(batching, name):
    # budget 100 tokens: request 0's 150-token prompt never runs (the replica stalls at 0 and
    # fails it); request 1 (prompt 10, output 2) then prefills 0->1 and decodes 1->2
    r = simulate(make_cfg([[0, 150, 2], [0, 10, 2]], batching, batching_over={"max_num_batched_tokens": 100},
                          serving={"num_kv_blocks": 100}), seed=0)
    assert fails(r) == [(0.0, 0, f"unschedulable: its 150 tokens to compute exceed max_num_batched_tokens=100, "
                                  f"and {name} runs a prompt whole")]
    assert [(t, s) for t, k, s in req_events(r.log) if k == D] == [(2.0, 1)]


def test_chunked_prefill_splits_the_prompt_instead():
    # the same prompt in 100-token chunks: 0->1, 1->2 (its first token), a decode 2->3
    r = simulate(make_cfg([[0, 150, 2]], batching_over={"max_num_batched_tokens": 100},
                          serving={"num_kv_blocks": 100}), seed=0)
    assert not fails(r) and [(t, s) for t, k, s in req_events(r.log) if k == D] == [(3.0, 0)]


def test_a_prompt_the_watermark_keeps_out():
    # 100 blocks, continuous batching's 1% watermark keeps 1 free: a 1,600-token prompt with
    # one output token (100 blocks at its largest: it fits the cache, so it is not
    # kv_too_small) is never admitted
    r = simulate(make_cfg([[0, 1600, 1]], "continuous", serving={"num_kv_blocks": 100}), seed=0)
    assert fails(r) == [(0.0, 0, "unschedulable: needs 100 KV blocks, 100 of 100 are free, the watermark keeps 1")]


def test_refusal_names_the_first_limit_admission_hits():
    w = WaitingSeq(0, 1000, 5, 0.0)  # 63 blocks
    assert ContinuousBatching(max_num_batched_tokens=999).refusal(_view([], [w], 100)) == (
        "its 1000 tokens to compute exceed max_num_batched_tokens=999, and ContinuousBatching runs a prompt whole")
    assert OrcaBatching().refusal(_view([], [w], 62)) == "needs 63 KV blocks, 62 of 100 are free"
    # chunked prefill takes one 256-token chunk (16 blocks); reserving the whole prompt, all 63
    assert ChunkedPrefill(max_num_batched_tokens=256).refusal(_view([], [w], 16)) is None
    assert ChunkedPrefill(max_num_batched_tokens=256, reserve_full_prompt=True).refusal(_view([], [w], 16)) == (
        "needs 63 KV blocks, 16 of 100 are free")
    assert ChunkedPrefill(watermark=0.05).refusal(_view([], [w], 67)) == (
        "needs 63 KV blocks, 67 of 100 are free, the watermark keeps 5")


def test_a_buddy_pool_grants_fewer_blocks_at_once_than_it_has():
    # 40 blocks of 2 MiB (128 KiB per token) are buddy blocks of 32 and 8: a 33-block prompt
    # fits the count, not one allocation
    mib = 1 << 20
    kv = KVCacheManager(BuddyPool(80 * mib), 128 * 1024, 16)
    w = WaitingSeq(0, 33 * 16, 1, 0.0)
    assert OrcaBatching().refusal(ReplicaView(0.0, SeqTable(), [w], kv)) == (
        "needs 33 KV blocks, the empty BuddyPool grants at most 32 of its 40 at once")
    assert kv.grow("other", 4)  # (taken from the 8-block buddy block)
    assert OrcaBatching().refusal(ReplicaView(0.0, SeqTable(), [w], kv)) == (
        "needs 33 KV blocks, with 36 free, the BuddyPool grants at most 32 of its 40 at once")


def test_kv_too_small_names_the_reservation_when_that_is_the_limit():
    # reserve mode, 32 tokens reserved per sequence in 100 blocks: a request of 39 tokens at
    # its largest never fits its reservation, though the cache has room; one of 40 tokens
    # plus outputs needs more blocks than there are
    kw = dict(serving={"num_kv_blocks": 100, "kv_mode": "reserve", "reserve_tokens": 32})
    r = simulate(make_cfg([[0, 30, 10], [0, 20, 5]], "orca", **kw), seed=0)
    assert fails(r) == [(0.0, 0, "kv_too_small: its 39 tokens at their largest exceed the 32-token reservation "
                                 "per sequence on replica 0")]
    r = simulate(make_cfg([[0, 1600, 2]], "orca", serving={"num_kv_blocks": 100}), seed=0)
    assert fails(r) == [(0.0, 0, "kv_too_small: needs 101 blocks, replica 0 has 100")]


class CappedPool(IdealPool):
    """An ideal pool that refuses any allocation above 256 KiB while it reports its whole free
    room (``largest_free_bytes``) as one extent: what a pool whose free extent is only an
    upper bound does."""

    exact_free_count = False

    def _allocate(self, nbytes, tag, alloc_id):
        return None if nbytes > 1 << 18 else super()._allocate(nbytes, tag, alloc_id)


def test_a_pool_that_refuses_the_blocks_the_policy_counts_free():
    # tiny model blocks: 16 tokens of 512 B (8 KiB), so the pool grants 32 blocks at once.
    # Both are admitted at 0 by the count (38 + 7 of 100 blocks); the pool refuses request
    # 0's 38 (it goes back to waiting) and takes request 1's 7: 1 prefills 0->1 and decodes
    # 1->2; then nothing else runs and 0 fails
    pool = {"_target_": f"{__name__}.CappedPool", "_partial_": True}
    r = simulate(make_cfg([[0, 600, 2], [0, 100, 2]], "orca", serving={"num_kv_blocks": 100}, memory=pool), seed=0)
    assert fails(r) == [(2.0, 0, "unschedulable: the CappedPool refuses the blocks the policy counts free (100 of 100)")]
    assert [(t, s) for t, k, s in req_events(r.log) if k == D] == [(2.0, 1)]
