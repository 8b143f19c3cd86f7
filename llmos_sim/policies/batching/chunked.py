"""Chunked prefill (Sarathi-Serve, Agrawal et al., OSDI'24; vLLM v1's scheduler): one token
budget per iteration (``max_num_batched_tokens``) shared by running decodes first, then
partial prefills, then new prompts cut into chunks; at most ``max_num_seqs`` sequences.
Running sequences that cannot grow preempt the most recently admitted ones; no admissions
in an iteration that preempted."""
from __future__ import annotations

from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.order import Ordering


class ChunkedPrefill(BatchingPolicy):
    """vLLM v1 defaults: 256 sequences, 2048 tokens, recompute, no watermark."""

    def __init__(self, max_num_seqs: int = 256, max_num_batched_tokens: int = 2048, preemption: str = "recompute",
                 watermark: float = 0.0, reserve_full_prompt: bool = False, order: Ordering | None = None) -> None:
        super().__init__(max_num_seqs, max_num_batched_tokens, chunked=True, preemption=preemption,
                         watermark=watermark, reserve_full_prompt=reserve_full_prompt, order=order)
