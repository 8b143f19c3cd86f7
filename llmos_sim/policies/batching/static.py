"""Static batching (FasterTransformer-like): a batch forms only when the replica is empty,
runs its prompts whole, then decodes until every member is done. Finished members keep their
slot and cache as padding (their decode is still computed) until the batch ends."""
from __future__ import annotations

import numpy as np

from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.order import Ordering
from llmos_sim.serving.state import BatchDecision, ReplicaView


class StaticBatching(BatchingPolicy):
    """Up to ``max_num_seqs`` requests per batch; no admissions while a batch runs."""

    def __init__(self, max_num_seqs: int = 8, max_num_batched_tokens: int = 1 << 30, preemption: str = "recompute",
                 order: Ordering | None = None) -> None:
        super().__init__(max_num_seqs, max_num_batched_tokens, chunked=False, preemption=preemption, order=order)

    def next_batch(self, view: ReplicaView) -> BatchDecision:
        run = view.running
        if len(run):
            tokens, preempt = self.schedule_running(view, self.max_num_batched_tokens)
            tokens = [1 if d else n for n, d in zip(tokens, run.done)]  # padding
            return BatchDecision(np.array(tokens, dtype=np.int64), (), preempt, self.preemption, hold_finished=True)
        admit = self.admit(view, self.max_num_batched_tokens, 0)
        return BatchDecision(np.zeros(0, dtype=np.int64), admit, (), self.preemption, hold_finished=True)
