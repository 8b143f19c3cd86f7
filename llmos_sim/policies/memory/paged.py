"""Paged pool: fixed-size blocks, vLLM-style (the KV cache's block pool).

The range ``[0, capacity)`` is cut into ``capacity // block_bytes`` blocks; an allocation is a
list of blocks that need not be contiguous (``Allocation.blocks``), so there is no external
fragmentation, only the unused tail of each allocation's last block. Free blocks sit on a
stack: taking or returning one block is O(1) (vLLM's ``BlockPool`` keeps a free queue the
same way). The blocks never handed out are not listed until they are needed (a pool of tens
of thousands of blocks, one per serving replica, costs nothing to set up).

For a KV cache that grows token by token use :meth:`PagedPool.resize` (or
:meth:`PagedPool.append_blocks`): it returns a new :class:`Allocation` with the *same id*
that replaces the old one in the pool (the old object must not be used afterwards). The
serving engine typically keeps one allocation per sequence and calls
``alloc = pool.resize(alloc, n_tokens * kv_bytes_per_token)`` after each decode step;
the call is O(1) when the sequence stays within its last block and O(blocks) otherwise
(the block tuple is copied; sequences hold at most a few hundred blocks).
"""
from __future__ import annotations

from operator import attrgetter, is_
from typing import Hashable, Sequence

from llmos_sim.policies.memory.base import Allocation, BlockPool

_ID = attrgetter("id")
#: never-used blocks put on the free stack at a time when it runs short (see PagedPool._unfold)
_UNFOLD = 512


class PagedPool(BlockPool):
    """Fixed-size blocks of ``block_bytes`` each; ``allocate(n)`` takes ``ceil(n / block)``.

    A request takes at least one block (also a zero-byte one) and is all-or-nothing: it
    fails if fewer blocks are free. Blocks are handed out lowest-address first from a fresh
    pool; afterwards the most recently freed block is reused first (LIFO, cache-friendly).
    ``largest_free_bytes`` is all free blocks together: any request that many blocks cover
    fits, contiguous or not.
    """

    def __init__(self, capacity_bytes: int, block_bytes: int = 16 * 2 * 4096 * 2) -> None:
        super().__init__(capacity_bytes)
        if block_bytes < 1:
            raise ValueError(f"block_bytes must be >= 1, got {block_bytes}")
        self.block_bytes = int(block_bytes)
        self.n_blocks = self.capacity_bytes // self.block_bytes
        # Invariant: the free blocks are those of _free_stack, each once, and the blocks
        # _fresh, _fresh + 1, ... never used yet, which lie under the stack as if listed there
        # in reverse (so that pops yield offset 0 first, then 1, ...): see _unfold
        self._free_stack: list[int] = []
        self._fresh = 0
        # blocks taken by :meth:`defer_blocks_many` but not yet in their allocation's object:
        # allocation id -> the offsets to append, in order (see :meth:`settle`)
        self._pending: dict[int, list[int]] = {}

    # -- block-level API -----------------------------------------------------------------
    @property
    def n_free_blocks(self) -> int:
        """Blocks free now."""
        return len(self._free_stack) + self.n_blocks - self._fresh

    def _unfold(self, n: int) -> None:
        """Put never-used blocks under the free stack until it holds ``n`` blocks (at least
        ``_UNFOLD`` at a time; ``n`` <= :attr:`n_free_blocks`): the blocks the next pops would
        take had the stack listed every free block from the start."""
        stack = self._free_stack
        lo = self._fresh
        hi = min(self.n_blocks, lo + max(n - len(stack), _UNFOLD))
        bb = self.block_bytes
        stack[:0] = range((hi - 1) * bb, lo * bb - 1, -bb)
        self._fresh = hi

    def blocks_for(self, nbytes: int) -> int:
        """Blocks an ``nbytes`` request takes: ``max(1, ceil(nbytes / block_bytes))``."""
        return max(1, -(-nbytes // self.block_bytes))

    def allocate_blocks(self, n_blocks: int, tag: Hashable = None, requested_bytes: int | None = None) -> Allocation | None:
        """Allocate exactly ``n_blocks`` blocks (``requested`` defaults to their bytes)."""
        if n_blocks < 1:
            raise ValueError(f"allocate_blocks: n_blocks must be >= 1, got {n_blocks}")
        req = n_blocks * self.block_bytes if requested_bytes is None else requested_bytes
        if self.blocks_for(req) > n_blocks:
            raise ValueError(f"allocate_blocks: {req} bytes do not fit in {n_blocks} blocks")
        if n_blocks > self.n_free_blocks:
            self._n_fail += 1
            return None
        a = self._take(n_blocks, req, tag, self._next_id)
        self._next_id += 1
        self._live[a.id] = a
        self._requested += a.requested
        self._n_alloc += 1
        return a

    def resize(self, allocation: Allocation, requested_bytes: int) -> Allocation | None:
        """Grow or shrink a live allocation to cover ``requested_bytes``.

        Returns the replacement allocation (same id, old blocks kept in order, new blocks
        appended / trailing blocks released), or ``None`` if growing needs more blocks than
        are free; then the old allocation stays live and unchanged and the failure counts
        in ``n_failures``.
        """
        if requested_bytes < 0:
            raise ValueError(f"resize: requested_bytes must be >= 0, got {requested_bytes}")
        if self._pending:
            allocation = self.settle(allocation)
        have = len(allocation.blocks)
        need = self.blocks_for(requested_bytes)
        if self._live.get(allocation.id) is not allocation:
            raise ValueError(f"resize: allocation {allocation.id} is not live in this pool")
        stack = self._free_stack
        if need > have:
            more = need - have
            if more > len(stack):
                if more > self.n_free_blocks:
                    self._n_fail += 1
                    return None
                self._unfold(more)
            new_blocks = stack[-more:]
            del stack[-more:]
            new_blocks.reverse()
            blocks = allocation.blocks + tuple(new_blocks)
        elif need < have:
            blocks = allocation.blocks[:need]
            stack.extend(reversed(allocation.blocks[need:]))
        else:
            blocks = allocation.blocks
        self._allocated += (need - have) * self.block_bytes
        self._reserved = self._allocated
        new = Allocation(offset=blocks[0], nbytes=need * self.block_bytes, requested=requested_bytes,
                         tag=allocation.tag, blocks=blocks, id=allocation.id)
        self._replace_live(allocation, new)
        return new

    def append_blocks(self, allocation: Allocation, n_more: int) -> Allocation | None:
        """Add ``n_more`` whole blocks; ``requested`` becomes the bytes of all its blocks.
        See :meth:`resize` for the replacement and failure rules."""
        if n_more < 0:
            raise ValueError(f"append_blocks: n_more must be >= 0, got {n_more}")
        return self.resize(allocation, (len(allocation.blocks) + n_more) * self.block_bytes)

    def append_blocks_many(self, allocations: Sequence[Allocation], counts: Sequence[int]) -> list[Allocation] | None:
        """Add ``counts[i]`` whole blocks to ``allocations[i]`` for every ``i`` in one call (a
        serving replica grows all sequences of a decode span at once).

        The result is exactly that of calling :meth:`append_blocks` on each in turn (same
        blocks, same order, same replacements), except that it is all or nothing: ``None``
        (one failure counted, nothing changed) when the blocks of all together are not free.
        Cost: O(1) per allocation plus the copy of its block tuple.
        """
        live = self._live
        if self._pending:
            allocations = [self.settle(a) for a in allocations]
        if len({a.id for a in allocations}) != len(allocations):
            raise ValueError("append_blocks_many: an allocation is listed twice")
        if not self._room_for_growth("append_blocks_many", allocations, counts):
            return None
        total = sum(counts)
        stack = self._free_stack
        if total > len(stack):
            self._unfold(total)
        bb = self.block_bytes
        out = []
        requested = 0  # change of the live requests: each becomes the bytes of all its blocks
        pop = stack.pop
        for a, n in zip(allocations, counts):
            if n == 1:  # the common case: a decode span crosses one block boundary
                blocks = a.blocks + (pop(),)
            elif n:
                taken = stack[-n:]
                del stack[-n:]
                taken.reverse()
                blocks = a.blocks + tuple(taken)
            else:
                blocks = a.blocks
            nbytes = len(blocks) * bb
            requested += nbytes - a.requested
            new = Allocation(blocks[0], nbytes, nbytes, a.tag, blocks, a.id)
            live[a.id] = new
            out.append(new)
        self._requested += requested
        self._allocated += total * bb
        self._reserved = self._allocated
        return out

    def defer_blocks_many(self, allocations: Sequence[Allocation], counts: Sequence[int], check: bool = True) -> bool:
        """Like :meth:`append_blocks_many` (the same blocks, taken in the same order; the same
        counters, stats and free blocks afterwards), but the allocations' objects are not
        rebuilt: the blocks wait in the pool until the allocation is next looked at
        (:meth:`settle`, which :meth:`free`, :meth:`live`, :meth:`resize` and
        :meth:`append_blocks_many` call), so growing a sequence by a block costs a list append,
        not a new :class:`Allocation`. The given objects stay the handles to pass back (also
        to this method again; one listed twice grows twice, in turn). All or nothing: False
        (one failure counted, nothing changed) when the blocks of all together are not free.
        A serving KV cache grows every sequence of a decode span through this.

        ``check=False``: the caller vouches that each allocation is the live one and each count
        >= 0 (a KV cache passing the handles it holds and the growth it counted); only the room
        is checked then. The blocks of all of them are taken from the free stack in one slice
        (the same blocks, in the same order, as one pop per block)."""
        if check:
            if not self._room_for_growth("defer_blocks_many", allocations, counts):
                return False
            total = sum(counts)
        else:
            total = sum(counts)
        stack = self._free_stack
        if total > len(stack):
            if total > self.n_free_blocks:  # (checked above when ``check``)
                self._n_fail += 1
                return False
            self._unfold(total)
        bb = self.block_bytes
        pending = self._pending
        requested = total * bb  # each request becomes the bytes of all its blocks
        taken = stack[-total:] if total else []  # (the next ``total`` pops, in pop order)
        del stack[len(stack) - total:]
        taken.reverse()
        if total == len(allocations) and (not counts or min(counts) == 1):  # one block each (the common case)
            for a, b in zip(allocations, taken):
                ext = pending.get(a.id)
                if ext is None:  # (its request becomes its blocks' bytes, as in append_blocks)
                    pending[a.id] = ext = []
                    requested += len(a.blocks) * bb - a.requested
                ext.append(b)
        else:
            i = 0
            for a, n in zip(allocations, counts):
                ext = pending.get(a.id)
                if ext is None:  # (also for 0 blocks: its request becomes its blocks' bytes, as in append_blocks)
                    pending[a.id] = ext = []
                    requested += len(a.blocks) * bb - a.requested
                if n:
                    ext += taken[i:i + n]
                    i += n
        self._requested += requested
        self._allocated += total * bb
        self._reserved = self._allocated
        return True

    def _room_for_growth(self, who: str, allocations: Sequence[Allocation], counts: Sequence[int]) -> bool:
        """The checks both batch-growth calls share: every allocation live here (else
        ValueError), counts >= 0 (else ValueError); False (one failure counted) when the
        blocks of all together are not free."""
        live = self._live
        if not all(map(is_, map(live.get, map(_ID, allocations)), allocations)):  # (each the live object)
            raise ValueError(f"{who}: an allocation is not live in this pool")
        if counts and min(counts) < 0:
            raise ValueError(f"{who}: counts must be >= 0")
        if sum(counts) > self.n_free_blocks:
            self._n_fail += 1
            return False
        return True

    def settle(self, allocation: Allocation) -> Allocation:
        """The allocation with the blocks :meth:`defer_blocks_many` gave it since (the
        replacement object, same id, now the live one; ``allocation`` itself when none)."""
        ext = self._pending.pop(allocation.id, None)
        if ext is None:
            return allocation
        if self._live.get(allocation.id) is not allocation:
            self._pending[allocation.id] = ext
            raise ValueError(f"settle: allocation {allocation.id} is not live in this pool")
        blocks = allocation.blocks + tuple(ext)
        nbytes = len(blocks) * self.block_bytes
        new = Allocation(blocks[0], nbytes, nbytes, allocation.tag, blocks, allocation.id)
        self._live[allocation.id] = new
        return new

    def free(self, allocation: Allocation) -> None:
        """Return ``allocation`` (with any blocks deferred to it) to the pool: as :meth:`settle`
        then the base's ``free``, without building the settled object (the blocks go back
        tail first, the deferred ones before the others)."""
        ext = self._pending.pop(allocation.id, None) if self._pending else None
        if ext is None:
            super().free(allocation)
            return
        if self._live.get(allocation.id) is not allocation:
            self._pending[allocation.id] = ext
            raise ValueError(f"free: allocation {allocation.id} is not live in this pool")
        del self._live[allocation.id]
        nbytes = (len(allocation.blocks) + len(ext)) * self.block_bytes  # its request: all its blocks
        self._requested -= nbytes
        self._n_free += 1
        stack = self._free_stack
        stack.extend(reversed(ext))
        stack.extend(reversed(allocation.blocks))
        self._allocated -= nbytes
        self._reserved = self._allocated

    def live(self) -> list[Allocation]:
        """Live allocations, oldest first (with the blocks deferred to them)."""
        if self._pending:
            for a in list(self._live.values()):
                self.settle(a)
        return super().live()

    # -- MemoryPool hooks ------------------------------------------------------------------
    def _take(self, n: int, requested: int, tag: Hashable, alloc_id: int) -> Allocation:
        stack = self._free_stack
        if n > len(stack):
            self._unfold(n)
        if n == 1:
            blocks = (stack.pop(),)
        else:
            taken = stack[-n:]
            del stack[-n:]
            taken.reverse()
            blocks = tuple(taken)
        self._allocated += n * self.block_bytes
        self._reserved = self._allocated
        return Allocation(offset=blocks[0], nbytes=n * self.block_bytes, requested=requested,
                          tag=tag, blocks=blocks, id=alloc_id)

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        n = max(1, -(-nbytes // self.block_bytes))
        if n > self.n_free_blocks:
            return None
        return self._take(n, nbytes, tag, alloc_id)

    def _free(self, allocation: Allocation) -> None:
        blocks = allocation.blocks
        self._free_stack.extend(reversed(blocks))
        self._allocated -= len(blocks) * self.block_bytes
        self._reserved = self._allocated

    def fits(self, nbytes: int) -> bool:
        """Exact: enough free blocks for ``nbytes`` (a zero-byte request still takes one)."""
        return self.blocks_for(nbytes) <= self.n_free_blocks

    def largest_free_bytes(self) -> int:
        return self.n_free_blocks * self.block_bytes
