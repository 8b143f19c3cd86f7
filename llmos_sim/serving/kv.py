"""The KV cache of one serving replica, on top of any :class:`~llmos_sim.policies.memory.base.MemoryPool`.

Tokens map to blocks of ``block_tokens`` tokens, blocks to bytes (``block_tokens ·
bytes_per_token``). Two ways to hold a sequence's cache:

- ``grow`` (paged, vLLM): a sequence holds ``ceil(tokens / block_tokens)`` blocks; more are
  allocated as its tokens grow (16 tokens → 1 block, 17 → 2).
- ``reserve`` (contiguous, pre-vLLM serving): at admission a sequence reserves its maximum
  length (``reserve_tokens``, or its own prompt + output when that is 0) in one allocation and
  never grows.

Every block goes through the pool (``allocate`` / ``free``), so the bytes a policy holds, its
rounding waste and its failures are the pool's own numbers. The manager keeps counters the
batching policies read (free blocks) so they need not ask the pool on the hot path; for
fragmenting pools an allocation can still fail when the counter says it fits, and callers
handle that (``grow`` returns False).

Prefix caching (optional, vLLM's ``enable_prefix_caching``), for one case only: a sequence
preempted by recompute leaves its full blocks cached while they sit in the free queue; when
it is admitted again, the leading blocks not yet reused are hits and need no recompute. The
free queue is modelled by two counters: blocks pushed (freed; a sequence frees its tail block
first, as vLLM does) and blocks popped (allocated, from the head). A freed block is reused
once the pops pass its push position. Not modelled: sharing between requests (the shipped
workloads have none) and the shift of queue positions when cached blocks are taken back from
the middle of the queue.
"""
from __future__ import annotations

import inspect
from typing import Callable, Hashable

from llmos_sim.policies.memory.base import Allocation, MemoryPool

GROW = "grow"
RESERVE = "reserve"


def make_pool(factory: Callable[..., MemoryPool], capacity_bytes: int, block_bytes: int,
              slot_bytes: int | None = None) -> MemoryPool:
    """Call a pool partial with ``capacity_bytes``, sized for this KV cache: a paged pool gets
    ``block_bytes`` (one KV block), a max-length reservation pool gets ``max_len_bytes`` =
    ``slot_bytes`` (the reservation; one block when None), overriding the config's generic sizes."""
    target = getattr(factory, "func", factory)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # builtins or odd callables: just pass capacity
        params = {}
    kw = {"capacity_bytes": capacity_bytes}
    if "block_bytes" in params:
        kw["block_bytes"] = block_bytes
    if "max_len_bytes" in params:
        kw["max_len_bytes"] = slot_bytes or block_bytes
    return factory(**kw)


class KVCacheManager:
    """Token → block → byte accounting for one replica, backed by ``pool``.

    Invariant: blocks not held by any sequence + Σ held blocks == ``total_blocks``.
    """

    def __init__(self, pool: MemoryPool, bytes_per_token: int, block_tokens: int = 16, mode: str = GROW,
                 reserve_tokens: int = 0, prefix_caching: bool = False) -> None:
        if block_tokens < 1 or bytes_per_token < 1:
            raise ValueError("KVCacheManager: block_tokens and bytes_per_token must be >= 1")
        if mode not in (GROW, RESERVE):
            raise ValueError(f"KVCacheManager: mode must be {GROW!r} or {RESERVE!r}, got {mode!r}")
        self.pool = pool
        self.bytes_per_token = int(bytes_per_token)
        self.block_tokens = int(block_tokens)
        self.block_bytes = self.block_tokens * self.bytes_per_token
        self.mode = mode
        self.reserve_tokens = int(reserve_tokens)
        self.total_blocks = pool.capacity_bytes // self.block_bytes
        self._free = self.total_blocks
        # a paged pool grows one allocation per sequence in place (O(1) per block)
        self._append = getattr(pool, "append_blocks", None) if mode == GROW else None
        self._append_many = getattr(pool, "append_blocks_many", None) if mode == GROW else None
        # ... and, with blocks of this size (so nothing is rounded: a sequence's bytes are its
        # blocks'), can defer the new blocks' bookkeeping until the allocation is freed (counts
        # and free blocks stay exact; see :meth:`PagedPool.defer_blocks_many`)
        same_blocks = getattr(pool, "block_bytes", None) == self.block_bytes
        self._defer = getattr(pool, "defer_blocks_many", None) if mode == GROW and same_blocks else None
        self._exact = mode == GROW and (self._append is not None or type(pool).__name__ == "IdealPool")
        self.used_bytes = 0  #: bytes the pool set aside for live KV (after its rounding)
        self._held: dict[Hashable, list[Allocation]] = {}
        self._nblocks: dict[Hashable, int] = {}
        self.prefix_caching = bool(prefix_caching) and mode == GROW
        self._pushes = self.total_blocks  # free-queue positions handed out (all blocks start free)
        self._pops = 0  # blocks taken from the queue's head
        self._cached: dict[Hashable, tuple[int, int, int]] = {}  # seq -> (push position, blocks, full blocks)
        self._hit: dict[Hashable, int] = {}  # seq -> cached blocks it is taking back (not pops)

    # -- pure queries (policies use these through the view) ----------------------------
    @property
    def free_blocks(self) -> int:
        """Blocks a sequence could get now. Exact for paged and ideal pools; for other pools
        also bounded by the largest free extent (a fragmenting pool may refuse less)."""
        if self._exact:
            return self._free
        return min(self._free, self.pool.largest_free_bytes() // self.block_bytes)

    @property
    def growth_in_one_call(self) -> bool:
        """True when :meth:`grow_many` is never refused while the blocks fit (the count is
        exact) and one call with several lists of growth, one after the other, is the same as
        one call per list (the same blocks, in the same order): a paged pool of this block size."""
        return self._defer is not None

    @property
    def unheld_blocks(self) -> int:
        """Blocks no sequence holds (a count: a fragmenting pool may still refuse one
        allocation of fewer, see :attr:`free_blocks`)."""
        return self._free

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens: ``ceil(tokens / block_tokens)``."""
        return -(-int(tokens) // self.block_tokens)

    def max_blocks(self, prompt_tokens: int, output_tokens: int) -> int:
        """Blocks the sequence holds at its largest (its last token is never cached)."""
        if self.mode == RESERVE:
            return self.blocks_for(self.reserve_tokens or prompt_tokens + output_tokens)
        return self.blocks_for(prompt_tokens + output_tokens - 1)

    def can_ever_fit(self, prompt_tokens: int, output_tokens: int) -> bool:
        """Could this request finish on an empty cache?"""
        if self.mode == RESERVE and self.reserve_tokens and prompt_tokens + output_tokens - 1 > self.reserve_tokens:
            return False
        return self.max_blocks(prompt_tokens, output_tokens) <= self.total_blocks

    def admit_blocks(self, prompt_tokens: int, output_tokens: int, tokens: int) -> int:
        """Blocks a newly admitted sequence takes when its first ``tokens`` tokens are computed."""
        if self.mode == RESERVE:
            return self.max_blocks(prompt_tokens, output_tokens)
        return self.blocks_for(tokens)

    @property
    def used_frac(self) -> float:
        """Blocks held / all blocks."""
        return 1.0 - self._free / self.total_blocks if self.total_blocks else 1.0

    def cached_tokens(self, seq: Hashable, known_tokens: int) -> int:
        """Tokens of ``seq`` still in the prefix cache (whole leading blocks; at most
        ``known_tokens - 1``, vLLM always recomputes the last token)."""
        e = self._cached.get(seq)
        if e is None:
            return 0
        pos, n, full = e
        alive = max(0, min(full, pos + n - self._pops, (known_tokens - 1) // self.block_tokens))
        return alive * self.block_tokens

    def has_cached(self, seq: Hashable) -> bool:
        return seq in self._cached

    def take_cached(self, seq: Hashable, tokens: int) -> None:
        """``seq`` is admitted again reusing ``tokens`` cached tokens (from :meth:`cached_tokens`)."""
        self._cached.pop(seq, None)
        if tokens:
            self._hit[seq] = tokens // self.block_tokens

    def held_blocks(self, seq: Hashable) -> int:
        return self._nblocks.get(seq, 0)

    # -- mutation (the replica only) ----------------------------------------------------
    def grow(self, seq: Hashable, n_blocks: int) -> bool:
        """Give ``seq`` ``n_blocks`` more blocks (one pool allocation); False if no room."""
        if n_blocks <= 0:
            return True
        if n_blocks > self._free:
            return False
        if self.prefix_caching:  # blocks taken back from the cache are not popped from the head
            self._pops += n_blocks - min(self._hit.pop(seq, 0), n_blocks)
        held = self._held.get(seq)
        if held is not None and self._defer is not None:
            if not self._defer(held, (n_blocks,)):
                return False
            self._nblocks[seq] += n_blocks
            self._free -= n_blocks
            self.used_bytes += n_blocks * self.block_bytes
            return True
        if held is not None and self._append is not None:
            old = held[0]
            a = self._append(old, n_blocks)
            if a is None:
                return False
            held[0] = a
            self._nblocks[seq] += n_blocks
            self._free -= n_blocks
            self.used_bytes += a.nbytes - old.nbytes
            return True
        a = self.pool.allocate(n_blocks * self.block_bytes, seq)
        if a is None:
            return False
        if held is None:
            self._held[seq] = [a]
            self._nblocks[seq] = n_blocks
        else:
            held.append(a)
            self._nblocks[seq] += n_blocks
        self._free -= n_blocks
        self.used_bytes += a.nbytes
        return True

    def grow_many(self, seqs: list, counts: list[int]) -> int:
        """Give ``seqs[i]`` ``counts[i]`` (> 0) more blocks, in order, as :meth:`grow` would one
        by one; returns how many succeeded (they are a prefix: it stops at the first refusal).
        A paged pool does it in one call (:meth:`PagedPool.append_blocks_many`) when every
        sequence already holds blocks and all fit."""
        total = sum(counts)
        if self._append_many is not None and total <= self._free:
            held, nblocks = self._held, self._nblocks
            try:
                olds = [held[s][0] for s in seqs]
            except KeyError:  # a sequence holds nothing yet: one by one below
                olds = None
            if olds is not None:
                if self._defer is not None:
                    ok = self._defer(olds, counts)
                else:
                    news = self._append_many(olds, counts)
                    ok = news is not None
                    if ok:
                        for s, a in zip(seqs, news):
                            held[s][0] = a
                if ok:
                    for s, n in zip(seqs, counts):
                        nblocks[s] += n
                    if self.prefix_caching:  # blocks taken back from the cache are not popped
                        hit = self._hit
                        for s, n in zip(seqs, counts):
                            self._pops += n - min(hit.pop(s, 0), n)
                    self._free -= total
                    self.used_bytes += total * self.block_bytes
                    return len(seqs)
        grow = self.grow
        for i, (s, n) in enumerate(zip(seqs, counts)):
            if not grow(s, n):
                return i
        return len(seqs)

    def release(self, seq: Hashable, cache_tokens: int = 0) -> int:
        """Free everything ``seq`` holds; returns the number of blocks freed. With prefix
        caching, ``cache_tokens`` (its computed tokens) stay findable while not reused."""
        held = self._held.pop(seq, None)
        if held is None:
            return 0
        n = self._nblocks.pop(seq)
        free = self.pool.free
        for a in held:
            free(a)
        # a paged pool frees the blocks deferred to an allocation too (not in its nbytes)
        self.used_bytes -= n * self.block_bytes if self._defer is not None else sum(a.nbytes for a in held)
        self._free += n
        if self.prefix_caching:
            if cache_tokens:
                self._cached[seq] = (self._pushes, n, cache_tokens // self.block_tokens)
            self._pushes += n
        return n

    def block_offsets(self, seq: Hashable) -> list[int]:
        """Byte offsets in the pool of the blocks ``seq`` holds, in token order (block ``j``
        holds tokens ``j·block_tokens …``). A real backend maps them onto its device arena."""
        held = self._held.get(seq)
        if held is None:
            return []
        if self._defer is not None:  # blocks a paged pool deferred: materialise them
            settle = self.pool.settle
            held[:] = [settle(a) for a in held]
        bb = self.block_bytes
        out: list[int] = []
        for a in held:
            out.extend(a.blocks if a.blocks else range(a.offset, a.offset + a.nbytes // bb * bb, bb))
        return out
