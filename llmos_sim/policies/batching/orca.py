"""Orca-style iteration-level batching (Yu et al., OSDI'22): every iteration, running
sequences decode and new requests join with their whole prompt (selective batching mixes
prefill and decode in one iteration). No chunking: a prompt that does not fit the token
budget waits. With a contiguous (reserve) KV pool, as in Orca, nothing is ever preempted."""
from __future__ import annotations

from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.order import Ordering


class OrcaBatching(BatchingPolicy):
    """Iteration-level scheduling with whole-prompt admission."""

    def __init__(self, max_num_seqs: int = 256, max_num_batched_tokens: int = 1 << 30, preemption: str = "recompute",
                 order: Ordering | None = None) -> None:
        super().__init__(max_num_seqs, max_num_batched_tokens, chunked=False, preemption=preemption, order=order)
