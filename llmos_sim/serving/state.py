"""What a batching policy sees (a replica view) and what it returns (a batch decision).

A replica keeps its running sequences as a struct of Python lists (:class:`SeqTable`, one
entry per sequence in every column, rows in admission order) and its waiting sequences as a
list kept in the ordering policy's order. Token accounting per sequence (vLLM v1's model,
uniform for prefill, decode and recompute):

- ``known = prompt + generated`` tokens exist; ``computed`` of them are in the KV cache;
- an iteration computes ``n <= known - computed`` tokens of a sequence; when it reaches
  ``computed == known`` the sequence emits one new token (``generated += 1``);
- a sequence in decode has ``known - computed == 1``; it finishes when ``generated == output``;
- preemption by recompute sets ``computed = 0`` (the generated tokens are kept and
  recomputed as prompt); by swap keeps ``computed`` (the cache moves to host memory).

Why lists and not numpy: a replica runs a few dozen sequences at a time (256 at most) and
touches them once per iteration or fast-forwarded span; a numpy call costs about 1 µs
whatever its size, a list comprehension over 20 ints a fraction of that. Policies that want
arrays ask :meth:`SeqTable.array`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from llmos_sim.serving.kv import KVCacheManager

COLUMNS = ("rid", "prompt", "output", "computed", "generated", "blocks", "admit_seq", "priority", "pred",
           "arrival_s", "done")


class SeqTable:
    """Running sequences of one replica: one list per column, one entry per sequence, rows in
    admission order.

    Columns: ``rid`` request id, ``prompt``/``output`` tokens, ``computed`` tokens in cache,
    ``generated`` tokens emitted, ``blocks`` KV blocks held, ``admit_seq`` admission order,
    ``priority`` (lower = more important), ``pred`` predicted output tokens, ``arrival_s``,
    ``done`` (finished but held, static batching). Policies read it; only the replica writes.

    Invariant: every column has ``len(self)`` entries; ``n_done == sum(done)``.
    """

    __slots__ = (*COLUMNS, "n_done")

    def __init__(self) -> None:
        for name in COLUMNS:
            setattr(self, name, [])
        self.n_done = 0  #: rows with ``done`` set

    def __len__(self) -> int:
        return len(self.rid)

    @property
    def remaining(self) -> list[int]:
        """Tokens known but not yet computed, per row (0 for held, finished rows)."""
        r = [p + g - c for p, g, c in zip(self.prompt, self.generated, self.computed)]
        if self.n_done:
            r = [0 if d else x for x, d in zip(r, self.done)]
        return r

    def array(self, name: str) -> np.ndarray:
        """Column ``name`` as a new numpy array (for vectorised policies)."""
        return np.asarray(getattr(self, name), dtype=np.float64 if name == "arrival_s" else None)

    def append(self, rows: Iterable[tuple]) -> None:
        """Add rows given as tuples in column order."""
        cols = [getattr(self, name) for name in COLUMNS]
        for row in rows:
            for col, v in zip(cols, row):
                col.append(v)
            if row[-1]:
                self.n_done += 1

    def drop(self, rows: Iterable[int]) -> None:
        """Remove the rows at these positions (any order, each once)."""
        rows = sorted(rows, reverse=True)
        if not rows:
            return
        if len(rows) == len(self):
            self.clear()
            return
        for name in COLUMNS:
            col = getattr(self, name)
            for r in rows:
                del col[r]
        if self.n_done:
            self.n_done = sum(self.done)

    def clear(self) -> None:
        """Remove every row."""
        for name in COLUMNS:
            getattr(self, name).clear()
        self.n_done = 0


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
    hit: int = 0  #: prefix caching: cached prompt tokens it would take now (whole hash units)
    shared: int = 0  #: ... of which blocks other sequences hold (admission does not take them)
    landed: bool = False  #: swapped in from another replica (disaggregation): its copy is already paid for

    @property
    def remaining(self) -> int:
        return self.prompt + self.generated - self.computed


class ReplicaView:
    """A read-only snapshot for a batching policy: time, running table, ordered waiting list
    and the KV cache (read its counters and queries only).

    A plain slotted class, not a frozen dataclass (like the engine's ``ClusterView``): one is
    built per iteration, so construction is kept cheap; read-only by contract."""

    __slots__ = ("time_s", "running", "waiting", "kv")

    def __init__(self, time_s: float, running: SeqTable, waiting: Sequence[WaitingSeq], kv: "KVCacheManager") -> None:
        self.time_s = time_s
        self.running = running
        self.waiting = waiting
        self.kv = kv

    def __repr__(self) -> str:
        return (f"ReplicaView(time_s={self.time_s!r}, running={len(self.running)} rows, "
                f"waiting={len(self.waiting)}, kv={self.kv!r})")


class TokenList(list):
    """Per-row tokens as a plain list with numpy's ``tolist()`` (a copy), so a decision's
    ``tokens`` reads like an array without building one each iteration."""

    __slots__ = ()

    def tolist(self) -> list[int]:
        return list(self)


class BatchDecision:
    """One iteration's batch.

    - ``tokens``: tokens to compute per running row (aligned with ``view.running``; rows that
      are preempted must be 0; held finished rows may be 1 = padding)
    - ``admit``: ``(position in view.waiting, tokens)`` to start now, in order
    - ``preempt``: running rows to preempt before the iteration, ``preempt_mode`` how
    - ``hold_finished``: finished rows keep their slot and cache until the whole batch is done
    - ``grow``: optional ``(rows, blocks)``: the running rows (ascending, none held finished)
      whose ``tokens`` cross into new KV blocks in grow mode and how many each needs
      (``ceil((computed + tokens) / block_tokens) - blocks`` > 0), as the policy computed them;
      the replica then skips its own scan (used only when nothing is preempted). ``None``: the
      replica computes them.

    A plain slotted class, not a frozen dataclass: one is built per iteration, so construction
    is kept cheap; nothing changes it after the policy returns it.
    """

    __slots__ = ("tokens", "admit", "preempt", "preempt_mode", "hold_finished", "grow")

    def __init__(self, tokens: "np.ndarray | TokenList", admit: tuple[tuple[int, int], ...] = (),
                 preempt: tuple[int, ...] = (), preempt_mode: str = "recompute", hold_finished: bool = False,
                 grow: "tuple[list[int], list[int]] | None" = None) -> None:
        self.tokens = tokens
        self.admit = admit
        self.preempt = preempt
        self.preempt_mode = preempt_mode
        self.hold_finished = hold_finished
        self.grow = grow

    def __repr__(self) -> str:
        return (f"BatchDecision(tokens={self.tokens!r}, admit={self.admit!r}, preempt={self.preempt!r}, "
                f"preempt_mode={self.preempt_mode!r}, hold_finished={self.hold_finished!r}, grow={self.grow!r})")

    @property
    def empty(self) -> bool:
        return not self.admit and not bool(np.any(self.tokens))
