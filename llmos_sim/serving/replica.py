"""A serving replica: one SimPy process running the iteration loop.

Each iteration the replica asks its batching policy for a decision on a read-only view,
applies it (preemptions, admissions, KV growth through the :class:`KVCacheManager`), asks the
cost model how long the iteration takes, waits that long, then advances token counts and
records first tokens and finishes. Nothing else mutates the replica's sequences.

Fast-forward: when a decision is pure decode for every running sequence (no admission, no
preemption, no prefill), the same decision would repeat until something arrives, a sequence
finishes, or blocks run out (with prefix caching, unless a waiting sequence's hit takes
evictable units: :meth:`Replica._hits_may_shrink`). The replica then runs ``k`` such
iterations in one step: ``k`` is the largest count such that (a) no sequence finishes
before the last of them, (b) the blocks all of them need fit in the free blocks now (they
are allocated at the span's start), (c) every iteration after the first starts before the
next arrival (an arrival at time ``a`` is seen by an iteration starting at ``s >= a``), (d)
all start before ``max_time_s``. Which arrivals count (:attr:`Replica.own_cuts`): those
routed to this replica — the span is then planned without them and cut when one lands
(:meth:`Replica._cut_span`), its blocks taken when it ends (:meth:`Replica._settle`), so its
records do not depend on traffic routed elsewhere — or the next arrival that
``next_arrival`` tells, known when the span is planned: any arrival, as before, or, where the
router chose every request's replica before the run, the next one queued here (the same spans
as cuts by its own arrivals, none of them cut). The span is logged as one
``BATCH_SPAN`` record (or ``k`` ``BATCH`` records when ``per_iteration_records``); request
events are exact either way. The only approximation is
that the KV timeline shows a span's blocks from the span's start. A span's length and total
time come in closed form from the cost model (:meth:`CostModel.decode_span`), its blocks from
one pool call (:meth:`KVCacheManager.grow_many`).

Running ahead of SimPy: when an iteration (or span) would end strictly before the next event
scheduled anywhere (``env.peek()``), nothing else can happen in between, so the replica does
not yield; it advances its own clock ``self.now`` and carries on, and yields only at an event
it must order against (exactly at the end time it computed, see :meth:`Replica._at`). Every
record keeps the time and the order it has with one SimPy step per iteration. Iterations that
may finish or fail a request always yield when others react to those at once (a service host on
the shared cluster counts them; ``sync_finishes``), so SimPy's clock must be the record's time;
a standalone :class:`~llmos_sim.serving.system.ServingSystem`, where nothing does, runs on.

Cost: one pass over the running rows per iteration or span (plain lists, see
:class:`~llmos_sim.serving.view.SeqTable`), plus one pool call per span for the sequences
that cross a block boundary.
"""
from __future__ import annotations

from bisect import bisect_right
from operator import sub
from typing import TYPE_CHECKING

import numpy as np
import simpy
from simpy.events import NORMAL

from llmos_sim import events as E
from llmos_sim.kernel import Instant, move_to, push_at, queue_of
from llmos_sim.policies.batching.base import computed_after
from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.serving.iteration import IterationPlan, advance, prefill_shape, span_on_free_blocks
from llmos_sim.serving.kv import KVCacheManager
from llmos_sim.serving.view import GROW, BatchDecision, ReplicaView, SeqTable, WaitingSeq, block_growth, blocks_for

if TYPE_CHECKING:
    from llmos_sim.policies.batching.base import BatchingPolicy
    from llmos_sim.workload.requests import Request


class _Span:
    """A fast-forwarded decode span whose blocks are not taken yet (see :meth:`Replica._settle`):
    what :meth:`Replica._span_length` needs to cut it at another limit, and where its records are."""

    __slots__ = ("t", "n_seqs", "dec_ctx", "k_fin", "n_live", "kw", "c", "b", "live", "free", "later", "k", "dur",
                 "plan", "n_dec", "n_rows", "c_sum", "adj", "itl", "pos", "pure", "growth")

    def __init__(self, t, n_seqs, dec_ctx, k_fin, n_live, kw, c, b, live, free, later, k, dur) -> None:
        self.t, self.n_seqs, self.dec_ctx, self.k_fin, self.n_live, self.kw = t, n_seqs, dec_ctx, k_fin, n_live, kw
        self.c, self.b, self.live, self.free, self.later, self.k, self.dur = c, b, live, free, later, k, dur
        self.plan = None
        self.n_dec = self.n_rows = self.c_sum = 0
        self.adj = None
        self.itl = (0, 0)  # its entries in Replica._itl
        self.pos = 0  # position of its BATCH_SPAN record in the log (its KV_SAMPLE follows)
        self.pure = True  # the decision's rows all decode (see IterationPlan.pure)
        self.growth = None  # (k, its block growth) when counted (see Replica._span_length)


class Replica:
    """One model replica (``tp`` devices) with its batching policy, KV cache and cost model."""

    def __init__(self, index: int, env: "simpy.Environment", log: E.EventLog, policy: "BatchingPolicy",
                 kv: KVCacheManager, cost: CostModel, next_arrival, max_time_s: float = float("inf"),
                 fast_forward: bool = True, per_iteration_records: bool = False, async_scheduling: bool = False) -> None:
        self.index = index
        self.env, self.log, self.policy, self.kv, self.cost = env, log, policy, kv, cost
        self._next_arrival = next_arrival  # () -> time of the next arrival anywhere (inf if none)
        self.max_time_s = float(max_time_s)
        self.fast_forward = bool(fast_forward) and policy.fast_forward
        self.per_iteration_records = bool(per_iteration_records)
        self.async_scheduling = bool(async_scheduling)
        self._spread = bool(getattr(cost, "wants_decode_spread", False))  # the cost model prices unequal decode rows
        self._to_release: list = []  # async scheduling: finished sequences whose blocks free after the next decision
        self._decisions = 0  # decisions taken so far
        self._hold: dict = {}  # async scheduling: request id -> the decision that cannot see it yet
        self.table = SeqTable()
        self.waiting: list[WaitingSeq] = []
        self._keys: list[tuple] = []
        self.outstanding = 0
        self._admit_seq = 0
        self._wake: "simpy.Event | None" = None
        self._cached_waiting: list[WaitingSeq] = []  # preempted by recompute, blocks maybe cached
        self._hashed: dict = {}  # prefix caching: request id -> its prefix hash blocks (here, not done)
        #: sequences with tokens that sat out an iteration or were preempted -> time of their
        #: last token (for inter-token latencies, see ``E.ITL_ADJUST``)
        self._stalled: dict = {}
        #: the same for whole batches that sat out an iteration together (vLLM v0's prefill-only
        #: iterations), kept cheaply: ``(time, running rows' ids then)``, each list extending the
        #: one before (so a row's stall is the first group holding it); see :meth:`_ungroup`
        self._groups: list[tuple[float, list]] = []
        self._itl: list[tuple] = []  # ITL_ADJUST data not yet logged (see flush_itl)
        self._bpt = kv.bytes_per_token
        self.now = env.now  #: the replica's clock (s); ahead of ``env.now`` while it runs iterations in one step
        #: yield at iterations that may finish a request, so that SimPy's clock is the finish
        #: time when others react to it (a service host); off where nothing does
        self.sync_finishes = True
        #: disaggregation: a prefill replica's hand-off ``(replica, request ids, time)``; it keeps
        #: a request until its first token, then the decode stage takes it (see serving.disagg)
        self.handoff = None
        #: disaggregation: ``() -> event or None``: when nothing can run and blocks of this pool
        #: are held for requests no longer here (a prefill replica keeps a request's KV until its
        #: transfer ends), the event that fires when some are freed; the replica waits for it
        self.held_elsewhere = None
        self.wake_s = env.now  #: time of the event it waits for (an iteration's end; inf: for an arrival)
        # see own_cuts
        self._own_cuts = self._defers = False
        self._pend: _Span | None = None  # the span run now, its blocks not taken yet
        self._wait: Instant | None = None  # the event the loop waits for (an iteration's end)
        self._growth = None  # the block growth _span_length counted for the span it returned
        self._queue = queue_of(env)
        # the log's columns, for the batch records and KV samples (see _records); None for a log
        # of another kind (one that watches the records: they go through its ``emit``)
        self._append = ((log.time.append, log.code.append, log.subject.append, log.data.append)
                        if type(log) is E.EventLog else None)
        self._codes: dict = {}  # kind -> its code in the log, once interned
        self.process = env.process(self._loop())

    # -- arrivals -----------------------------------------------------------------------
    def enqueue(self, req: "Request", landed_s: "float | None" = None, held_blocks: int = 0) -> None:
        """Accept a routed request (the system emitted its REQ_ARRIVE). ``landed_s``
        (disaggregation): the request was prefilled elsewhere, its first token came at
        ``landed_s`` and its prompt's KV has arrived here: it waits as a swapped-out sequence
        whose copy is already paid for (``WaitingSeq.landed``), and decodes on admission;
        ``held_blocks``: the blocks of this pool already allocated to it (the transfer's
        target), which admission does not take again (``WaitingSeq.shared``)."""
        out = self._tokens_out(req)
        if not self.queues(req):
            self.log.emit(self.env.now, E.REQ_FAIL, req.id,
                          ("kv_too_small: " + self.kv.too_small(req.prompt_tokens, out, self.index),))
            return
        if self._pend is not None:  # it joins the first iteration that starts at/after now
            self._cut_span(self.env.now)
        pred = req.predicted_output_tokens if req.predicted_output_tokens is not None else req.output_tokens
        if req.prefix_hashes and self.kv.prefix_caching:
            self.kv.register(req.id, req.prefix_hashes, req.prefix_block_tokens, req.prompt_tokens)
            if self.kv.is_hashed(req.id):
                self._hashed[req.id] = len(req.prefix_hashes)
        if landed_s is None:
            self._insert(WaitingSeq(req.id, req.prompt_tokens, out, req.arrival_s, req.priority,
                                    pred if self.handoff is None else 1))
        else:
            self._insert(WaitingSeq(req.id, req.prompt_tokens, out, req.arrival_s, req.priority, pred, 1,
                                    req.prompt_tokens, True, True, shared=held_blocks, landed=True))
            self._stalled[req.id] = landed_s  # its next token's gap runs from its first
        self.outstanding += 1
        if self.async_scheduling and self._wake is None and self.table.rid:
            self._hold[req.id] = self._decisions + 1  # arrived while an iteration runs: see _admissible
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _tokens_out(self, req: "Request") -> int:
        """The tokens ``req`` generates here: all of them, or up to the first on a prefill replica."""
        return 1 if self.handoff is not None else req.output_tokens

    def queues(self, req: "Request") -> bool:
        """Whether :meth:`enqueue` queues ``req`` (False: it fails it at once, as it can never
        fit in this replica's cache — an arrival that changes nothing here)."""
        return self.kv.can_ever_fit(req.prompt_tokens, self._tokens_out(req))

    def _insert(self, w: WaitingSeq) -> None:
        k = self.policy.order.key(w)
        i = bisect_right(self._keys, k)
        self._keys.insert(i, k)
        self.waiting.insert(i, w)

    def _fail_head(self, reason: str) -> None:
        w = self.waiting.pop(0)
        self._keys.pop(0)
        self.outstanding -= 1
        self.log.emit(self.now, E.REQ_FAIL, w.rid, (reason,))
        if self._groups:
            self._ungroup()
        self._stalled.pop(w.rid, None)
        if w.swapped and self.kv.host is not None:
            self.kv.host.swap_in(w.rid)
        if w.landed:  # (blocks allocated to it before it landed)
            self.kv.release(w.rid)
        if self._hashed:
            self._forget((w.rid,))

    def _unschedulable(self) -> str:
        """The reason a stalled replica fails its head with: the limit it hits, with the
        numbers (:meth:`BatchingPolicy.refusal`), or the memory pool's refusal of blocks the
        count allowed (a fragmenting pool)."""
        why = self.policy.refusal(ReplicaView(self.now, self.table, self.waiting, self.kv))
        if why is None:
            kv = self.kv
            why = (f"the {type(kv.pool).__name__} refuses the blocks the policy counts free "
                   f"({kv.free_blocks} of {kv.total_blocks})")
        return "unschedulable: " + why

    def _yield_landed(self, env) -> bool:
        """Disaggregation, a stalled decode replica: its head (a sequence preempted here, or
        one landed itself) does not fit while sequences landed behind it hold blocks. The head
        goes first — vLLM's scheduler puts preempted requests at the front of its waiting
        queue and serves the rest first come first served —, so the landed ones behind it give
        up their blocks and wait to recompute (a ``req_preempt``, recompute). Without this,
        landed sequences that each hold their prompt's blocks and each need more (the next
        token's block, or static batching's whole reservation) would wait on each other until
        the head failed as unschedulable. Each is released as a recompute preemption of a
        running row is (:meth:`_evict`): with prefix caching, a hashed one's units stay in the
        cache and it takes back those still there when it returns (:meth:`_refresh_hits`); an
        unhashed one's computed blocks stay findable in the free queue. False (nothing done)
        in any other case."""
        behind = [w for w in self.waiting[1:] if w.landed]
        kv = self.kv
        for w in behind:
            cached = kv.prefix_caching and w.rid not in self._hashed  # as :meth:`_evict` releases a row
            computed = w.computed
            w.landed = w.swapped = False  # (first: it no longer holds blocks when they free)
            w.computed = w.shared = 0
            kv.release(w.rid, computed if cached else 0)
            if cached:
                self._cached_waiting.append(w)
            self.log.emit(self.now, E.REQ_PREEMPT, w.rid, (self.index, "recompute"))
        return bool(behind)

    def _forget(self, rids) -> None:
        """Prefix caching: these requests are done here (finished or failed)."""
        hashed, forget = self._hashed, self.kv.forget
        for r in rids:
            if hashed.pop(r, None) is not None:
                forget(r)

    def _refresh_hits(self) -> None:
        """Prefix caching: the cached prefix each waiting hashed sequence would take now
        (``computed``, ``hit``, ``shared`` of its entry), for the entries a policy can reach:
        admission is head-of-line and each admission takes at least one new block, one
        sequence slot and one token (all of its remaining tokens, or the rest of the token
        budget), so no policy looks past the entry where the free blocks, the free slots or
        the budget (``max_num_batched_tokens``) run out."""
        kv, hashed, pol = self.kv, self._hashed, self.policy
        reach = min(len(self.waiting), kv.free_blocks + 1, getattr(pol, "max_num_seqs", 1 << 30) - len(self.table) + 1)
        budget = getattr(pol, "max_num_batched_tokens", 1 << 60)
        for w in self.waiting[:max(reach, 1)]:
            if w.rid in hashed and not w.landed:  # (a landed one holds its blocks already)
                known = w.prompt + w.generated
                if w.swapped:  # its computed tokens come back from host memory, less what is cached
                    w.hit, w.shared = kv.prefix_hit(w.rid, min(known - 1, w.computed))
                else:
                    w.hit, w.shared = kv.prefix_hit(w.rid, known - 1)
                    w.computed = w.hit
            budget -= w.prompt + w.generated - w.computed
            if budget <= 0:
                break

    def _hits_may_shrink(self) -> bool:
        """Prefix caching: a waiting sequence's hit takes evictable units (blocks no sequence
        holds, counted as free), which the next iterations' growth may evict. Its admission
        would then need fewer blocks than now, so the next decision may admit it and no decode
        span may run: an eviction by this iteration's growth changes the next decision."""
        if not self._hashed:
            return False
        b = self.kv.block_tokens
        return any(w.hit // b > w.shared for w in self.waiting)

    @property
    def kv_used_frac(self) -> float:
        """Blocks held / all blocks, now. In a span whose blocks are not taken yet (see
        :meth:`_settle`), the blocks of its iterations that started before now count as held."""
        p, kv = self._pend, self.kv
        if p is None or kv.mode != GROW or not kv.total_blocks:
            return kv.used_frac
        k = self.cost.decode_span(p.n_seqs, p.dec_ctx, p.k, p.n_live, p.t, self.env.now, **p.kw)[0]
        held = kv.total_blocks - kv.unheld_blocks + sum(block_growth(p.c, k, p.b, kv.block_tokens)[1])
        if p.later is not None:
            held += sum(p.later[1])
        return held / kv.total_blocks

    # -- the loop -----------------------------------------------------------------------
    def _loop(self):
        env = self.env
        heap = self._queue[0]  # SimPy's event heap: its head is ``env.peek()``
        stalls = 0
        emptied = False  # a caching pool's cache emptied in this stall (once: a retry may refill it)
        while True:
            if not self.table.rid and not self.waiting:  # no rows running, none waiting
                if self._to_release:
                    self._release_finished()
                if self.now > env.now:  # catch SimPy up with the iterations run ahead of it
                    yield self._at(self.now)
                self._wake = env.event()
                self.wake_s = float("inf")  # (no time: an arrival wakes it)
                yield self._wake
                self._wake = None
                self.now = env.now
                continue
            if self.now >= self.max_time_s:
                return
            plan = self._start()
            if self._to_release:
                self._release_finished()
            if plan is None:  # nothing could run: re-decide; break a true stall by failing the head
                stalls += 1
                if stalls >= 2:
                    if self._yield_landed(env):  # a preempted head goes first: the landed behind it recompute
                        stalls = 0
                        continue
                    ev = self.held_elsewhere() if self.held_elsewhere is not None else None
                    if ev is not None:  # blocks held for requests gone from here: wait for them
                        if self.now > env.now:
                            yield self._at(self.now)
                        self.wake_s = float("inf")
                        yield ev
                        self.now = env.now
                        stalls = 0
                        continue
                    if not self.waiting:
                        raise RuntimeError(f"replica {self.index}: running sequences but nothing schedulable")
                    if not emptied and self.kv.empty_pool_cache():  # a caching pool's reserved memory,
                        emptied = True  # released: re-decide (a refused allocation may reserve it again)
                        stalls = 0
                        continue
                    if self.now > env.now:  # others see a failure at SimPy's time: catch up first
                        yield self._at(self.now)
                    self._fail_head(self._unschedulable())
                    stalls = 0
                    emptied = False
                continue
            stalls = 0
            emptied = False
            end = self.now + plan.duration_s
            if (heap and end >= heap[0][0]) or (plan.may_finish and self.sync_finishes):
                # something else may happen first (let SimPy order it), or this iteration may
                # finish a request, which others see at once (a service host counts them)
                yield self._at(end)
                end = self.wake_s  # (an arrival here may have cut a span short: _cut_span)
                self._wait = None
            # else: nothing is scheduled before ``end`` (and nothing can be: only this process
            # runs until it yields), so the next SimPy step would resume exactly here at ``end``
            self.now = end
            if self._pend is not None:
                self._settle()
            self._finish(plan)

    def _at(self, time_s: float) -> Instant:
        """An event that fires at ``time_s`` exactly, ordered like ``env.timeout`` (normal
        priority, after what is already scheduled then). ``env.timeout(time_s - env.now)``
        would round ``env.now + delay`` again when this replica's clock is ahead of SimPy's.
        A light :class:`~llmos_sim.backend.Instant` (the process adds its own callback)."""
        self.wake_s = time_s
        self._wait = ev = push_at(self._queue, time_s, Instant(), NORMAL)
        return ev

    def _start(self) -> IterationPlan | None:
        """Decide and apply the next iteration (or span); returns its plan for :meth:`_finish`
        (None when nothing could run)."""
        log, kv, t = self.log, self.kv, self.now
        tab = self.table
        if self._cached_waiting:  # prefix caching: how much of a preempted sequence is still cached
            for w in self._cached_waiting:
                w.computed = kv.cached_tokens(w.rid, w.prompt + w.generated)
        if self._hashed and self.waiting:
            self._refresh_hits()
        self._decisions += 1
        held = False
        view = ReplicaView(t, tab, self.waiting, kv)
        # every running row decodes, nothing else happens (the common decision, told cheaply)
        grow = self.policy.decode_growth(view) if not self._hold else None
        quick = grow is not None
        if quick:
            n_run = len(tab.rid)
            tokens = [1] * n_run
            admit = preempt = ()
            hold_finished = False
            swap_bytes = 0
        else:
            if self._hold:
                d, held = self._admissible(view)
            else:
                d: BatchDecision = self.policy.next_batch(view)
            tokens: list[int] = d.tokens.tolist()
            admit, preempt, hold_finished = d.admit, d.preempt, d.hold_finished
            swap_bytes = 0
            requeue = ()
            grow = d.grow
            if preempt:
                tokens, swap_bytes, requeue = self._preempt(d, tokens, t)
                grow = None  # the policy's rows are before the preemptions
            n_run = len(tokens)
            if admit:
                swap_bytes += self._admit(admit, tokens, t, grow)
            for w in requeue:
                self._insert(w)
        later = None  # this iteration's growth, taken with a decode span's (see _span)
        if grow is not None and not admit and kv.growth_in_one_call:
            later = self._count_growth(grow)
        else:
            tokens = self._grow(tokens, t, grow, n_run)
            quick = quick and len(tokens) == n_run  # (a fragmenting pool may refuse rows)
        if kv.transfer_bytes:  # host tier: prefix units offloaded or copied back since the last iteration
            swap_bytes += kv.take_transfer_bytes()
        n_tok = len(tokens) if quick else sum(tokens)  # (quick: one token per row)
        if not n_tok and not swap_bytes:
            self._take_growth(later)
            return None
        # -- the batch's shape (one pass over the rows) ----------------------------------
        P, G, C = tab.prompt, tab.generated, tab.computed
        n_rows, n_done = len(tokens), tab.n_done
        n_dec = dec_ctx = n_seqs = 0
        pre = []  # rows computing a prefill / recompute chunk
        c_sum = sum(C)
        pure = False
        # inter-token latency: rows back from a stall emit a token now (see ``E.ITL_ADJUST``)
        stalled = self._stalled
        back: list = []  # (wait_s, in_decode) per such row
        n_pad = 0  # static batching's padding rows
        groups = self._groups
        counted = ()  # ((wait_s, in_decode), rows) for whole groups back from a stall
        if (quick or n_rows and not n_done and n_tok == n_rows and min(tokens) == 1
                and sum(P) + sum(G) - c_sum == n_rows) and min(G) > 0:
            # pure decode (the common case), without the pass: one token per row, none
            # missing more than it computes (tokens <= remaining), so every row misses
            # exactly one, after its first token
            n_dec = n_seqs = n_rows
            dec_ctx = c_sum
            pure = True
            if groups and not stalled and tab.rid[:len(groups[-1][1])] == groups[-1][1]:
                counted = self._resume_groups(t)  # the batch that sat out is back, whole: one group each
            elif stalled or groups:
                if groups:
                    self._ungroup()
                back = [(t - stalled.pop(r), 1) for r in tab.rid if r in stalled]
        elif (n_run and not tokens[0] and n_run == n_rows - len(admit) and not n_done and not any(tokens[:n_run])
              and min(G[:n_run]) > 0 and sum(P[:n_run]) + sum(G[:n_run]) - sum(C[:n_run]) == n_run
              and self._group_stall(t, n_run)):
            # every running row decodes but sits this iteration out (a prefill-only iteration):
            # one group instead of one entry per row; the admitted rows make the shape
            for i in range(n_run, n_rows):
                x = tokens[i]
                if x:
                    n_seqs += 1
                    if x == 1 and G[i] and P[i] + G[i] - C[i] == 1:
                        n_dec += 1
                        dec_ctx += C[i]
                    else:
                        pre.append(i)
        elif n_done:
            if groups:
                self._ungroup()
            for i, (x, p, g, c, done, r) in enumerate(zip(tokens, P, G, C, tab.done, tab.rid)):
                if x:
                    n_seqs += 1
                    if done:  # held rows decode as padding
                        n_dec += 1
                        dec_ctx += c
                        n_pad += 1
                        continue
                    if x == 1 and g and p + g - c == 1:
                        n_dec += 1
                        dec_ctx += c
                    else:
                        pre.append(i)
                    if stalled and r in stalled and c + x == p + g:
                        back.append((t - stalled.pop(r), int(x == 1)))
                elif not done and g and p + g - c == 1:  # a decoding row sits this one out
                    stalled.setdefault(r, t)
        else:
            if groups:
                self._ungroup()
            rid = tab.rid
            for i, (x, p, g, c) in enumerate(zip(tokens, P, G, C)):
                if x:
                    n_seqs += 1
                    if x == 1 and g and p + g - c == 1:  # decoding: one token after a complete context
                        n_dec += 1
                        dec_ctx += c
                    else:
                        pre.append(i)
                    if stalled and rid[i] in stalled and c + x == p + g:  # back: its token ends a long gap
                        back.append((t - stalled.pop(rid[i]), int(x == 1)))
                elif g and p + g - c == 1:  # a decoding row sits this one out (its gap grows)
                    stalled.setdefault(rid[i], t)
        adj = self._itl_groups(back, n_pad, counted) if back or n_pad or counted else None
        dec_ctx += n_dec
        n_pre = n_tok - n_dec
        if n_pre:
            pairs, pre_ctx, n_logits = prefill_shape(tokens, pre, P, G, C)
            pre_ctx += n_pre
            n_logits += n_dec
        else:
            pairs = pre_ctx = 0
            n_logits = n_dec
        # -- fast-forward a span of identical decode iterations ---------------------------
        if (self.fast_forward and n_pre == 0 and not admit and not preempt and not swap_bytes and n_seqs == n_rows
                and not self._to_release  # blocks freed after this decision may change the next one
                and not held  # a request this decision could not see joins the next one
                and not self._hits_may_shrink()):
            k, (dur, durs), fin = self._span(n_seqs, dec_ctx, t, later)
            if k > 1:  # (it took ``later``)
                if durs is not None:  # per-iteration records
                    starts = t + np.concatenate([[0.0], np.cumsum(durs[:-1])])
                    for j, (s_, d_) in enumerate(zip(starts.tolist(), durs.tolist())):
                        log.emit(s_, E.BATCH, self.index, (0, n_dec, n_seqs, d_, kv.used_bytes))
                        if adj:
                            self._note_itl(adj if j == 0 else [a for a in adj if a[0] < 0], 1)
                    log.emit(t, E.KV_SAMPLE, self.index,
                             (kv.used_bytes, (c_sum + k * (n_rows - n_done)) * self._bpt, kv.pool.capacity_bytes,
                              kv.free_blocks))
                else:
                    used = kv.used_bytes
                    self._records(t, E.BATCH_SPAN, (k, 0, n_dec * k, n_seqs, dur, used),
                                  (used, (c_sum + k * (n_rows - n_done)) * self._bpt, kv.pool.capacity_bytes,
                                   kv.free_blocks))
                    i0 = len(self._itl)
                    if adj:  # (naming the batch record: the one before the KV sample)
                        self._note_itl(adj, k, 2)
                plan = IterationPlan(dur, tokens, k, hold_finished, fin, True)
                p = self._pend
                if p is not None:  # its records are written again when its blocks are taken
                    p.plan, p.n_dec, p.n_rows, p.c_sum, p.adj = plan, n_dec, n_rows - n_done, c_sum, adj
                    p.itl, p.pos = (i0, len(self._itl)), len(log.subject) - 2
                    p.pure = pure
                return plan
        self._take_growth(later)
        used = kv.used_bytes
        spread = self._decode_spread(tokens, pre, pure) if self._spread and n_dec > 1 else (0, 0)
        shape = BatchShape(n_pre, pairs, pre_ctx, n_dec, dec_ctx, n_seqs, n_logits, swap_bytes, *spread)
        dur = self._iteration_s(shape, tokens)
        tok = sum(x for x, done in zip(tokens, tab.done) if not done) if n_done else n_tok
        self._records(t, E.BATCH, (n_pre, n_dec, n_seqs, dur, used),
                      (used, (c_sum + tok) * self._bpt, kv.pool.capacity_bytes, kv.free_blocks))
        if adj:
            self._note_itl(adj, 1, 2)
        may_finish = min(map(sub, tab.output, tab.generated), default=2) <= 1  # a row one token short (or held done)
        return IterationPlan(dur, tokens, 1, hold_finished, may_finish, pure)

    def _admissible(self, view: ReplicaView) -> tuple[BatchDecision, bool]:
        """Async scheduling: the decision on a view without the requests that arrived while the
        iteration just ended was running, and whether there were any. With async scheduling
        (one pipeline stage) vLLM's engine core keeps two batches in flight
        (``max_concurrent_batches`` = 2; ``EngineCore.step_with_batch_queue``): it decides and
        launches step ``n + 1`` right after launching step ``n``, while ``n`` runs, waits for
        ``n``'s output, and then decides ``n + 2``; a request that arrives during step ``n`` is
        first seen by the decision for ``n + 2``. Here, the decision taken when ``n`` ends is
        that for ``n + 1``: such a request waits for the next one (and no decode span runs
        meanwhile). When no row is running, no step ``n + 1`` was
        in flight (vLLM schedules nothing then and decides again at once): nothing is held."""
        n = self._decisions
        hold = self._hold
        held = {r for r, h in hold.items() if h == n} if view.running.rid else ()
        for r in [r for r, h in hold.items() if h <= n]:
            del hold[r]
        waiting = view.waiting
        if not held:
            return self.policy.next_batch(view), False
        idx = [i for i, w in enumerate(waiting) if w.rid not in held]
        view.waiting = [waiting[i] for i in idx]
        d = self.policy.next_batch(view)
        view.waiting = waiting
        if d.admit:
            d.admit = tuple((idx[p], x) for p, x in d.admit)
        return d, len(idx) < len(waiting)

    def _decode_spread(self, tokens: list[int], pre: list[int], pure: bool) -> tuple[int, int]:
        """The longest and the shortest context of the rows decoding now (new token included),
        for a cost model that prices unequal decode rows (``wants_decode_spread``)."""
        C = self.table.computed
        if pure:
            return max(C) + 1, min(C) + 1
        skip = set(pre)
        cs = [c for i, (x, c) in enumerate(zip(tokens, C)) if x and i not in skip]
        return max(cs) + 1, min(cs) + 1

    def _group_stall(self, t: float, n_run: int) -> bool:
        """The first ``n_run`` rows (all decoding) sit out the iteration at ``t``: note them as
        one group (False, nothing noted, when per-row stalls are pending: the caller then
        takes the general path)."""
        if self._stalled:
            return False
        rids = self.table.rid[:n_run]
        groups = self._groups
        if groups and rids[:len(groups[-1][1])] != groups[-1][1]:
            self._ungroup()
            return False
        if not groups or len(rids) > len(groups[-1][1]):
            groups.append((t, rids))
        return True

    def _resume_groups(self, t: float) -> list[tuple]:
        """Every row of the stalled groups decodes at ``t``: ``((wait_s, 1), rows)`` per group."""
        back = []
        before = 0
        for t0, rids in self._groups:
            if len(rids) > before:
                back.append(((t - t0, 1), len(rids) - before))
            before = len(rids)
        self._groups = []
        return back

    def _ungroup(self) -> None:
        """Turn the stalled groups into per-row entries (a row's first group is its stall)."""
        stalled = self._stalled
        for t0, rids in self._groups:
            for r in rids:
                stalled.setdefault(r, t0)
        self._groups = []

    @staticmethod
    def _itl_groups(back: list, n_pad: int, counted=()) -> list[tuple]:
        """``E.ITL_ADJUST`` data for one iteration: ``(n, wait_s, in_decode)`` per group of
        rows back from a stall with the same wait (``back``: one ``(wait_s, in_decode)`` per
        row; ``counted``: ``((wait_s, in_decode), rows)``), and ``(-n_pad, 0.0, 1)`` for padding."""
        groups: dict = {}
        for key, n in counted:
            groups[key] = groups.get(key, 0) + n
        for key in back:
            groups[key] = groups.get(key, 0) + 1
        out = [(n, w, dec) for (w, dec), n in groups.items()]
        if n_pad:
            out.append((-n_pad, 0.0, 1))
        return out

    def _records(self, t: float, kind: str, batch: tuple, kv_sample: tuple) -> None:
        """Log an iteration's (or a span's) batch record of ``kind`` and its ``E.KV_SAMPLE`` at
        ``t``: appended to the log's columns directly, as the engine appends its hot records
        (each kind interned at its first record, as ``emit`` would)."""
        log, idx = self.log, self.index
        if self._append is None:
            log.emit(t, kind, idx, batch)
            log.emit(t, E.KV_SAMPLE, idx, kv_sample)
            return
        codes = self._codes
        c = codes.get(kind)
        if c is None:
            c = codes[kind] = log.code_of(kind)
        ck = codes.get(E.KV_SAMPLE)
        if ck is None:
            ck = codes[E.KV_SAMPLE] = log.code_of(E.KV_SAMPLE)
        ta, ca, sa, da = self._append
        ta(t)
        ca(c)
        sa(idx)
        da(batch)
        ta(t)
        ca(ck)
        sa(idx)
        da(kv_sample)

    def _note_itl(self, adj: list[tuple], k: int, back: int = 1) -> None:
        """Keep ``adj`` (from :meth:`_itl_adjust`) for the batch record of ``k`` iterations
        logged ``back`` records ago (1: the last; padding repeats in each of its iterations);
        :meth:`flush_itl` logs them."""
        seq = len(self.log.records) - back
        for n, w, dec in adj:
            self._itl.append((seq, n * k if n < 0 else n, w, dec))

    def flush_itl(self, time_s: float) -> None:
        """Log the inter-token latency corrections kept so far (``E.ITL_ADJUST``, naming their
        batch records), at ``time_s``. The serving system calls this when the run ends, so
        that the run's own records keep their numbers (the corrections follow them)."""
        emit, idx = self.log.emit, self.index
        for d in self._itl:
            emit(time_s, E.ITL_ADJUST, idx, d)
        self._itl = []

    def _iteration_s(self, shape: BatchShape, tokens: list[int]) -> float:
        """How long the iteration about to start takes: the cost model's time for its shape.
        ``tokens[i]`` is what row ``i`` of :attr:`table` computes in it (0: idle). The seam for
        real execution: a replica that runs the batch on a device overrides this and returns
        the measured time (see ``llmos_sim.backends.torch_gpu.serving``)."""
        return self.cost.iteration_s(shape)

    def _preempt(self, d: BatchDecision, tokens: list[int], t: float):
        """Apply the decision's preemptions; returns the other rows' tokens, the swap bytes and
        the evicted sequences' waiting entries (re-queued after this iteration's admissions)."""
        tab = self.table
        swap = d.preempt_mode == "swap"
        swap_bytes = 0
        requeue = []
        host = self.kv.host
        for r in d.preempt:
            nbytes = tab.computed[r] * self._bpt
            # a bounded host tier: a swap that does not fit there is a recompute
            out = swap and (host is None or host.swap_out(tab.rid[r], nbytes))
            requeue.append(self._evict(r, out, t))
            if out:
                swap_bytes += nbytes
        return self._drop(set(d.preempt), tokens), swap_bytes, requeue

    def _admit(self, admit: tuple, tokens: list[int], t: float, grow=None) -> int:
        """Move the admitted waiting sequences into the table (their tokens appended to
        ``tokens``: the running rows' before); returns the bytes swapped back in. ``grow``:
        the decision's block growth of the running rows (None: counted here)."""
        kv, log = self.kv, self.log
        pos = [p for p, _ in admit]
        entries = [self.waiting[p] for p in pos]
        if self._cached_waiting:
            self._requeued_hits(entries, [x for _, x in admit], tokens, grow, t)
        for p in sorted(pos, reverse=True):
            del self.waiting[p]
            del self._keys[p]
        swap_bytes = 0
        rows = []
        hashed, cached = self._hashed, self._cached_waiting
        for w in entries:
            if cached and w in cached:
                cached.remove(w)
                kv.take_cached(w.rid, w.computed)
            blocks = w.shared if w.landed else 0  # (a landed sequence's blocks were allocated for it)
            if hashed and w.rid in hashed and not w.landed:  # prefix caching: it starts holding its cached prefix
                got = kv.take_prefix(w.rid, w.hit)
                if got < w.hit:  # (a fragmenting pool refused a host copy's blocks)
                    if not w.swapped:
                        w.computed = got
                    w.hit = got
                blocks = w.hit // kv.block_tokens
                if not w.started:
                    log.emit(t, E.REQ_CACHE, w.rid, (self.index, w.hit, kv.prefix_units(w.rid, w.hit),
                                                     hashed[w.rid], kv.last_host_units))
            if not w.started:
                log.emit(t, E.REQ_SCHEDULE, w.rid, (self.index,))
                w.started = True
            if w.swapped and not w.landed:
                swap_bytes += (w.computed - w.hit) * self._bpt
                if kv.host is not None:
                    kv.host.swap_in(w.rid)
            rows.append((w.rid, w.prompt, w.output, w.computed, w.generated, blocks, self._admit_seq, w.priority,
                         w.pred, w.arrival_s, False))
            self._admit_seq += 1
        self.table.append(rows)
        tokens.extend([n for _, n in admit])
        return swap_bytes

    def _requeued_hits(self, entries: list[WaitingSeq], chunks: list[int], tokens: list[int], grow, t: float) -> None:
        """Prefix caching: the tokens each admitted sequence preempted by recompute finds
        cached, counted as :meth:`BatchingPolicy.admit` counts them (:func:`computed_after`:
        after the running rows' growth and the admissions before it). A policy that counted
        them before that took no fewer, so its chunk never runs past the sequence's tokens."""
        kv = self.kv
        ahead = self.policy._growth(ReplicaView(t, self.table, self.waiting, kv), tokens, grow)
        for w, x in zip(entries, chunks):
            w.computed = computed_after(kv, w, ahead)
            ahead += kv.admit_blocks(w.prompt, w.output, w.computed + x) - w.shared - w.computed // kv.block_tokens

    def _grow(self, tokens: list[int], t: float, grow=None, n_run: int = 0) -> list[int]:
        """Allocate the blocks this iteration's tokens need (grow: up to ``ceil((computed +
        tokens) / block_tokens)``; reserve: the whole reservation at a row's first tokens).
        Rows the pool refuses (a fragmenting pool) go back to waiting; returns the tokens of
        the rows that stay. ``grow``: the decision's ``(rows, blocks)`` for the first
        ``n_run`` rows (see :class:`BatchDecision`); only the rows after them (admitted now)
        are then scanned."""
        kv, tab = self.kv, self.table
        B, C = tab.blocks, tab.computed
        bt = kv.block_tokens
        if kv.mode == GROW:
            if grow is not None:
                rows, need = grow
                if len(tokens) == n_run + 1:  # one admitted row (the common case): block_growth inlined
                    c, x, b = C[n_run], tokens[n_run], B[n_run]
                    if c + x > b * bt:
                        rows = rows + [n_run]
                        need = need + [(c + x + bt - 1) // bt - b]
                elif len(tokens) > n_run:  # admitted rows (never held finished)
                    new, more = block_growth(C[n_run:], tokens[n_run:], B[n_run:], bt)
                    if new:
                        rows = rows + [n_run + i for i in new]
                        need = need + more
                if not rows:
                    return tokens
            else:
                rows, need = block_growth(C, tokens, B, bt)
                if tab.n_done and rows:
                    done = tab.done
                    keep = [j for j, i in enumerate(rows) if not done[i]]
                    rows, need = [rows[j] for j in keep], [need[j] for j in keep]
                if not rows:
                    return tokens
        else:
            rows = [i for i, (x, b) in enumerate(zip(tokens, B)) if x > 0 and b == 0]
            if not rows:
                return tokens
            rt, P, O = kv.reserve_tokens, tab.prompt, tab.output
            need = [blocks_for(rt or P[i] + O[i], bt) for i in rows]
        rid = tab.rid
        seqs = [rid[i] for i in rows]
        failed = []
        j = 0  # rows[:j] are done; like one grow call per row, in order, carrying on after a refusal
        while j < len(rows):
            ok = kv.grow_many(seqs[j:], need[j:]) if j or len(rows) > 1 else int(kv.grow(seqs[0], need[0]))
            for r, n in zip(rows[j:j + ok], need[j:j + ok]):
                B[r] += n
            j += ok
            if j < len(rows):
                failed.append(rows[j])
                j += 1
        if not failed:
            return tokens
        for r in failed:  # fresh admissions return quietly; others are preempted
            self._insert(self._evict(r, False, t, quiet=B[r] == 0 and C[r] == 0))
        return self._drop(set(failed), tokens)

    def _count_growth(self, grow) -> "tuple[list, list[int]] | None":
        """The decision's block growth (see :class:`BatchDecision`) counted in the table now,
        its pool call left for later (:meth:`_take_growth`, or with a span's in :meth:`_span`;
        only where :attr:`KVCacheManager.growth_in_one_call`, so it cannot be refused):
        ``(sequences, blocks)``, or None when no row grows."""
        rows, need = grow
        if not rows:
            return None
        B, rid = self.table.blocks, self.table.rid
        for r, n in zip(rows, need):
            B[r] += n
        return [rid[r] for r in rows], need

    def _take_growth(self, later) -> None:
        """Take the blocks :meth:`_count_growth` counted (nothing when None)."""
        if later is not None:
            self.kv.grow_many(*later)

    def _drop(self, gone: set, tokens: list[int]) -> list[int]:
        """Drop the rows ``gone`` (already evicted); returns the other rows' tokens. A held
        batch (static) left with finished rows only is over: their cache is released, as
        :meth:`_finish` does at its last finish (else padding would run forever)."""
        tab = self.table
        tab.drop(gone)
        if tab.n_done and tab.n_done == len(tab):
            for r in tab.rid:
                self.kv.release(r)
            tab.clear()
            return []
        return [x for i, x in enumerate(tokens) if i not in gone]

    def _span(self, n_seqs: int, dec_ctx: int, t: float, later=None):
        """How many identical decode iterations to run from now, their total duration, and
        whether the last of them finishes a sequence; ``k`` = 1 (no span) when fewer than two
        would run. Takes the blocks the whole span needs (after this iteration's, held) — or,
        when it can be cut short later (:attr:`defers_spans`), leaves them to :meth:`_settle`.
        ``later``: this iteration's growth, counted in the table but not yet taken from the
        pool (:meth:`_count_growth`); a span (``k`` > 1) takes it, first, in its own pool call."""
        kv, tab = self.kv, self.table
        if tab.n_done:  # static batching: finished rows ride along as padding
            live = [i for i, done in enumerate(tab.done) if not done]
            if not live:
                return 1, (0.0, None), True
            O, G, C, B = tab.output, tab.generated, tab.computed, tab.blocks
            k = min(O[i] - G[i] for i in live)
            c = [C[i] for i in live]
            b = [B[i] for i in live]
        else:
            live = None
            k = min(map(sub, tab.output, tab.generated))
            c, b = tab.computed, tab.blocks
        if k <= 1:
            return 1, (0.0, None), True
        k_fin = k  # the first sequence finishes after k_fin iterations
        n_live = n_seqs - tab.n_done
        kw = {"spread": (max(c) + 1, min(c) + 1)} if self._spread else {}  # the first iteration's rows
        free = kv.free_blocks - (sum(later[1]) if later is not None else 0) if kv.mode == GROW else 0
        if self.per_iteration_records:
            return self._span_iterations(n_seqs, dec_ctx, t, later, live, c, b, k_fin, n_live, kw, free)
        if self._defers:
            # cut only by what concerns this replica: its own arrivals cut it later (_cut_span)
            k, dur = self._span_length(n_seqs, dec_ctx, k_fin, n_live, t, self.max_time_s, kw, c, b, free)
            if k <= 1:
                return 1, (0.0, None), True
            self._pend = p = _Span(t, n_seqs, dec_ctx, k_fin, n_live, kw, c, b, live, free, later, k, dur)
            p.growth, self._growth = self._growth, None
            return k, (dur, None), k == k_fin
        # no iteration of the span may start at/after the next arrival or the stop time
        limit = min(self._next_arrival(), self.max_time_s)
        k, dur = self._span_length(n_seqs, dec_ctx, k_fin, n_live, t, limit, kw, c, b, free)
        if k <= 1:
            return 1, (0.0, None), True
        growth, self._growth = self._growth, None
        if kv.mode == GROW and not self._take_span_blocks(k, c, b, live, later, growth):
            return 1, (0.0, None), True  # a fragmenting pool refused: no span
        return k, (dur, None), k == k_fin

    def _span_length(self, n_seqs: int, dec_ctx: int, k_fin: int, n_live: int, t: float, limit: float, kw: dict,
                     c: list, b: list, free: int) -> tuple[int, float]:
        """The span from ``t`` (at most ``k_fin`` iterations) that ``limit`` cuts (no iteration
        starts at/after it) and the ``free`` blocks allow: ``(k, total duration)``, ``k`` <= 1
        when there is none. Pure: the same answer for the same ``limit`` whenever it is asked.
        Keeps the block growth of the span it returns in ``_growth`` when it counted it."""
        cost = self.cost
        dur = None
        k = k_fin
        self._growth = None
        if self.kv.mode == GROW:
            # the span as the limit cuts it, before the blocks are counted: the cut (the first
            # iteration starting at/after the limit) is the same for any k, and fewer blocks
            # can only shorten the span further, so the blocks are counted for this length
            k, dur = cost.decode_span(n_seqs, dec_ctx, k_fin, n_live, t, limit, **kw)
            if k <= 1:
                return 1, 0.0
            bt = self.kv.block_tokens
            growth = block_growth(c, k, b, bt)
            if sum(growth[1]) > free:
                k = span_on_free_blocks(c, b, k, bt, free)  # (one iteration's blocks are already taken)
                if k <= 1:
                    return 1, 0.0
                dur = None  # a shorter span than the limit allows: its own duration
            else:
                self._growth = (k, growth)
        if dur is None:
            k, dur = cost.decode_span(n_seqs, dec_ctx, k, n_live, t, limit, **kw)
        return k, dur

    def _take_span_blocks(self, k: int, c: list, b: list, live, later, growth=None) -> bool:
        """Take the blocks a span of ``k`` iterations needs (``later`` first, in the same pool
        call) and count them in the table; False when a fragmenting pool refused some.
        ``growth``: ``(k', block_growth(c, k', b))`` when counted already (used if ``k' == k``)."""
        kv, tab = self.kv, self.table
        rows, g = growth[1] if growth is not None and growth[0] == k else block_growth(c, k, b, kv.block_tokens)
        if not rows and later is None:
            return True
        if live is not None:
            rows = [live[i] for i in rows]
        rid, B = tab.rid, tab.blocks
        seqs = [rid[r] for r in rows]
        if later is None:
            ok = kv.grow_many(seqs, g)
        else:  # this iteration's blocks first, as two calls would take them
            ok = kv.grow_many(later[0] + seqs, later[1] + g) - len(later[0])
        for r, n in zip(rows[:ok], g):
            B[r] += n
        return ok >= len(rows)

    def _span_iterations(self, n_seqs, dec_ctx, t, later, live, c, b, k, n_live, kw, free):
        """:meth:`_span` with one record per iteration (``per_iteration_records``): each
        iteration's duration is priced and logged; every arrival anywhere cuts the span."""
        kv = self.kv
        k_fin = k
        grow = kv.mode == GROW
        limit = min(self._next_arrival(), self.max_time_s)
        if grow:
            bt = kv.block_tokens
            if sum(block_growth(c, k, b, bt)[1]) > free:
                k = span_on_free_blocks(c, b, k, bt, free)  # (one iteration's blocks are already taken)
                if k <= 1:
                    return 1, (0.0, None), True
        durs = self.cost.decode_span_s(n_seqs, dec_ctx, k, n_live, **kw)
        if t + float(durs.sum()) - float(durs[-1]) >= limit:
            k = int(np.searchsorted(t + (np.cumsum(durs) - durs), limit, side="left"))
            durs = durs[:k]
        dur = float(durs.sum())
        if k <= 1:
            return 1, (0.0, None), True
        if grow and not self._take_span_blocks(k, c, b, live, later):
            return 1, (0.0, None), True
        return k, (dur, durs), k == k_fin

    @property
    def own_cuts(self) -> bool:
        """A decode span is cut only by what concerns this replica — its own arrivals, when
        they come (:meth:`_cut_span`) — not by arrivals elsewhere (where :attr:`defers_spans`);
        False: a span is planned up to ``next_arrival``, known when it is planned (the next
        arrival anywhere, or, where the router chose every request's replica before the run,
        the next one that this replica queues: the same spans as cuts by its own arrivals)."""
        return self._own_cuts

    @own_cuts.setter
    def own_cuts(self, on: bool) -> None:
        self._own_cuts = bool(on)
        kv = self.kv
        self._defers = (self._own_cuts and not self.per_iteration_records and not kv.prefix_caching
                        and (kv.mode != GROW or kv.pool.exact_free_count))

    @property
    def defers_spans(self) -> bool:
        """Spans are cut only by what concerns this replica (:attr:`own_cuts`) and can be:
        one record per span, and a pool that never refuses blocks it counts as free, without
        a prefix cache (whose evictions, at the allocation's time, others could see). A span's
        blocks are then taken when it ends (:meth:`_settle`), so an arrival here can still cut
        it short (:meth:`_cut_span`). Otherwise every arrival anywhere cuts it, as it is planned."""
        return self._defers

    def _settle(self) -> None:
        """Take the blocks of the span run now (left until it ends, see :attr:`defers_spans`)
        and write its two records with the pool's figures after them, as a span that took
        them at its start logs them: one pool call, the same as at its start (nothing else
        touches this replica's pool meanwhile, and a pool of exact free counts never refuses)."""
        p, kv = self._pend, self.kv
        self._pend = None
        if kv.mode == GROW:
            self._take_span_blocks(p.k, p.c, p.b, p.live, p.later, p.growth)
        used, data = kv.used_bytes, self.log.data
        if p.k > 1:
            data[p.pos] = (p.k, 0, p.n_dec * p.k, p.n_seqs, p.dur, used)
        else:  # cut down to one iteration: an ordinary batch record
            data[p.pos] = (0, p.n_dec, p.n_seqs, p.dur, used)
        data[p.pos + 1] = (used, (p.c_sum + p.k * p.n_rows) * self._bpt, kv.pool.capacity_bytes, kv.free_blocks)

    def settle(self) -> None:
        """Take the blocks of a span still running (the run stopped at ``max_time`` in it)."""
        if self._pend is not None:
            self._settle()

    def _cut_span(self, now: float) -> None:
        """A request arrives here at ``now`` during the span run now: the span ends with its
        last iteration that starts before ``now`` (the next one sees the request), exactly as
        if it had been planned with ``now`` as its limit (:meth:`_span_length`); its end, its
        plan and its records change, its blocks are taken for that length (:meth:`_settle`)."""
        p = self._pend
        k, dur = self._span_length(p.n_seqs, p.dec_ctx, p.k_fin, p.n_live, p.t, now, p.kw, p.c, p.b, p.free)
        if k >= p.k:  # every iteration of the span starts before now
            return
        p.growth, self._growth = self._growth, None
        plan, log = p.plan, self.log
        if k <= 1:  # one iteration: priced and logged as one (as a span too short to run would be)
            k = 1
            spread = self._decode_spread(plan.tokens, [], p.pure) if self._spread and p.n_dec > 1 else (0, 0)
            dur = self._iteration_s(BatchShape(0, 0, 0, p.n_dec, p.dec_ctx, p.n_seqs, p.n_dec, 0, *spread), plan.tokens)
            log.code[p.pos] = log.code_of(E.BATCH)
            plan.may_finish = min(map(sub, self.table.output, self.table.generated), default=2) <= 1
            plan.pure = p.pure
        else:
            plan.may_finish = False  # (k < k_fin)
        p.k, p.dur = k, dur
        plan.k, plan.duration_s = k, dur
        i0, i1 = p.itl
        if i1 > i0:  # padding's share repeats in each iteration (see _note_itl)
            seq = self._itl[i0][0]
            self._itl[i0:i1] = [(seq, n * k if n < 0 else n, w, dec) for n, w, dec in p.adj]
        end = p.t + dur
        if self._wait is not None:
            move_to(self._queue, self._wait, end)
        self.wake_s = end

    def _evict(self, r: int, swap: bool, t: float, quiet: bool = False) -> WaitingSeq:
        """Remove row ``r``'s cache (the caller drops the row); returns its waiting entry."""
        tab = self.table
        rid = tab.rid[r]
        if tab.generated[r]:  # its next token comes after a gap from its last one
            if self._groups:
                self._ungroup()
            self._stalled.setdefault(rid, t)
        cached = self.kv.prefix_caching and not swap and rid not in self._hashed  # (hashed: its units are the cache)
        self.kv.release(rid, tab.computed[r] if cached else 0)
        if not quiet:
            self.log.emit(t, E.REQ_PREEMPT, rid, (self.index, "swap" if swap else "recompute"))
        w = WaitingSeq(rid, tab.prompt[r], tab.output[r], tab.arrival_s[r], tab.priority[r],
                       tab.pred[r], tab.generated[r], tab.computed[r] if swap else 0, swap, True)
        if cached:
            self._cached_waiting.append(w)
        return w

    def _finish(self, plan: IterationPlan) -> None:
        """Advance the sequences after an iteration (or a span of ``k``) ends
        (:func:`~llmos_sim.serving.iteration.advance`), log first tokens and finishes."""
        tab = self.table
        if plan.pure and not plan.may_finish and not tab.n_done:  # a decode span (or iteration) that
            add_k = plan.k.__add__  # finishes nothing: advance's pure path, inlined (no first tokens)
            tab.computed = list(map(add_k, tab.computed))
            tab.generated = list(map(add_k, tab.generated))
            return
        log, now, idx = self.log, self.now, self.index
        kv = self.kv
        first, fin = advance(tab, plan, kv.computed, kv.filling)
        for r in first:
            log.emit(now, E.REQ_FIRST_TOKEN, r, (idx,))
        hold = plan.hold_finished
        if not fin:
            return
        rid = tab.rid
        rids = [rid[i] for i in fin]
        if self.handoff is None:
            for r in rids:
                log.emit(now, E.REQ_FINISH, r, (idx,))
        else:  # a prefill replica: the decode stage takes them on (or finishes those of one token)
            self.handoff(self, rids, now)
        self.outstanding -= len(rids)
        if self._hashed:
            self._forget(rids)
        if hold:
            for i in fin:
                tab.done[i] = True
            tab.n_done += len(fin)
            if tab.n_done == len(tab):
                for r in tab.rid:
                    self.kv.release(r)
                tab.clear()
        else:
            if self.async_scheduling:
                self._to_release.extend(rids)
            else:
                release = self.kv.release
                for r in rids:
                    release(r)
            tab.drop(fin)

    def _release_finished(self) -> None:
        """Async scheduling (vLLM's ``async_scheduling``): the engine decides iteration ``n + 1``
        while iteration ``n`` runs, and frees the blocks of the sequences ``n`` finished only when
        it processes ``n``'s output — after that decision. So a finished sequence's blocks are
        released here, after the next decision was applied, not when it finishes."""
        release = self.kv.release
        for r in self._to_release:
            release(r)
        self._to_release = []
