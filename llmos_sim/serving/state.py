"""What a batching policy sees (a replica view) and what it returns (a batch decision).

A replica keeps its running sequences as a struct of numpy arrays (:class:`SeqTable`, one row
per sequence, rows in admission order) and its waiting sequences as a list kept in the
ordering policy's order. Token accounting per sequence (vLLM v1's model, uniform for prefill,
decode and recompute):

- ``known = prompt + generated`` tokens exist; ``computed`` of them are in the KV cache;
- an iteration computes ``n <= known - computed`` tokens of a sequence; when it reaches
  ``computed == known`` the sequence emits one new token (``generated += 1``);
- a sequence in decode has ``known - computed == 1``; it finishes when ``generated == output``;
- preemption by recompute sets ``computed = 0`` (the generated tokens are kept and
  recomputed as prompt); by swap keeps ``computed`` (the cache moves to host memory).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from llmos_sim.serving.kv import KVCacheManager

_COLS = ("rid", "prompt", "output", "computed", "generated", "blocks", "admit_seq", "priority", "pred", "arrival_s", "done")
_DTYPES = (np.int64, np.int64, np.int64, np.int64, np.int64, np.int64, np.int64, np.int64, np.int64, np.float64, np.bool_)
ROW_DTYPE = np.dtype(list(zip(_COLS, _DTYPES)))


def _col(name: str):
    def get(self) -> np.ndarray:
        return self.a[name]
    get.__name__ = name
    return property(get)


class SeqTable:
    """Running sequences of one replica: one numpy record per sequence, in admission order.

    Columns (each a writable view): ``rid`` request id, ``prompt``/``output`` tokens,
    ``computed`` tokens in cache, ``generated`` tokens emitted, ``blocks`` KV blocks held,
    ``admit_seq`` admission order, ``priority`` (lower = more important), ``pred`` predicted
    output tokens, ``arrival_s``, ``done`` (finished but held, static batching). Policies read
    it; only the replica writes. One record array keeps appends and removals to one numpy
    call each (the hot path of the serving loop).
    """

    __slots__ = ("a", "n_done")

    rid = _col("rid")
    prompt = _col("prompt")
    output = _col("output")
    computed = _col("computed")
    generated = _col("generated")
    blocks = _col("blocks")
    admit_seq = _col("admit_seq")
    priority = _col("priority")
    pred = _col("pred")
    arrival_s = _col("arrival_s")
    done = _col("done")

    def __init__(self) -> None:
        self.a = np.zeros(0, dtype=ROW_DTYPE)
        self.n_done = 0  #: rows with ``done`` set

    def __len__(self) -> int:
        return len(self.a)

    @property
    def remaining(self) -> np.ndarray:
        """Tokens known but not yet computed (0 for held, finished rows)."""
        a = self.a
        r = a["prompt"] + a["generated"] - a["computed"]
        return np.where(a["done"], 0, r) if self.n_done else r

    def append(self, rows: Sequence[tuple]) -> None:
        """Add rows given as tuples in column order."""
        if rows:
            self.a = np.concatenate([self.a, np.array(rows, dtype=ROW_DTYPE)])

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` is True."""
        self.a = self.a[mask]
        self.n_done = int(self.a["done"].sum()) if self.n_done else 0


@dataclass(slots=True)
class WaitingSeq:
    """A queued sequence: new, or preempted (``computed`` > 0 only when swapped out)."""

    rid: int
    prompt: int
    output: int
    arrival_s: float
    priority: int = 0
    pred: int = 0
    generated: int = 0
    computed: int = 0
    swapped: bool = False
    started: bool = False  #: has been in a batch before (REQ_SCHEDULE already emitted)

    @property
    def remaining(self) -> int:
        return self.prompt + self.generated - self.computed


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """A read-only snapshot for a batching policy: time, running table, ordered waiting list
    and the KV cache (read its counters and queries only)."""

    time_s: float
    running: SeqTable
    waiting: Sequence[WaitingSeq]
    kv: "KVCacheManager"


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """One iteration's batch.

    - ``tokens``: tokens to compute per running row (aligned with ``view.running``; rows that
      are preempted must be 0; held finished rows may be 1 = padding)
    - ``admit``: ``(position in view.waiting, tokens)`` to start now, in order
    - ``preempt``: running rows to preempt before the iteration, ``preempt_mode`` how
    - ``hold_finished``: finished rows keep their slot and cache until the whole batch is done
    """

    tokens: np.ndarray
    admit: tuple[tuple[int, int], ...] = ()
    preempt: tuple[int, ...] = ()
    preempt_mode: str = "recompute"
    hold_finished: bool = False

    @property
    def empty(self) -> bool:
        return not self.admit and not bool(np.any(self.tokens))
