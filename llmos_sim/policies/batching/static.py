"""Static batching (FasterTransformer-like): a batch forms only when the replica is empty,
runs its prompts whole, then decodes until every member is done. Finished members keep their
slot and cache as padding (their decode is still computed) until the batch ends.

KV rule: a batch is formed only from requests whose *largest* KV sizes (``prompt + output - 1``
tokens each, or their reservations in reserve mode; ``KVCacheManager.max_blocks``) fit together
in the blocks no one holds at formation (all of them: the replica is empty), taken head-of-line
in the ordering's order (each prompt must also fit the pool now, as in the base). No member can
then run out of blocks while the batch runs, so none is preempted (a preempted member could
only come back after its batch, which would hold its finished members' cache for nothing). A
request whose largest size exceeds the whole cache fails at arrival (``kv_too_small``).
Preemption (``preemption`` mode) remains only for pools that refuse growth the block count
allowed (a fragmenting pool); it never takes a finished member, and a batch left with finished
members only ends at once (the replica's rule).
"""
from __future__ import annotations

from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.order import Ordering
from llmos_sim.serving.view import BatchDecision, ReplicaView, TokenList


class StaticBatching(BatchingPolicy):
    """Up to ``max_num_seqs`` requests per batch, all of whose largest KV sizes fit together;
    no admissions while a batch runs."""

    def __init__(self, max_num_seqs: int = 8, max_num_batched_tokens: int = 1 << 30, preemption: str = "recompute",
                 order: Ordering | None = None) -> None:
        super().__init__(max_num_seqs, max_num_batched_tokens, chunked=False, preemption=preemption, order=order)

    def admit(self, view: ReplicaView, budget: int, n_running: int) -> tuple[tuple[int, int], ...]:
        """The base's head-of-line admissions (each prompt fits now), cut at the first member
        whose largest size, added to those before it, exceeds the blocks no one holds. A
        member's blocks already held (``shared``: a disaggregated request's KV received with
        its blocks, a cached prefix) are part of its size but not taken from that room."""
        out = super().admit(view, budget, n_running)
        kv, waiting = view.kv, view.waiting
        room = kv.unheld_blocks
        for i, (pos, _) in enumerate(out):
            w = waiting[pos]
            room -= kv.max_blocks(w.prompt, w.output) - w.shared
            if room < 0:
                return out[:i]
        return out

    def next_batch(self, view: ReplicaView) -> BatchDecision:
        run = view.running
        if len(run):
            tokens, preempt, grow = self._running(view, self.max_num_batched_tokens)
            if run.n_done:
                tokens = [1 if d else n for n, d in zip(tokens, run.done)]  # padding
            return BatchDecision(TokenList(tokens), (), preempt, self.preemption, hold_finished=True, grow=grow)
        admit = self.admit(view, self.max_num_batched_tokens, 0)
        return BatchDecision(TokenList(), admit, (), self.preemption, hold_finished=True)
