"""Iteration-time cost models for serving replicas (the SimPy backend's clock for inference).

One iteration runs a batch of sequences: some process a prefill chunk (many tokens), others
decode one token. :class:`BatchShape` is everything a cost model may look at; it is built by
the replica from the batch decision.

- :class:`RooflineCost`: per device, time is the larger of compute time (FLOPs / (peak · mfu))
  and memory time (bytes / (bandwidth · mbu)), plus a fixed per-iteration overhead, a
  per-sequence overhead, the tensor-parallel all-reduces and host-link swap traffic.
  FLOPs = 2 · matmul params · tokens (+ LM head only for sequences that emit a token)
  + attention 4 · layers · hidden · Σ(context attended per query token).
  Bytes = weights + KV read (context) + KV written (new tokens).
- :class:`OperatorRooflineCost`: the same work, but a roofline per operator group — the GEMMs
  and the attention are separate kernels, each bound by its own resource, and their times add
  (a mixed batch pays its prefill GEMMs' compute *and* its decodes' KV reads); the attention's
  bandwidth efficiency may differ from the weight streaming's (``attn_mbu``).
- :class:`LinearCost`: ``base_s + per_prefill_token_s · n_prefill + per_decode_token_s · n_decode``
  (exact numbers for story tests).
- :class:`MeasuredCost`: a measured table of iteration time over tokens in the batch, linearly
  interpolated, plus a per-context-token term.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from llmos_sim.serving.specs import GpuSpec, ModelSpec


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What one iteration computes.

    - ``n_prefill_tokens``: tokens of prefill (or recompute) chunks
    - ``prefill_attn_pairs``: Σ over prefill query tokens of the context each attends to
      (a chunk of ``n`` tokens after ``c`` cached ones attends ``n·c + n(n+1)/2``)
    - ``prefill_ctx_tokens``: Σ over prefill chunks of ``c + n`` (KV read/written by chunks)
    - ``n_decode_tokens``: sequences decoding one token: rows computing the one token they
      lack after generating at least one (so a recompute's last chunk, when it is one token,
      counts too); a prompt's last token before the first is generated is prefill
    - ``decode_ctx_tokens``: Σ of their context lengths (KV read), the new token included
    - ``n_seqs``: sequences in the batch; ``n_logits``: sequences that emit a token
    - ``swap_bytes``: KV bytes moved over the host link (swap in + out)
    - ``decode_ctx_max``, ``decode_ctx_min``: the longest and the shortest context of the
      decoding sequences (new token included); given (else 0) only to cost models whose
      :attr:`CostModel.wants_decode_spread` is true
    """

    n_prefill_tokens: int = 0
    prefill_attn_pairs: int = 0
    prefill_ctx_tokens: int = 0
    n_decode_tokens: int = 0
    decode_ctx_tokens: int = 0
    n_seqs: int = 0
    n_logits: int = 0
    swap_bytes: int = 0
    decode_ctx_max: int = 0
    decode_ctx_min: int = 0


class CostModel(ABC):
    """Iteration time in seconds for a batch shape."""

    #: True for a model that prices decode rows of unequal length: the replica then fills
    #: ``decode_ctx_max`` / ``decode_ctx_min`` and passes ``spread=(longest, shortest)`` (the
    #: first iteration's) to :meth:`decode_span` and :meth:`decode_span_s`
    wants_decode_spread = False

    @abstractmethod
    def iteration_s(self, b: BatchShape) -> float:
        """Duration of one iteration."""

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None) -> np.ndarray:
        """Durations of ``k`` consecutive pure-decode iterations of ``n_seqs`` sequences whose
        context sum is ``ctx_tokens`` in the first and grows by ``ctx_growth`` (default
        ``n_seqs``; fewer when finished sequences ride along as padding) per iteration.
        Subclasses vectorise this; the default asks :meth:`iteration_s` ``k`` times."""
        g = n_seqs if ctx_growth is None else ctx_growth
        return np.array([self.iteration_s(BatchShape(0, 0, 0, n_seqs, ctx_tokens + j * g, n_seqs, n_seqs))
                         for j in range(k)])

    def decode_lines(self, n_seqs: int, ctx_tokens: int, ctx_growth: int) -> tuple[tuple[float, float], ...] | None:
        """Iteration ``j`` of a decode span (as in :meth:`decode_span_s`) lasting
        ``max(a + b·j for (a, b) in lines)`` seconds, with ``b >= 0`` — at most two lines — for
        models that are affine in the context; None (the default) when the model is not."""
        return None

    def decode_span(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int, start_s: float,
                    limit_s: float) -> tuple[int, float]:
        """Run up to ``k`` decode iterations (as in :meth:`decode_span_s`) back to back from
        ``start_s``: how many of them start before ``limit_s`` (>= 1), and their total duration (s).
        Closed form (O(1), or O(log k) when cut) from :meth:`decode_lines`; otherwise the
        durations one by one."""
        lines = self.decode_lines(n_seqs, ctx_tokens, ctx_growth)
        if lines is not None:
            return span_of_lines(lines, k, start_s, limit_s)
        durs = self.decode_span_s(n_seqs, ctx_tokens, k, ctx_growth)
        if start_s + float(durs.sum()) - float(durs[-1]) >= limit_s:  # the last would start at/after the limit
            k = max(1, int(np.searchsorted(start_s + (np.cumsum(durs) - durs), limit_s, side="left")))
            durs = durs[:k]
        return k, float(durs.sum())


def span_of_lines(lines: Sequence[tuple[float, float]], k: int, start_s: float, limit_s: float) -> tuple[int, float]:
    """:meth:`CostModel.decode_span` for durations ``d_j = max(a + b·j for (a, b) in lines)``
    (one or two lines, ``b >= 0``, so ``d_j`` never shrinks): the partial sums
    ``S(j) = d_0 + … + d_{j-1}`` in closed form; iteration ``j`` starts at ``start_s + S(j)``."""
    (a1, b1) = lines[0]
    if len(lines) == 1:
        jb, (a2, b2) = k, (a1, b1)
    else:
        (a2, b2) = lines[1]
        if a2 > a1:  # (a1, b1): the line on top at j = 0
            (a1, b1), (a2, b2) = (a2, b2), (a1, b1)
        if b2 > b1:  # the other line is on top from jb on (they meet at (a1 - a2) / (b2 - b1))
            jb = min(k, math.floor((a1 - a2) / (b2 - b1)) + 1)
        else:
            jb = k
    if jb >= k:  # one line on top for the whole span (a roofline span that stays compute- or memory-bound)
        return span_of_line(a1, b1, k, start_s, limit_s)
    return _span_of_two_lines(a1, b1, a2, b2, jb, k, start_s, limit_s)


def _span_of_two_lines(a1: float, b1: float, a2: float, b2: float, jb: int, k: int, start_s: float,
                       limit_s: float) -> tuple[int, float]:
    """:func:`span_of_lines` where ``(a1, b1)`` is on top before iteration ``jb`` and ``(a2, b2)``
    from it on: the cut by bisection over the partial sums (between bounds from the first and
    the last iteration's duration)."""

    def S(j: int) -> float:
        m = min(j, jb)
        s = m * a1 + b1 * (m * (m - 1) // 2)
        if j > jb:
            s += (j - jb) * a2 + b2 * ((j * (j - 1) - jb * (jb - 1)) // 2)
        return s

    if k > 1 and start_s + S(k - 1) >= limit_s:  # cut: k = the first j whose start is at/after the limit
        lo, hi = 0, k - 1  # invariant: start_s + S(lo) < limit_s <= start_s + S(hi)
        d_first, d_last = max(a1, a2), max(a1 + b1 * (k - 1), a2 + b2 * (k - 1))  # d_first <= d_j <= d_last
        room = limit_s - start_s
        if d_last > 0:  # S(j) <= j·d_last: a first guess from below
            j = int(room / d_last) - 1
            if lo < j < hi and start_s + S(j) < limit_s:
                lo = j
        if d_first > 0:  # S(j) >= j·d_first: and from above
            j = int(room / d_first) + 2
            if lo < j < hi and start_s + S(j) >= limit_s:
                hi = j
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if start_s + S(mid) < limit_s:
                lo = mid
            else:
                hi = mid
        k = hi
    return k, S(k)


def span_of_line(a: float, b: float, k: int, start_s: float, limit_s: float) -> tuple[int, float]:
    """:func:`span_of_lines` for one line ``d_j = a + b·j`` (``b >= 0``):
    the same ``S(j) = j·a + b·j(j−1)/2``, evaluated the same way, so the same result; the cut
    (the first ``j >= 1`` whose start ``start_s + S(j)`` is at/after ``limit_s``; ``S`` never
    decreases, so it is unique) is found from the quadratic's root and checked exactly."""
    if k <= 1 or start_s + ((k - 1) * a + b * ((k - 1) * (k - 2) // 2)) < limit_s:
        return k, k * a + b * (k * (k - 1) // 2)
    room = limit_s - start_s
    j = 1
    if room > 0:  # the root of b/2·x² + (a − b/2)·x = room, in the form without cancellation
        h = a - b / 2
        if h > 0:
            j = int(2 * room / (h + math.sqrt(h * h + 2 * b * room))) + 1
        elif b > 0:
            j = int((math.sqrt(h * h + 2 * b * room) - h) / b) + 1
    j = min(max(j, 1), k - 1)
    while j > 1 and start_s + ((j - 1) * a + b * ((j - 1) * (j - 2) // 2)) >= limit_s:
        j -= 1
    while j < k - 1 and start_s + (j * a + b * (j * (j - 1) // 2)) < limit_s:
        j += 1
    return j, j * a + b * (j * (j - 1) // 2)


class LinearCost(CostModel):
    """``base_s + per_prefill_token_s·n_prefill + per_decode_token_s·n_decode`` seconds."""

    def __init__(self, base_s: float = 1.0, per_prefill_token_s: float = 0.0, per_decode_token_s: float = 0.0,
                 model: ModelSpec | None = None, gpu: GpuSpec | None = None, tp: int = 1) -> None:
        self.base_s = float(base_s)
        self.per_prefill_token_s = float(per_prefill_token_s)
        self.per_decode_token_s = float(per_decode_token_s)

    def iteration_s(self, b: BatchShape) -> float:
        return self.base_s + self.per_prefill_token_s * b.n_prefill_tokens + self.per_decode_token_s * b.n_decode_tokens

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None) -> np.ndarray:
        return np.full(k, self.base_s + self.per_decode_token_s * n_seqs)

    def decode_lines(self, n_seqs: int, ctx_tokens: int, ctx_growth: int) -> tuple[tuple[float, float], ...]:
        return ((self.base_s + self.per_decode_token_s * n_seqs, 0.0),)


class RooflineCost(CostModel):
    """Roofline per device with calibratable efficiencies.

    ``mfu``: achieved fraction of peak FLOP/s; ``mbu``: achieved fraction of memory bandwidth;
    ``overhead_s``: fixed time per iteration (scheduling, launch, sampling);
    ``per_seq_s``: extra time per sequence in the batch (input preparation);
    ``allreduce_latency_s``: latency of one all-reduce (2 per layer when ``tp > 1``).
    Compute and memory are split evenly over ``tp`` devices.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, tp: int = 1, mfu: float = 0.6, mbu: float = 0.8,
                 overhead_s: float = 0.002, per_seq_s: float = 0.0, allreduce_latency_s: float = 10e-6) -> None:
        if not (0 < mfu <= 1 and 0 < mbu <= 1):
            raise ValueError(f"RooflineCost: mfu and mbu must be in (0, 1], got {mfu}, {mbu}")
        if tp < 1:
            raise ValueError(f"RooflineCost: tp must be >= 1, got {tp}")
        self.model, self.gpu, self.tp = model, gpu, int(tp)
        self.mfu, self.mbu = float(mfu), float(mbu)
        self.overhead_s, self.per_seq_s = float(overhead_s), float(per_seq_s)
        self.allreduce_latency_s = float(allreduce_latency_s)
        m = model
        self._flops_per_token = 2.0 * m.layers * m.active_layer_params  # matmuls in the layers (active experts only)
        self._flops_per_logit = 2.0 * m.vocab * m.hidden  # LM head
        self._attn_flops_per_pair = 4.0 * m.layers * m.hidden  # QK^T and AV
        self._weight_bytes = float(m.matmul_params * m.dtype_bytes)
        self._kv_bytes = float(m.kv_bytes_per_token)
        self._flops_rate = gpu.flops * self.mfu * self.tp
        self._bytes_rate = gpu.mem_bw_bytes_s * self.mbu * self.tp
        # ring all-reduce: 2(tp-1)/tp of the message over the link, 2 per layer
        self._ar_bytes_per_token = (2.0 * m.layers * 2 * (tp - 1) / tp * m.hidden * m.dtype_bytes) if tp > 1 else 0.0
        self._ar_fixed_s = 2 * m.layers * self.allreduce_latency_s if tp > 1 else 0.0
        if tp > 1 and gpu.link_bw_bytes_s <= 0:
            raise ValueError(f"RooflineCost: tp={tp} needs gpu.link_bw_bytes_s > 0")

    def iteration_s(self, b: BatchShape) -> float:
        n_tok = b.n_prefill_tokens + b.n_decode_tokens
        if n_tok == 0 and b.swap_bytes == 0:
            return 0.0
        flops = (self._flops_per_token * n_tok + self._flops_per_logit * b.n_logits
                 + self._attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx_tokens))
        nbytes = self._weight_bytes + self._kv_bytes * (b.prefill_ctx_tokens + b.decode_ctx_tokens + n_tok)
        t = max(flops / self._flops_rate, nbytes / self._bytes_rate) + self.overhead_s + self.per_seq_s * b.n_seqs
        if self.tp > 1:
            t += self._ar_fixed_s + self._ar_bytes_per_token * n_tok / self.gpu.link_bw_bytes_s
        if b.swap_bytes:
            t += b.swap_bytes / self.gpu.host_bw_bytes_s
        return t

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None) -> np.ndarray:
        ctx = ctx_tokens + (n_seqs if ctx_growth is None else ctx_growth) * np.arange(k, dtype=np.float64)
        flops = (self._flops_per_token + self._flops_per_logit) * n_seqs + self._attn_flops_per_pair * ctx
        nbytes = self._weight_bytes + self._kv_bytes * (ctx + n_seqs)
        t = np.maximum(flops / self._flops_rate, nbytes / self._bytes_rate) + (self.overhead_s + self.per_seq_s * n_seqs)
        if self.tp > 1:
            t += self._ar_fixed_s + self._ar_bytes_per_token * n_seqs / self.gpu.link_bw_bytes_s
        return t

    def decode_lines(self, n_seqs: int, ctx_tokens: int, ctx_growth: int) -> tuple[tuple[float, float], ...]:
        """Compute time and memory time of decode iteration ``j`` are both affine in ``j`` (the
        context grows by ``ctx_growth`` tokens per iteration); the fixed terms ride on both."""
        fixed = self.overhead_s + self.per_seq_s * n_seqs
        if self.tp > 1:
            fixed += self._ar_fixed_s + self._ar_bytes_per_token * n_seqs / self.gpu.link_bw_bytes_s
        fr, br = self._flops_rate, self._bytes_rate
        flops0 = (self._flops_per_token + self._flops_per_logit) * n_seqs + self._attn_flops_per_pair * ctx_tokens
        bytes0 = self._weight_bytes + self._kv_bytes * (ctx_tokens + n_seqs)
        return ((flops0 / fr + fixed, self._attn_flops_per_pair * ctx_growth / fr),
                (bytes0 / br + fixed, self._kv_bytes * ctx_growth / br))


class OperatorRooflineCost(RooflineCost):
    """Roofline per operator group: the GEMMs (every linear layer and the LM head) and the
    attention run as separate kernels, so each is compute- or memory-bound on its own and their
    times add::

        t = max(F_gemm / (peak·mfu), W / (bw·mbu))           # GEMMs: weights streamed once
          + max(F_attn / (peak·mfu), KV / (bw·attn_mbu))    # attention: KV read and written
          + overhead_s + per_seq_s · n_seqs (+ all-reduces, swap traffic as in RooflineCost)

    with ``F_gemm = 2 · matmul params · tokens + 2 · vocab · hidden · n_logits``, ``W`` the weight
    bytes, ``F_attn = 4 · layers · hidden · Σ pairs`` and ``KV = kv_bytes_per_token ·
    (prefill_ctx + decode_ctx + tokens)`` — the same work :class:`RooflineCost` counts. Pure
    decode and pure prefill cost the same in both when ``attn_mbu == mbu`` (all memory-bound or
    all compute-bound); they differ for mixed batches, where :class:`RooflineCost` lets a prefill
    chunk's GEMM compute hide the decodes' KV reads (one max over the iteration) and this model
    does not. ``attn_mbu`` (default ``mbu``): the achieved bandwidth of the attention kernels,
    which read paged KV in small blocks per sequence and typically reach less than dense weight
    streaming.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, tp: int = 1, mfu: float = 0.6, mbu: float = 0.8,
                 overhead_s: float = 0.002, per_seq_s: float = 0.0, allreduce_latency_s: float = 10e-6,
                 attn_mbu: float | None = None) -> None:
        super().__init__(model, gpu, tp, mfu, mbu, overhead_s, per_seq_s, allreduce_latency_s)
        self.attn_mbu = self.mbu if attn_mbu is None else float(attn_mbu)
        if not 0 < self.attn_mbu <= 1:
            raise ValueError(f"OperatorRooflineCost: attn_mbu must be in (0, 1], got {attn_mbu}")
        self._attn_bytes_rate = gpu.mem_bw_bytes_s * self.attn_mbu * self.tp

    def iteration_s(self, b: BatchShape) -> float:
        n_tok = b.n_prefill_tokens + b.n_decode_tokens
        if n_tok == 0 and b.swap_bytes == 0:
            return 0.0
        t = self.overhead_s + self.per_seq_s * b.n_seqs
        if n_tok:
            gemm = self._flops_per_token * n_tok + self._flops_per_logit * b.n_logits
            attn = self._attn_flops_per_pair * (b.prefill_attn_pairs + b.decode_ctx_tokens)
            kv = self._kv_bytes * (b.prefill_ctx_tokens + b.decode_ctx_tokens + n_tok)
            t += (max(gemm / self._flops_rate, self._weight_bytes / self._bytes_rate)
                  + max(attn / self._flops_rate, kv / self._attn_bytes_rate))
        if self.tp > 1:
            t += self._ar_fixed_s + self._ar_bytes_per_token * n_tok / self.gpu.link_bw_bytes_s
        if b.swap_bytes:
            t += b.swap_bytes / self.gpu.host_bw_bytes_s
        return t

    def _decode_fixed(self, n_seqs: int) -> float:
        """The part of a pure-decode iteration that does not depend on the context: the GEMMs,
        the fixed and per-sequence overheads and the all-reduces."""
        gemm = (self._flops_per_token + self._flops_per_logit) * n_seqs
        t = max(gemm / self._flops_rate, self._weight_bytes / self._bytes_rate) + self.overhead_s + self.per_seq_s * n_seqs
        if self.tp > 1:
            t += self._ar_fixed_s + self._ar_bytes_per_token * n_seqs / self.gpu.link_bw_bytes_s
        return t

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None) -> np.ndarray:
        ctx = ctx_tokens + (n_seqs if ctx_growth is None else ctx_growth) * np.arange(k, dtype=np.float64)
        attn = np.maximum(self._attn_flops_per_pair * ctx / self._flops_rate,
                          self._kv_bytes * (ctx + n_seqs) / self._attn_bytes_rate)
        return attn + self._decode_fixed(n_seqs)

    def decode_lines(self, n_seqs: int, ctx_tokens: int, ctx_growth: int) -> tuple[tuple[float, float], ...]:
        """The attention's compute and memory times are both affine in ``j``; the rest is fixed."""
        fixed = self._decode_fixed(n_seqs)
        fr, br = self._flops_rate, self._attn_bytes_rate
        return ((self._attn_flops_per_pair * ctx_tokens / fr + fixed, self._attn_flops_per_pair * ctx_growth / fr),
                (self._kv_bytes * (ctx_tokens + n_seqs) / br + fixed, self._kv_bytes * ctx_growth / br))


class MeasuredCost(CostModel):
    """A measured table: iteration time over tokens in the batch (``tokens``, ``time_s``,
    linearly interpolated, clamped at the ends) plus ``per_ctx_token_s`` per context token read."""

    def __init__(self, tokens: Sequence[float], time_s: Sequence[float], per_ctx_token_s: float = 0.0,
                 model: ModelSpec | None = None, gpu: GpuSpec | None = None, tp: int = 1) -> None:
        self.tokens = np.asarray(tokens, dtype=float)
        self.time_s = np.asarray(time_s, dtype=float)
        if self.tokens.ndim != 1 or self.tokens.shape != self.time_s.shape or len(self.tokens) < 1:
            raise ValueError("MeasuredCost: tokens and time_s must be equal-length 1-d sequences")
        if np.any(np.diff(self.tokens) <= 0):
            raise ValueError("MeasuredCost: tokens must be strictly increasing")
        self.per_ctx_token_s = float(per_ctx_token_s)

    def iteration_s(self, b: BatchShape) -> float:
        n = b.n_prefill_tokens + b.n_decode_tokens
        return float(np.interp(n, self.tokens, self.time_s)) + self.per_ctx_token_s * (b.prefill_ctx_tokens + b.decode_ctx_tokens)

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None) -> np.ndarray:
        ctx = ctx_tokens + (n_seqs if ctx_growth is None else ctx_growth) * np.arange(k, dtype=np.float64)
        return float(np.interp(n_seqs, self.tokens, self.time_s)) + self.per_ctx_token_s * ctx

    def decode_lines(self, n_seqs: int, ctx_tokens: int, ctx_growth: int) -> tuple[tuple[float, float], ...]:
        base = float(np.interp(n_seqs, self.tokens, self.time_s))
        return ((base + self.per_ctx_token_s * ctx_tokens, self.per_ctx_token_s * ctx_growth),)
