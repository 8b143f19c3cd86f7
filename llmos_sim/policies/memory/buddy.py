"""Binary buddy allocator (Knowlton 1965; Knuth TAOCP vol. 1 §2.5).

Blocks have sizes ``min_block_bytes * 2**k`` and sit at offsets that are multiples of their
size, so a block's buddy is at ``offset ^ size``. A request takes the smallest order that
covers it; a larger free block is split in halves until it has that order (the upper
halves go on the free lists). On free, a block merges with its buddy while the buddy is
free and of the same order.

A capacity that is not ``min_block * 2**k`` is covered by several top-level blocks (its
binary decomposition from offset 0, largest first); they never merge with each other,
because their would-be buddies lie beyond the capacity. Bytes past the last whole
``min_block_bytes`` are never handed out.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import Hashable

from llmos_sim.policies.memory.base import Allocation, MemoryPool


class BuddyPool(MemoryPool):
    """Power-of-two blocks from ``min_block_bytes`` up; split on allocate, merge on free.

    Among free blocks of the chosen order the lowest address is taken, so runs are
    deterministic. Invariant: ``_lists[k]`` is a sorted list of offsets of free blocks of
    order ``k`` and ``_free_set[k]`` the same offsets as a set; no free block's buddy is free
    at the same order (they would have merged).
    """

    def __init__(self, capacity_bytes: int, min_block_bytes: int = 512) -> None:
        super().__init__(capacity_bytes)
        if min_block_bytes < 1 or min_block_bytes & (min_block_bytes - 1):
            raise ValueError(f"min_block_bytes must be a power of two, got {min_block_bytes}")
        self.min_block_bytes = int(min_block_bytes)
        units = self.capacity_bytes // self.min_block_bytes
        self.max_order = max(units.bit_length() - 1, 0)
        self._lists: list[list[int]] = [[] for _ in range(self.max_order + 1)]
        self._free_set: list[set[int]] = [set() for _ in range(self.max_order + 1)]
        offset = 0
        for k in range(self.max_order, -1, -1):  # binary decomposition, largest block first
            if units >> k & 1:
                self._push(k, offset)
                offset += self.min_block_bytes << k

    def _push(self, k: int, offset: int) -> None:
        insort(self._lists[k], offset)
        self._free_set[k].add(offset)

    def _drop(self, k: int, offset: int) -> None:
        lst = self._lists[k]
        del lst[bisect_left(lst, offset)]
        self._free_set[k].discard(offset)

    def order_for(self, nbytes: int) -> int:
        """Order ``k`` of the block serving ``nbytes``: the smallest with ``min*2**k >= nbytes``."""
        units = -(-max(nbytes, 1) // self.min_block_bytes)
        return (units - 1).bit_length()

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        k = self.order_for(nbytes)
        j = k
        while j <= self.max_order and not self._lists[j]:
            j += 1
        if j > self.max_order:
            return None
        offset = self._lists[j][0]
        self._drop(j, offset)
        while j > k:  # split: keep the lower half, free the upper half
            j -= 1
            self._push(j, offset + (self.min_block_bytes << j))
        size = self.min_block_bytes << k
        self._allocated += size
        self._reserved = self._allocated
        return Allocation(offset=offset, nbytes=size, requested=nbytes, tag=tag, id=alloc_id)

    def _free(self, allocation: Allocation) -> None:
        offset, size = allocation.offset, allocation.nbytes
        k = (size // self.min_block_bytes).bit_length() - 1
        self._allocated -= size
        self._reserved = self._allocated
        while k < self.max_order:  # merge while the buddy is free at the same order
            buddy = offset ^ (self.min_block_bytes << k)
            if buddy not in self._free_set[k]:
                break
            self._drop(k, buddy)
            offset = min(offset, buddy)
            k += 1
        self._push(k, offset)

    def fits(self, nbytes: int) -> bool:
        """Exact: a free block of the request's order or larger exists."""
        return self.min_block_bytes << self.order_for(nbytes) <= self.largest_free_bytes()

    def largest_free_bytes(self) -> int:
        for k in range(self.max_order, -1, -1):
            if self._lists[k]:
                return self.min_block_bytes << k
        return 0
