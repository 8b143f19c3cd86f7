"""vLLM-style continuous batching (vLLM v0's default scheduler, Kwon et al., SOSP'23):
an iteration either prefills newly admitted prompts (whole, within the token budget, keeping
a free-block watermark) or, when none can be admitted, decodes every running sequence.
When decode growth does not fit, the most preemptable running sequences are preempted by
recompute or swap until it does."""
from __future__ import annotations

from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.order import Ordering
from llmos_sim.serving.view import GROW, BatchDecision, ReplicaView, TokenList


class ContinuousBatching(BatchingPolicy):
    """Prefill-prioritising continuous batching with a watermark and preemption."""

    def __init__(self, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192, preemption: str = "recompute",
                 watermark: float = 0.01, order: Ordering | None = None) -> None:
        super().__init__(max_num_seqs, max_num_batched_tokens, chunked=False, preemption=preemption,
                         watermark=watermark, order=order)
        self._own_admit = type(self).admit is not BatchingPolicy.admit  # a subclass's admission hook
        self._decode_budget = 1 << 60 if self._plain(ContinuousBatching) else 0  # (see decode_growth)

    def next_batch(self, view: ReplicaView) -> BatchDecision:
        n = len(view.running)
        # (the base admission takes nothing from an empty queue: not asked then)
        admit = self.admit(view, self.max_num_batched_tokens, n) if view.waiting or self._own_admit else ()
        if admit:  # a prefill iteration: the running sequences wait (so none of them grows)
            return BatchDecision(TokenList([0] * n), admit, (), self.preemption,
                                 grow=([], []) if view.kv.mode == GROW else None)
        tokens, preempt, grow = self._running(view, 1 << 60)
        return BatchDecision(TokenList(tokens), (), preempt, self.preemption, grow=grow)
