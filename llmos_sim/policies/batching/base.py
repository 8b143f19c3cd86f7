"""Iteration-level batching policies: a view in, a batch decision out (hooks on one base, not copies).

:class:`BatchingPolicy` owns the per-iteration plan; variants override one hook:

1. :meth:`BatchingPolicy.schedule_running` — tokens for the running sequences (in admission
   order, within the token budget), and the preemptions needed so their KV growth fits;
2. :meth:`BatchingPolicy.admit` — which waiting sequences start, in the ordering's order,
   stopping at the first that does not fit (head-of-line, like vLLM);
3. :meth:`BatchingPolicy.next_batch` — how the two combine (default: running first, then
   admissions unless something was preempted this iteration — vLLM v1's rule).

The ordering hook (:mod:`llmos_sim.policies.batching.order`) sorts the waiting list and
picks preemption victims. Policies never mutate the view; the replica applies the decision.
"""
from __future__ import annotations

from operator import add, sub

from llmos_sim.policies.batching.order import FCFS, Ordering
from llmos_sim.serving.view import GROW, BatchDecision, KVView, ReplicaView, TokenList, WaitingSeq, block_growth

RECOMPUTE = "recompute"
SWAP = "swap"


def computed_after(kv: KVView, w: WaitingSeq, ahead: int) -> int:
    """The tokens waiting sequence ``w`` has computed when it is admitted after ``ahead``
    blocks were taken from the free queue's head in the same iteration. vLLM's scheduler
    allocates the running requests' new blocks first and admits the waiting ones in order,
    looking each one's cached blocks up when its turn comes; a sequence preempted by recompute
    finds then only the blocks of its own still queued (its tail blocks, queued first, go
    first: :meth:`KVCacheManager.requeued_tokens`). Any other keeps ``w.computed``."""
    if not w.swapped:
        c = kv.requeued_tokens(w.rid, w.prompt + w.generated, ahead)
        if c is not None:
            return c
    return w.computed


class BatchingPolicy:
    """Base policy with vLLM v1-like defaults.

    - ``max_num_seqs``: most sequences in a batch
    - ``max_num_batched_tokens``: token budget per iteration (prefill chunks + decodes)
    - ``chunked``: split prompts to fit the budget (else a prompt runs whole or waits)
    - ``preemption``: ``recompute`` or ``swap``
    - ``watermark``: fraction of all blocks kept free at admission (vLLM v0: 0.01)
    - ``reserve_full_prompt``: admit only if the whole remaining prompt's blocks are free, even
      when only a chunk is computed now (vLLM's ``scheduler_reserve_full_isl``)
    - ``order``: the ordering hook (FCFS when None)

    ``fast_forward`` (class attribute) promises that a pure-decode decision would repeat for
    as long as nothing arrives, finishes or runs out of blocks — the replica may then run many
    iterations in one step. Policies whose decisions depend on time must set it False.
    """

    fast_forward: bool = True

    def __init__(self, max_num_seqs: int = 256, max_num_batched_tokens: int = 2048, chunked: bool = True,
                 preemption: str = RECOMPUTE, watermark: float = 0.0, reserve_full_prompt: bool = False,
                 order: Ordering | None = None) -> None:
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be >= 1")
        if preemption not in (RECOMPUTE, SWAP):
            raise ValueError(f"preemption must be {RECOMPUTE!r} or {SWAP!r}, got {preemption!r}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {watermark}")
        self.max_num_seqs = int(max_num_seqs)
        self.max_num_batched_tokens = int(max_num_batched_tokens)
        self.chunked = bool(chunked)
        self.preemption = preemption
        self.watermark = float(watermark)
        self.reserve_full_prompt = bool(reserve_full_prompt)
        self.order = order if order is not None else FCFS()
        # the plan is the base's, every hook its own: see decode_growth
        self._decode_budget = self.max_num_batched_tokens if self._plain(BatchingPolicy) else 0

    # -- the plan ---------------------------------------------------------------------------
    def next_batch(self, view: ReplicaView) -> BatchDecision:
        """Running sequences first, then admissions (none in an iteration that preempted)."""
        tokens, preempt, grow = self._running(view, self.max_num_batched_tokens)
        admit: tuple = ()
        if not preempt:
            budget = self.max_num_batched_tokens - sum(tokens)
            admit = self.admit(view, budget, len(view.running), self._growth(view, tokens, grow))
        return BatchDecision(TokenList(tokens), admit, preempt, self.preemption, grow=grow)

    def _plain(self, cls: type) -> bool:
        """This policy's plan is ``cls.next_batch`` with the base's hooks (none overridden)."""
        t = type(self)
        return (t.next_batch is cls.next_batch and t.schedule_running is BatchingPolicy.schedule_running
                and t.admit is BatchingPolicy.admit)

    def decode_growth(self, view: ReplicaView) -> "tuple[list[int], list[int]] | None":
        """:meth:`next_batch`'s answer in the most common case, told cheaply: nothing waits, no
        row is held finished, every running row decodes (one token known beyond its cache) and
        the blocks they grow into are free. A plan with every hook its own then decodes them
        all, one token each, and admits and preempts nothing — the decision
        ``BatchDecision(TokenList([1] * n), grow=(rows, need))`` —: returns that ``(rows,
        need)`` (grow mode). None in any other case (ask :meth:`next_batch`)."""
        run = view.running
        n = len(run.rid)
        if not n or n > self._decode_budget or view.waiting or run.n_done:
            return None
        kv = view.kv
        if kv.mode != GROW:
            return None
        C = run.computed
        rem = list(map(sub, map(add, run.prompt, run.generated), C))
        if min(rem) != 1 or sum(rem) != n:  # (each at least one: so exactly one each)
            return None
        rows, need = block_growth(C, 1, run.blocks, kv.block_tokens)
        if need and sum(need) > kv.free_blocks:  # some row would be preempted
            return None
        return rows, need

    @staticmethod
    def _growth(view: ReplicaView, tokens: list[int], grow) -> int:
        """Blocks the running rows take this iteration (``grow``'s, or counted here when a
        subclass's :meth:`schedule_running` gave none): admissions see only what is left, as
        vLLM's scheduler allocates the running requests' slots before it admits."""
        if grow is not None:
            return sum(grow[1])
        kv, run = view.kv, view.running
        if kv.mode != GROW or not tokens:
            return 0
        done = run.done if run.n_done else None
        rows, need = kv.growth(run.computed, tokens, run.blocks)
        return sum(n for i, n in zip(rows, need) if tokens[i] and (done is None or not done[i]))

    # -- hooks ------------------------------------------------------------------------------
    def schedule_running(self, view: ReplicaView, budget: int) -> tuple[list[int], tuple[int, ...]]:
        """Tokens per running row (a list, in admission order, within ``budget``) and the rows
        to preempt so that the blocks the others need fit. Finished rows held as padding
        (static batching) need no blocks and are never victims."""
        return self._schedule(view, budget)[:2]

    def _running(self, view: ReplicaView, budget: int):
        """:meth:`schedule_running` plus the block growth it computed (``BatchDecision.grow``);
        a subclass that overrides the hook gets ``None`` (the replica computes it)."""
        if type(self).schedule_running is BatchingPolicy.schedule_running:
            return self._schedule(view, budget)
        tokens, preempt = self.schedule_running(view, budget)
        return tokens, preempt, None

    def _schedule(self, view: ReplicaView, budget: int):
        run = view.running
        P, G, C = run.prompt, run.generated, run.computed
        tokens = list(map(sub, map(add, P, G), C))  # remaining: known - computed
        n_done = run.n_done
        if n_done:
            done = run.done
            tokens = [0 if d else x for x, d in zip(tokens, done)]
        if not tokens:
            return tokens, (), None
        if sum(tokens) > budget:  # give the budget out in admission order
            left = budget
            for i, r in enumerate(tokens):
                tokens[i] = min(r, max(left, 0))
                left -= r
        kv = view.kv
        if kv.mode != GROW:
            return tokens, (), None
        # blocks each row needs before this iteration: ceil((computed + tokens) / bt) - held
        # (rows holding more than they need, after a refused span's growth, need nothing)
        B = run.blocks
        rows, need = kv.growth(C, tokens, B)
        if n_done and rows:
            keep = [j for j, i in enumerate(rows) if not done[i]]
            rows, need = [rows[j] for j in keep], [need[j] for j in keep]
        total = sum(need)
        avail = kv.free_blocks
        if total <= avail:
            return tokens, (), (rows, need)
        need_of = dict(zip(rows, need))
        preempt = []
        for r in self.order.victims(run).tolist():
            if total <= avail:
                break
            if n_done and done[r]:  # a finished (held) row is never preempted: it would finish twice
                continue
            preempt.append(r)
            total -= need_of.get(r, 0)
            avail += B[r]
            tokens[r] = 0
        return tokens, tuple(preempt), None

    def admit(self, view: ReplicaView, budget: int, n_running: int, taken: int = 0) -> tuple[tuple[int, int], ...]:
        """Waiting sequences to start, ``(position, tokens)``, in order, head-of-line, within
        the free blocks less ``taken`` (those the running rows take this iteration)."""
        if not view.waiting:
            return ()
        kv = view.kv
        free = kv.free_blocks - taken - int(self.watermark * kv.total_blocks)
        ahead = taken  # blocks taken from the free queue's head before the next admission
        out = []
        for pos, w in enumerate(view.waiting):
            if budget <= 0 or n_running >= self.max_num_seqs:
                break
            computed = computed_after(kv, w, ahead)
            rem = w.prompt + w.generated - computed
            if rem > budget and not self.chunked:
                break
            t, need, check = self._head_blocks(kv, w, computed, rem, budget)
            if check > free:
                break
            out.append((pos, t))
            free -= need
            ahead += need - computed // kv.block_tokens  # (its cached blocks leave the queue's middle)
            budget -= t
            n_running += 1
        return tuple(out)

    def _head_blocks(self, kv, w, computed: int, rem: int, budget: int) -> tuple[int, int, int]:
        """``(tokens, need, check)`` for admitting ``w`` with ``computed`` of its tokens cached
        and ``rem`` left to compute: the tokens it computes now, the blocks they take, and the
        blocks that must be free (its whole remaining prompt's with ``reserve_full_prompt``).
        Blocks of a cached prefix that other sequences hold are not taken (``shared``)."""
        t = min(rem, budget)
        need = kv.admit_blocks(w.prompt, w.output, computed + t) - w.shared
        check = kv.admit_blocks(w.prompt, w.output, computed + rem) - w.shared if self.reserve_full_prompt else need
        return t, need, check

    def refusal(self, view: ReplicaView) -> "str | None":
        """Why :meth:`admit` takes nothing on a replica where nothing runs (so no slot, token
        or block is taken), with the numbers: the first limit its head hits, in the order
        :meth:`admit` checks them (a stalled replica fails its head with this reason). None
        when it would admit the head: the memory pool then refused the blocks counted free."""
        w, kv = view.waiting[0], view.kv
        computed = computed_after(kv, w, 0)
        rem = w.prompt + w.generated - computed
        budget = self.max_num_batched_tokens
        if rem > budget and not self.chunked:
            return (f"its {rem} tokens to compute exceed max_num_batched_tokens={budget}, "
                    f"and {type(self).__name__} runs a prompt whole")
        need = self._head_blocks(kv, w, computed, rem, budget)[2]
        wm = int(self.watermark * kv.total_blocks)
        total, unheld, free = kv.total_blocks, kv.unheld_blocks, kv.free_blocks
        kept = f", the watermark keeps {wm}" if wm else ""
        if need > unheld - wm:
            return f"needs {need} KV blocks, {unheld} of {total} are free{kept}"
        if need > free - wm:  # (a pool that rounds or fragments: fewer than the free blocks at once)
            pool = f"the empty {type(kv.pool).__name__}" if unheld == total else f"with {unheld} free, the {type(kv.pool).__name__}"
            return f"needs {need} KV blocks, {pool} grants at most {free} of its {total} at once{kept}"
        return None
