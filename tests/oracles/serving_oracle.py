"""A reference simulator for one serving replica, written from the documented semantics.

Independent of the serving code: a plain loop over iterations, no SimPy, no replica, KV
cache, batching-policy or cost-model code. It exists to be compared with ``llmos_sim`` on
random request sets (``test_serving_oracle.py``).

Scope: one replica, chunked prefill (``batching=chunked_prefill``: vLLM v1's scheduler), FCFS
order, recompute or swap preemption, no watermark, paged KV of ``n_blocks`` blocks of
``block`` tokens, no prefix caching, no host tier (unlimited swap space), a linear iteration
cost (which does not price swap traffic), every request able to finish on an empty cache.
Not covered: the other batching policies (static, Orca, prefill-first continuous batching
with its watermark), other orderings, several replicas and routers, prefix caching,
asynchronous scheduling, the roofline and measured cost models.

Semantics implemented, with where they are stated:

- Tokens (``llmos_sim.serving.view`` module docstring): ``known = prompt + generated``; an
  iteration computes ``n <= known - computed`` tokens of a sequence; when it reaches
  ``computed == known`` the sequence emits one token; it finishes when ``generated ==
  output``; a recompute preemption sets ``computed = 0`` and keeps the generated tokens, a
  swap keeps ``computed`` (its blocks are freed here and taken again at readmission).
- Blocks (``llmos_sim.serving.kv``): a sequence holds ``ceil(tokens / block)`` blocks of the
  tokens it has computed, grown before the iteration that computes them; a finished or
  preempted sequence frees them all.
- One iteration (``BatchingPolicy.next_batch``, ``schedule_running``, ``admit``, ``_growth``,
  ``Ordering``): running sequences first, in admission order, each
  ``min(known - computed, budget)`` tokens within ``max_num_batched_tokens``; when a row's
  growth does not fit the free blocks, the most recently admitted running sequence is
  preempted (vLLM's ``running.pop()``), until it fits or the row itself was the one
  preempted (then no later row runs). No admission in an iteration that preempted.
  Otherwise waiting sequences (by arrival, then id; a preempted one keeps its place by
  arrival) are admitted head-of-line while the budget lasts, fewer than ``max_num_seqs`` run,
  and the blocks of their chunk fit what the running rows left (with
  ``reserve_full_prompt``: the blocks of their whole remaining prompt must be free).
- Time (``llmos_sim.serving.replica`` module docstring): an iteration starting at ``s`` sees
  every arrival at ``<= s``; it lasts ``base_s + per_prefill_token_s · n_prefill +
  per_decode_token_s · n_decode`` (``LinearCost``), where ``n_decode`` counts the sequences
  that decode one token (``BatchShape.n_decode_tokens``) and ``n_prefill`` every other
  computed token (prefill and recompute chunks); first tokens and finishes are stamped at
  its end, and the next iteration starts then. An idle replica starts at the next arrival.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Seq:
    id: int
    arrival: float
    prompt: int
    output: int
    generated: int = 0
    computed: int = 0
    blocks: int = 0
    first_token: float | None = None
    finish: float | None = None
    preempts: int = 0

    @property
    def known(self) -> int:
        return self.prompt + self.generated


def blocks_for(tokens: int, block: int) -> int:
    return -(-tokens // block)


def simulate(requests, n_blocks: int, *, block: int = 16, max_num_seqs: int = 256,
             max_num_batched_tokens: int = 2048, reserve_full_prompt: bool = False,
             preemption: str = "recompute",
             base_s: float = 1.0, per_prefill_token_s: float = 0.0,
             per_decode_token_s: float = 0.0) -> dict[int, Seq]:
    """Serve ``requests`` (``(id, arrival, prompt, output)`` tuples); each request's record."""
    seqs = {i: Seq(i, a, p, o) for i, a, p, o in requests}
    pending = sorted(seqs.values(), key=lambda s: (s.arrival, s.id))  # not yet arrived
    waiting: list[Seq] = []  # by (arrival, id)
    running: list[Seq] = []  # admission order
    free = n_blocks
    t = 0.0
    while pending or waiting or running:
        if not waiting and not running:
            t = max(t, pending[0].arrival)
        while pending and pending[0].arrival <= t:
            waiting.append(pending.pop(0))
        waiting.sort(key=lambda s: (s.arrival, s.id))

        batch: list[tuple[Seq, int]] = []
        budget = max_num_batched_tokens
        preempted = False
        queue = list(running)
        while queue and budget > 0:
            s = queue.pop(0)
            n = min(s.known - s.computed, budget)
            need = blocks_for(s.computed + n, block) - s.blocks
            while need > free:
                victim = queue.pop() if queue else s
                free += victim.blocks
                victim.blocks = 0
                if preemption == "recompute":
                    victim.computed = 0
                victim.preempts += 1
                running.remove(victim)
                waiting.append(victim)
                preempted = True
                if victim is s:
                    break
            if s not in running:
                break  # the row itself was preempted
            free -= need
            s.blocks += need
            batch.append((s, n))
            budget -= n
        waiting.sort(key=lambda s: (s.arrival, s.id))

        if not preempted:
            while waiting and budget > 0 and len(running) < max_num_seqs:
                s = waiting[0]
                n = min(s.known - s.computed, budget)
                need = blocks_for(s.computed + n, block)
                if blocks_for(s.known if reserve_full_prompt else s.computed + n, block) > free:
                    break
                waiting.pop(0)
                free -= need
                s.blocks = need
                running.append(s)
                batch.append((s, n))
                budget -= n

        n_decode = sum(1 for s, n in batch if n == 1 and s.generated >= 1 and s.computed + 1 == s.known)
        n_prefill = sum(n for s, n in batch) - n_decode
        t += base_s + per_prefill_token_s * n_prefill + per_decode_token_s * n_decode
        for s, n in batch:
            s.computed += n
            if s.computed == s.known:
                s.generated += 1
                if s.generated == 1:
                    s.first_token = t
                if s.generated == s.output:
                    s.finish = t
                    free += s.blocks
                    s.blocks = 0
                    running.remove(s)
    return seqs
