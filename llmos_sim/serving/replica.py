"""A serving replica: one SimPy process running the iteration loop.

Each iteration the replica asks its batching policy for a decision on a read-only view,
applies it (preemptions, admissions, KV growth through the :class:`KVCacheManager`), asks the
cost model how long the iteration takes, waits that long, then advances token counts and
records first tokens and finishes. Nothing else mutates the replica's sequences.

Fast-forward: when a decision is pure decode for every running sequence (no admission, no
preemption, no prefill), the same decision would repeat until something arrives, a sequence
finishes, or blocks run out. The replica then runs ``k`` such iterations in one step: ``k``
is the largest count such that (a) no sequence finishes before the last of them, (b) the
blocks all of them need fit in the free blocks now (they are allocated at the span's start),
(c) every iteration after the first starts before the next arrival (an arrival at time ``a``
is seen by an iteration starting at ``s >= a``), (d) all start before ``max_time_s``. The
span is logged as one ``BATCH_SPAN`` record (or ``k`` ``BATCH`` records when
``per_iteration_records``); request events are exact either way. The only approximation is
that the KV timeline shows a span's blocks from the span's start.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

import numpy as np

from llmos_sim import events as E
from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.serving.kv import GROW, KVCacheManager
from llmos_sim.serving.state import BatchDecision, ReplicaView, SeqTable, WaitingSeq

if TYPE_CHECKING:
    import simpy

    from llmos_sim.policies.batching.base import BatchingPolicy
    from llmos_sim.workload.requests import Request


class Replica:
    """One model replica (``tp`` devices) with its batching policy, KV cache and cost model."""

    def __init__(self, index: int, env: "simpy.Environment", log: E.EventLog, policy: "BatchingPolicy",
                 kv: KVCacheManager, cost: CostModel, next_arrival, max_time_s: float = float("inf"),
                 fast_forward: bool = True, per_iteration_records: bool = False) -> None:
        self.index = index
        self.env, self.log, self.policy, self.kv, self.cost = env, log, policy, kv, cost
        self._next_arrival = next_arrival  # () -> time of the next arrival anywhere (inf if none)
        self.max_time_s = float(max_time_s)
        self.fast_forward = bool(fast_forward) and policy.fast_forward
        self.per_iteration_records = bool(per_iteration_records)
        self.table = SeqTable()
        self.waiting: list[WaitingSeq] = []
        self._keys: list[tuple] = []
        self.outstanding = 0
        self._admit_seq = 0
        self._wake: "simpy.Event | None" = None
        self._cached_waiting: list[WaitingSeq] = []  # preempted by recompute, blocks maybe cached
        self._bpt = kv.bytes_per_token
        self.process = env.process(self._loop())

    # -- arrivals -----------------------------------------------------------------------
    def enqueue(self, req: "Request") -> None:
        """Accept a routed request (the system emitted its REQ_ARRIVE)."""
        if not self.kv.can_ever_fit(req.prompt_tokens, req.output_tokens):
            need = self.kv.max_blocks(req.prompt_tokens, req.output_tokens)
            self.log.emit(self.env.now, E.REQ_FAIL, req.id,
                          (f"kv_too_small: needs {need} blocks, replica {self.index} has {self.kv.total_blocks}",))
            return
        pred = req.predicted_output_tokens if req.predicted_output_tokens is not None else req.output_tokens
        self._insert(WaitingSeq(req.id, req.prompt_tokens, req.output_tokens, req.arrival_s, req.priority, pred))
        self.outstanding += 1
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _insert(self, w: WaitingSeq) -> None:
        k = self.policy.order.key(w)
        i = bisect_right(self._keys, k)
        self._keys.insert(i, k)
        self.waiting.insert(i, w)

    def _fail_head(self, reason: str) -> None:
        w = self.waiting.pop(0)
        self._keys.pop(0)
        self.outstanding -= 1
        self.log.emit(self.env.now, E.REQ_FAIL, w.rid, (reason,))

    @property
    def kv_used_frac(self) -> float:
        return self.kv.used_frac

    # -- the loop -----------------------------------------------------------------------
    def _loop(self):
        env = self.env
        stalls = 0
        while True:
            if not len(self.table) and not self.waiting:
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            if env.now >= self.max_time_s:
                return
            plan = self._start()
            if plan is None:  # nothing could run: re-decide; break a true stall by failing the head
                stalls += 1
                if stalls >= 2:
                    if not self.waiting:
                        raise RuntimeError(f"replica {self.index}: running sequences but nothing schedulable")
                    self._fail_head("unschedulable: the batching policy never admits it on an empty replica")
                    stalls = 0
                continue
            stalls = 0
            yield env.timeout(plan[0])
            self._finish(plan)

    def _start(self):
        """Decide and apply the next iteration (or span); returns what :meth:`_finish` needs."""
        log, kv, t = self.log, self.kv, self.env.now
        tab = self.table
        if self._cached_waiting:  # prefix caching: how much of a preempted sequence is still cached
            for w in self._cached_waiting:
                w.computed = kv.cached_tokens(w.rid, w.prompt + w.generated)
        d: BatchDecision = self.policy.next_batch(ReplicaView(t, tab, self.waiting, kv))
        tokens = np.asarray(d.tokens, dtype=np.int64)
        swap_bytes = 0
        if d.preempt:
            swap = d.preempt_mode == "swap"
            mask = np.ones(len(tab), dtype=bool)
            requeue = []
            for r in d.preempt:
                requeue.append(self._evict(r, swap, t))
                if swap:
                    swap_bytes += int(tab.computed[r]) * self._bpt
                mask[r] = False
            tab.keep(mask)
            tokens = tokens[mask]
        else:
            requeue = ()
        if d.admit:
            pos = [p for p, _ in d.admit]
            entries = [self.waiting[p] for p in pos]
            for p in sorted(pos, reverse=True):
                del self.waiting[p]
                del self._keys[p]
            rows = []
            for w in entries:
                if w in self._cached_waiting:
                    self._cached_waiting.remove(w)
                    kv.take_cached(w.rid, w.computed)
                if not w.started:
                    log.emit(t, E.REQ_SCHEDULE, w.rid, (self.index,))
                    w.started = True
                if w.swapped:
                    swap_bytes += w.computed * self._bpt
                rows.append((w.rid, w.prompt, w.output, w.computed, w.generated, 0, self._admit_seq, w.priority,
                             w.pred, w.arrival_s, False))
                self._admit_seq += 1
            tab.append(rows)
            tokens = np.concatenate([tokens, np.array([n for _, n in d.admit], dtype=np.int64)])
        for w in requeue:
            self._insert(w)
        # -- KV growth (through the pool) --------------------------------------------------
        a = tab.a
        c, blocks = a["computed"], a["blocks"]
        if kv.mode == GROW:
            need = -(-(c + tokens) // kv.block_tokens) - blocks
            if tab.n_done:
                need[a["done"]] = 0
        else:
            need = np.where((tokens > 0) & (blocks == 0),
                            -(-np.maximum(kv.reserve_tokens, (a["prompt"] + a["output"]) * (kv.reserve_tokens == 0))
                              // kv.block_tokens), 0)
        grow_rows = np.flatnonzero(need > 0)
        if len(grow_rows):
            failed = []
            rid = a["rid"]
            grow = kv.grow
            for r, n in zip(grow_rows.tolist(), need[grow_rows].tolist()):
                if grow(int(rid[r]), n):
                    blocks[r] += n
                else:
                    failed.append(r)
            if failed:  # a fragmenting pool refused: those sequences go back to waiting
                mask = np.ones(len(tab), dtype=bool)
                for r in failed:  # fresh admissions return quietly; others are preempted
                    self._insert(self._evict(r, False, t, quiet=blocks[r] == 0 and c[r] == 0))
                    mask[r] = False
                tab.keep(mask)
                tokens = tokens[mask]
                a = tab.a
                c = a["computed"]
        n_rows = len(a)
        n_tok = int(tokens.sum())
        if not n_tok and not swap_bytes:
            return None
        # -- the batch's shape -------------------------------------------------------------
        known = a["prompt"] + a["generated"]
        rem = known - c
        if tab.n_done:
            live = ~a["done"]
            dec = (tokens > 0) & ((~live) | ((rem == 1) & (a["generated"] >= 1) & (tokens == 1)))
        else:
            live = None
            dec = (rem == 1) & (tokens == 1) & (a["generated"] >= 1)
        n_dec = int(dec.sum())
        dec_ctx = int(c[dec].sum()) + n_dec
        n_seqs = int((tokens > 0).sum())
        n_pre = n_tok - n_dec
        if n_pre:
            pre = (tokens > 0) & ~dec
            tp_, cp = tokens[pre], c[pre]
            pairs = int((tp_ * cp + tp_ * (tp_ + 1) // 2).sum())
            pre_ctx = int(cp.sum()) + n_pre
            n_logits = n_dec + int(((c + tokens >= known) & pre).sum())
        else:
            pairs = pre_ctx = 0
            n_logits = n_dec
        used = kv.used_bytes
        c_sum = int(c.sum())
        # -- fast-forward a span of identical decode iterations ---------------------------
        if self.fast_forward and n_pre == 0 and not d.admit and not d.preempt and not swap_bytes and n_seqs == n_rows:
            k, durs = self._span(tab, live, n_seqs, dec_ctx, t)
            if k > 1:
                dur = float(durs.sum())
                if self.per_iteration_records:
                    starts = t + np.concatenate([[0.0], np.cumsum(durs[:-1])])
                    for s_, d_ in zip(starts.tolist(), durs.tolist()):
                        log.emit(s_, E.BATCH, self.index, (0, n_dec, n_seqs, d_, kv.used_bytes))
                else:
                    log.emit(t, E.BATCH_SPAN, self.index, (k, 0, n_dec * k, n_seqs, dur, kv.used_bytes))
                n_live = n_rows - tab.n_done
                log.emit(t, E.KV_SAMPLE, self.index,
                         (kv.used_bytes, (c_sum + k * n_live) * self._bpt, kv.pool.capacity_bytes, kv.free_blocks))
                return (dur, tokens, k, d.hold_finished)
        shape = BatchShape(n_pre, pairs, pre_ctx, n_dec, dec_ctx, n_seqs, n_logits, swap_bytes)
        dur = self.cost.iteration_s(shape)
        log.emit(t, E.BATCH, self.index, (n_pre, n_dec, n_seqs, dur, used))
        tok = n_tok if live is None else int(tokens[live].sum())
        log.emit(t, E.KV_SAMPLE, self.index, (used, (c_sum + tok) * self._bpt, kv.pool.capacity_bytes, kv.free_blocks))
        return (dur, tokens, 1, d.hold_finished)

    def _span(self, tab: SeqTable, live, n_seqs: int, dec_ctx: int, t: float):
        """How many identical decode iterations to run from now (>= 1), and their durations.
        Allocates the blocks the whole span needs. ``live``: mask of unfinished rows (None = all)."""
        kv = self.kv
        a = tab.a
        if live is None:
            k = int((a["output"] - a["generated"]).min())
            c, b = a["computed"], a["blocks"]
        else:
            if not live.any():
                return 1, None
            k = int((a["output"] - a["generated"])[live].min())
            c, b = a["computed"][live], a["blocks"][live]
        if k <= 1:
            return 1, None
        grow = kv.mode == GROW
        if grow:
            bt = kv.block_tokens
            free = kv.free_blocks
            g = (-(-(c + k) // bt) - b).clip(0)
            if int(g.sum()) > free:
                lo, hi = 1, k  # need(lo) fits (already allocated), need(hi) does not
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if int((-(-(c + mid) // bt) - b).clip(0).sum()) <= free:
                        lo = mid
                    else:
                        hi = mid
                k = lo
                if k <= 1:
                    return 1, None
                g = None
        durs = self.cost.decode_span_s(n_seqs, dec_ctx, k, n_seqs - tab.n_done)
        limit = min(self._next_arrival(), self.max_time_s)
        if t + float(durs.sum()) - float(durs[-1]) >= limit:  # the span would start an iteration at/after limit
            starts = t + (np.cumsum(durs) - durs)
            k = int(np.searchsorted(starts, limit, side="left"))
            if k <= 1:
                return 1, None
            durs = durs[:k]
            g = None
        if grow:
            if g is None:
                g = -(-(c + k) // bt) - b
            idx = np.flatnonzero(g > 0)
            if len(idx):
                rows = idx if live is None else np.flatnonzero(live)[idx]
                rid, blocks = a["rid"], a["blocks"]
                for r, n in zip(rows.tolist(), g[idx].tolist()):
                    if not kv.grow(int(rid[r]), n):  # a fragmenting pool refused: no span
                        return 1, None
                    blocks[r] += n
        return k, durs

    def _evict(self, r: int, swap: bool, t: float, quiet: bool = False) -> WaitingSeq:
        """Remove row ``r``'s cache (the caller drops the row); returns its waiting entry."""
        tab = self.table
        rid = int(tab.rid[r])
        cached = self.kv.prefix_caching and not swap
        self.kv.release(rid, int(tab.computed[r]) if cached else 0)
        if not quiet:
            self.log.emit(t, E.REQ_PREEMPT, rid, (self.index, "swap" if swap else "recompute"))
        w = WaitingSeq(rid, int(tab.prompt[r]), int(tab.output[r]), float(tab.arrival_s[r]), int(tab.priority[r]),
                       int(tab.pred[r]), int(tab.generated[r]), int(tab.computed[r]) if swap else 0, swap, True)
        if cached:
            self._cached_waiting.append(w)
        return w

    def _finish(self, plan) -> None:
        """Advance the sequences after an iteration (or a span of ``k``) ends."""
        _, tokens, k, hold = plan
        tab, log, now, idx = self.table, self.log, self.env.now, self.index
        a = tab.a
        gen = a["generated"]
        if tab.n_done:
            live = ~a["done"]
            if k > 1:
                a["computed"][live] += k
                gen[live] += k
            else:
                a["computed"][live] += tokens[live]
        else:
            live = None
            if k > 1:
                a["computed"] += k
                gen += k
            else:
                a["computed"] += tokens
        if k == 1:
            produced = (tokens > 0) & (a["computed"] == a["prompt"] + gen)
            if live is not None:
                produced &= live
            if produced.any():
                gen[produced] += 1
                for rid in a["rid"][produced & (gen == 1)].tolist():
                    log.emit(now, E.REQ_FIRST_TOKEN, rid, (idx,))
        fin = gen >= a["output"]
        if live is not None:
            fin &= live
        if not fin.any():
            return
        rids = a["rid"][fin].tolist()
        for rid in rids:
            log.emit(now, E.REQ_FINISH, rid, (idx,))
        self.outstanding -= len(rids)
        if hold:
            a["done"][fin] = True
            tab.n_done += len(rids)
            if tab.n_done == len(tab):
                for rid in a["rid"].tolist():
                    self.kv.release(rid)
                tab.keep(np.zeros(len(tab), dtype=bool))
        else:
            release = self.kv.release
            for rid in rids:
                release(rid)
            tab.keep(~fin)
