"""What a batching policy sees (a replica view) and what it returns (a batch decision): the
serving view, a leaf module as :mod:`llmos_sim.view` is for training. It imports numpy only,
so a batching policy (``llmos_sim.policies.batching``) imports this and nothing of the
serving system; the replica builds the view and applies the decision.

- :class:`SeqTable` (running sequences), :class:`WaitingSeq`, :class:`ReplicaView`,
  :class:`BatchDecision`, :class:`TokenList`
- :class:`KVMode` (``grow``: paged blocks as tokens arrive; ``reserve``: a maximum-length
  reservation at the first token) and :class:`KVView`, what a policy may ask the KV cache
- the block arithmetic, written once: :func:`blocks_for` (blocks that hold ``n`` tokens) and
  :func:`block_growth` (which rows cross into new blocks when they compute more tokens, and
  how many each needs), used by the policies and the replica alike

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
from enum import Enum
from itertools import count
from operator import attrgetter
from typing import Hashable, Iterable, Protocol, Sequence

import numpy as np


class KVMode(str, Enum):
    """How a KV cache takes blocks (a ``str``: ``KVMode.GROW == "grow"``)."""

    GROW = "grow"        #: paged: a sequence holds ``ceil(tokens in cache / block_tokens)`` blocks
    RESERVE = "reserve"  #: contiguous: its whole maximum length at its first token

    def __str__(self) -> str:
        return self.value


GROW = KVMode.GROW
RESERVE = KVMode.RESERVE


def blocks_for(tokens: int, block_tokens: int) -> int:
    """Blocks that hold ``tokens`` tokens: ``ceil(tokens / block_tokens)``."""
    return -(-tokens // block_tokens)


def block_growth(computed: Iterable[int], tokens: "Iterable[int] | int", blocks: Iterable[int],
                 block_tokens: int) -> tuple[list[int], list[int]]:
    """``(rows, need)``: the rows (positions, ascending) whose ``computed + tokens`` tokens need
    more blocks than the ``blocks`` they hold, and how many more each needs
    (``ceil((computed + tokens) / block_tokens) - blocks`` > 0). ``tokens`` may be any
    iterable, or an int ``k`` for ``k`` tokens each (as ``itertools.repeat(k)``).

    One pass tests each row (``computed + tokens > blocks * block_tokens``: the same rows as
    the ceiling > 0) and a second counts the blocks of the few rows that cross: a decode
    iteration moves most rows within the block they hold."""
    if type(computed) is not list:
        computed = list(computed)
    if type(blocks) is not list:
        blocks = list(blocks)
    b1 = block_tokens - 1
    if type(tokens) is int:
        k = tokens
        rows = [i for i, c, b in zip(count(), computed, blocks) if c + k > b * block_tokens]
        if not rows:
            return rows, []
        return rows, [(computed[i] + k + b1) // block_tokens - blocks[i] for i in rows]
    if not isinstance(tokens, (list, tuple)):  # any iterable (maybe endless: ``repeat(k)``)
        g = [(c + t + b1) // block_tokens - b for c, t, b in zip(computed, tokens, blocks)]
        rows = [i for i, n in enumerate(g) if n > 0]
        return rows, [g[i] for i in rows]
    rows = [i for i, c, t, b in zip(count(), computed, tokens, blocks) if c + t > b * block_tokens]
    if not rows:
        return rows, []
    return rows, [(computed[i] + tokens[i] + b1) // block_tokens - blocks[i] for i in rows]


class KVView(Protocol):
    """What a batching policy may ask a replica's KV cache (read only;
    :class:`~llmos_sim.serving.kv.KVCacheManager` is the implementation)."""

    mode: KVMode
    block_tokens: int
    reserve_tokens: int

    @property
    def free_blocks(self) -> int:
        """Blocks an allocation can take now."""

    @property
    def total_blocks(self) -> int:
        """Blocks of the whole cache."""

    @property
    def unheld_blocks(self) -> int:
        """Blocks no sequence holds."""

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens."""

    def max_blocks(self, prompt_tokens: int, output_tokens: int) -> int:
        """Blocks a sequence holds at its largest."""

    def admit_blocks(self, prompt_tokens: int, output_tokens: int, tokens: int) -> int:
        """Blocks a waiting sequence takes when its first ``tokens`` tokens are computed."""

    def growth(self, computed: Sequence[int], tokens: Iterable[int], blocks: Sequence[int]) -> tuple[list[int], list[int]]:
        """``(rows, need)``: :func:`block_growth` with this cache's block size."""

    def requeued_tokens(self, seq: Hashable, known_tokens: int, ahead: int) -> "int | None":
        """A sequence preempted by recompute: its tokens still cached after ``ahead`` more
        blocks are taken from the free queue's head (None for any other sequence)."""


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
        rows = list(rows)
        if len(rows) == 1:  # the common case: one admission
            row = rows[0]
            for col, v in zip(_columns(self), row):
                col.append(v)
            if row[-1]:
                self.n_done += 1
            return
        if not rows:
            return
        for col, values in zip(_columns(self), zip(*rows)):
            col.extend(values)
        self.n_done += sum(1 for row in rows if row[-1])

    def drop(self, rows: Iterable[int]) -> None:
        """Remove the rows at these positions (any order, each once)."""
        rows = sorted(rows, reverse=True)
        if not rows:
            return
        if len(rows) == len(self):
            self.clear()
            return
        if len(rows) == 1:  # the common case: one row finishes
            r = rows[0]
            for col in _columns(self):
                del col[r]
        else:
            for col in _columns(self):
                for r in rows:
                    del col[r]
        if self.n_done:
            self.n_done = sum(self.done)

    def clear(self) -> None:
        """Remove every row."""
        for col in _columns(self):
            col.clear()
        self.n_done = 0


_columns = attrgetter(*COLUMNS)  # a table's column lists, in column order


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

    def __init__(self, time_s: float, running: SeqTable, waiting: Sequence[WaitingSeq], kv: KVView) -> None:
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
