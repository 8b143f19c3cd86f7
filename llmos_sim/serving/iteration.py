"""One serving iteration as data and pure functions: the plan a replica hands from deciding an
iteration to finishing it, the prefill part of a batch's shape, how far a decode span may run
on the free blocks, and applying an iteration to the sequence table.

The :class:`~llmos_sim.serving.replica.Replica` keeps the loop, the clock and the log; what
here is arithmetic on the sequence state, so it is tested on hand-built tables
(``tests/serving/test_iteration.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from llmos_sim.serving.view import SeqTable, block_growth


@dataclass(slots=True, eq=False)
class IterationPlan:
    """An iteration (or a decode span of ``k``) decided and started, for the replica to finish.

    - ``duration_s``: how long it takes (the span's total for ``k`` > 1)
    - ``tokens``: tokens each running row computes in one iteration (aligned with the table)
    - ``k``: iterations it stands for (1, or a fast-forwarded decode span)
    - ``hold_finished``: finished rows keep their slot until the whole batch is done (static)
    - ``may_finish``: some row may finish at its end (else the finish scan is skipped)
    - ``pure``: every live row decodes one token per iteration (the fast path of :func:`advance`)
    """

    duration_s: float
    tokens: list[int]
    k: int
    hold_finished: bool
    may_finish: bool
    pure: bool


def prefill_shape(tokens: list[int], pre: list[int], prompt: list[int], generated: list[int],
                  computed: list[int]) -> tuple[int, int, int]:
    """The prefill part of a batch's shape: ``(attended pairs, context, rows that emit a token)``
    of the rows ``pre`` computing a prefill or recompute chunk of ``tokens[i]`` tokens after
    ``computed[i]`` cached ones. A chunk of ``x`` tokens after ``c`` attends ``x·c + x(x+1)/2``
    pairs; its context counts ``c`` plus the chunk (added by the caller, once for all rows);
    it emits a token when it completes the known context (``c + x >= prompt + generated``)."""
    pairs = ctx = logits = 0
    for i in pre:
        x, c = tokens[i], computed[i]
        pairs += x * c + x * (x + 1) // 2
        ctx += c
        if c + x >= prompt[i] + generated[i]:
            logits += 1
    return pairs, ctx, logits


def span_on_free_blocks(computed: list[int], blocks: list[int], k: int, block_tokens: int, free: int) -> int:
    """The longest decode span ``k' <= k`` whose block growth (every row one token per
    iteration) fits in ``free`` blocks, given that one iteration's already does (so at least 1)."""
    if sum(block_growth(computed, k, blocks, block_tokens)[1]) <= free:
        return k
    lo, hi = 1, k  # need(lo) fits, need(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if sum(block_growth(computed, mid, blocks, block_tokens)[1]) <= free:
            lo = mid
        else:
            hi = mid
    return lo


def advance(tab: SeqTable, plan: IterationPlan, on_computed: Callable[[int, int], None] | None = None,
            watch: "set | dict | None" = None) -> tuple[list[int], list[int]]:
    """Apply an ended iteration (or span) to the sequence state: every live row computed its
    tokens (``k`` each for a pure-decode plan); a row whose context is now complete emits one
    token. Returns ``(first, finished)``: the request ids that emitted their first token (in
    row order) and the rows (positions) that now have all their output, not already done.
    ``on_computed(rid, computed)`` is called for the rows in ``watch`` (prefix caching)."""
    k, tokens = plan.k, plan.tokens
    C, G = tab.computed, tab.generated
    done = tab.done if tab.n_done else None
    first: list[int] = []
    if plan.pure:  # every live row decoded k tokens
        if done is None:
            add_k = k.__add__
            tab.computed = list(map(add_k, C))
            tab.generated = G = list(map(add_k, G))
        else:
            for i, dn in enumerate(done):
                if not dn:
                    C[i] += k
                    G[i] += k
    else:
        P, rid = tab.prompt, tab.rid
        for i, x in enumerate(tokens):
            if x and (done is None or not done[i]):
                C[i] = c = C[i] + x
                if watch and rid[i] in watch:
                    on_computed(rid[i], c)
                if c == P[i] + G[i]:  # the context is complete: one new token
                    G[i] = g = G[i] + 1
                    if g == 1:
                        first.append(rid[i])
    if not plan.may_finish:
        return first, []
    if done is None:
        return first, [i for i, (g, o) in enumerate(zip(G, tab.output)) if g >= o]
    return first, [i for i, (g, o, dn) in enumerate(zip(G, tab.output, done)) if g >= o and not dn]
