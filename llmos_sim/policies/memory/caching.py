"""A caching allocator following PyTorch's CUDA caching allocator.

Rules modelled (PyTorch docs, "CUDA semantics – Memory management" and
``c10/cuda/CUDACachingAllocator.cpp``, constants ``kMinBlockSize``, ``kSmallSize``,
``kSmallBuffer``, ``kLargeBuffer``, ``kMinLargeAlloc``, ``kRoundLarge``):

1. ``round_size``: every request is rounded up to a multiple of 512 B (minimum 512 B).
2. Requests of <= 1 MiB (after rounding) use the *small* pool, larger ones the *large*
   pool; the pools never share blocks.
3. ``get_free_block``: best fit — the smallest cached free block of the pool that is large
   enough (lowest address on ties; PyTorch orders by ``(stream, size, address)``).
4. ``get_allocation_size`` when no cached block fits, a new segment ("cudaMalloc") of:
   2 MiB for small requests; 20 MiB for large requests < 10 MiB; otherwise the request
   rounded up to a multiple of 2 MiB.
5. ``should_split``: a block larger than the request is split if the remainder is
   >= 512 B in the small pool, and in *every* pool when expandable segments are on (rule 8);
   in the large pool of ordinary segments only if the remainder is > 1 MiB and the request
   is below ``max_split_size`` (rule 9). Otherwise the whole block is handed out.
6. On free a block merges only with its free neighbours *inside its segment*
   (``try_merge_blocks``); segments are never merged and are not returned to the device.
7. If the new segment cannot be had, all cached segments that are entirely free are
   released (``release_cached_blocks``, i.e. ``torch.cuda.empty_cache()``) and the
   segment is tried once more; then the request fails (OOM → ``None``).
8. ``expandable_segments=True`` (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``):
   each pool has one segment that grows by mapping pages (2 MiB for the small pool,
   20 MiB for the large pool) at its end, so freed blocks merge across what would have
   been separate segments and nothing is stranded per segment. A new block is cut from the
   segment's growing end (``try_allocate_expandable_block``), not searched for.
9. ``max_split_size_bytes`` (``PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:N``, here in bytes;
   PyTorch requires more than 20 MiB; ``None`` = unlimited, PyTorch's default): a cached
   block of at least this size is *oversize*. In ordinary segments an oversize request's
   block is never split (rule 5). In ``get_free_block`` the best-fitting cached block is
   refused if the request is below the limit and the block is oversize (small requests never
   take a piece of a big block), or if the request is itself oversize and the block exceeds it
   by 20 MiB (``kLargeBuffer``) or more (an oversize block serves only requests close to its
   size). A refused search goes on as if nothing were cached: a new segment.
10. A request of 0 bytes is a no-op (``malloc(0)`` returns a null pointer): a 0-byte
    allocation at offset 0 that reserves and occupies nothing.

Modelling choices (not PyTorch): one stream; no ``roundup_power2_divisions`` option;
``release_available_cached_blocks`` (with ``max_split_size``, freeing just enough oversize
segments first) is folded into rule 7, which frees every whole free segment. Segments are placed first-fit in the
device range ``[0, capacity)`` (an inner :class:`FirstFitPool` aligned to 512 B) so that
offsets are real positions in a per-device arena; real ``cudaMalloc`` maps pages into
virtual addresses and is not subject to this device-level fragmentation. With expandable
segments, the large pool's segment grows up from offset 0 and the small pool's down from
the top of the range; ``empty_cache`` unmaps only the free pages at a segment's growing
end (PyTorch also unmaps free pages inside the segment).

Stats: ``reserved`` = bytes in segments (mapped pages), ``allocated`` = bytes of live
blocks (after rounding and unsplit remainders), ``free`` = capacity − allocated as in every
pool (cached free blocks count as free: they can serve requests).
"""
from __future__ import annotations

import copy
from bisect import bisect_left, insort
from typing import Hashable

from llmos_sim.policies.memory.base import Allocation, MemoryPool
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.validate import ConfigError

MiB = 1 << 20


class _FreeBlocks:
    """Cached free blocks of one pool: size-ordered keys plus start/end maps for merging.

    Invariant: each free block ``[start, end)`` of segment ``seg`` appears once in ``keys``
    as ``(size << shift) | start``, in ``end_of[start] = (end, seg)`` and ``start_of[end]``.
    """

    def __init__(self, shift: int) -> None:
        self.shift = shift
        self.mask = (1 << shift) - 1
        self.keys: list[int] = []
        self.end_of: dict[int, tuple[int, Hashable]] = {}
        self.start_of: dict[int, int] = {}

    def add(self, start: int, end: int, seg: Hashable) -> None:
        self.end_of[start] = (end, seg)
        self.start_of[end] = start
        insort(self.keys, ((end - start) << self.shift) | start)

    def remove(self, start: int) -> tuple[int, Hashable]:
        end, seg = self.end_of.pop(start)
        del self.start_of[end]
        del self.keys[bisect_left(self.keys, ((end - start) << self.shift) | start)]
        return end, seg

    def best_fit(self, size: int) -> int | None:
        i = bisect_left(self.keys, size << self.shift)
        return self.keys[i] & self.mask if i < len(self.keys) else None

    def largest(self) -> int:
        return self.keys[-1] >> self.shift if self.keys else 0


class CachingPool(MemoryPool):
    """PyTorch-style caching allocator (see the module docstring for the rules and sources)."""

    def __init__(
        self,
        capacity_bytes: int,
        expandable_segments: bool = False,
        min_block_bytes: int = 512,
        small_size_bytes: int = 1 * MiB,
        small_buffer_bytes: int = 2 * MiB,
        large_buffer_bytes: int = 20 * MiB,
        min_large_alloc_bytes: int = 10 * MiB,
        round_large_bytes: int = 2 * MiB,
        max_split_size_bytes: int | None = None,
    ) -> None:
        super().__init__(capacity_bytes)
        if max_split_size_bytes is not None and not max_split_size_bytes > large_buffer_bytes:
            raise ConfigError("memory.max_split_size_bytes", f"must be > large_buffer_bytes ({large_buffer_bytes}) "
                                                             f"as in PyTorch, got {max_split_size_bytes}")
        #: requests and blocks of at least this size are oversize (rule 9); None = unlimited
        self.max_split_size_bytes = None if max_split_size_bytes is None else int(max_split_size_bytes)
        self.expandable_segments = bool(expandable_segments)
        self.min_block_bytes = int(min_block_bytes)
        self.small_size_bytes = int(small_size_bytes)
        self.small_buffer_bytes = int(small_buffer_bytes)
        self.large_buffer_bytes = int(large_buffer_bytes)
        self.min_large_alloc_bytes = int(min_large_alloc_bytes)
        self.round_large_bytes = int(round_large_bytes)
        shift = max(self.capacity_bytes.bit_length(), 1)
        self._pools = {True: _FreeBlocks(shift), False: _FreeBlocks(shift)}  # key: is_small
        self._block_seg: dict[int, Hashable] = {}  # live block offset -> its segment key
        # standard mode: segment start -> (device Allocation, is_small)
        self._device = FirstFitPool(self.capacity_bytes, alignment_bytes=self.min_block_bytes)
        self._segments: dict[int, tuple[Allocation, bool]] = {}
        # expandable mode: one [lo, hi) segment per pool; large grows up, small grows down
        top = self.capacity_bytes // self.min_block_bytes * self.min_block_bytes
        self._exp = {False: [0, 0], True: [top, top]}

    # -- PyTorch's size rules --------------------------------------------------------------
    def round_size(self, nbytes: int) -> int:
        """``round_size``: up to a multiple of 512 B, at least 512 B."""
        m = self.min_block_bytes
        return max(m, (nbytes + m - 1) // m * m)

    def allocation_size(self, size: int) -> int:
        """``get_allocation_size``: bytes of the segment a new ``size``-byte block needs."""
        if size <= self.small_size_bytes:
            return self.small_buffer_bytes
        if size < self.min_large_alloc_bytes:
            return self.large_buffer_bytes
        r = self.round_large_bytes
        return (size + r - 1) // r * r

    def _should_split(self, remaining: int, small: bool, size: int) -> bool:
        """``should_split`` (rule 5) for a ``size``-byte request leaving ``remaining`` bytes."""
        if small or self.expandable_segments:
            return remaining >= self.min_block_bytes
        return not self._oversize(size) and remaining > self.small_size_bytes

    def _oversize(self, nbytes: int) -> bool:
        return self.max_split_size_bytes is not None and nbytes >= self.max_split_size_bytes

    def _cached_block(self, size: int, small: bool) -> int | None:
        """``get_free_block`` (rules 3 and 9): the start of the cached block to use, or None."""
        pool = self._pools[small]
        start = pool.best_fit(size)
        if start is None or self.max_split_size_bytes is None:
            return start
        block = pool.end_of[start][0] - start
        if not self._oversize(size) and self._oversize(block):
            return None  # a small request never takes a piece of an oversize block
        if self._oversize(size) and block >= size + self.large_buffer_bytes:
            return None  # an oversize block serves only requests within 20 MiB of its size
        return start

    # -- segments ------------------------------------------------------------------------
    def _page_bytes(self, small: bool) -> int:
        return self.small_buffer_bytes if small else self.large_buffer_bytes

    def _new_segment(self, size: int, small: bool) -> int | None:
        """Get room for a ``size``-byte block from the device: the start of the free block that
        holds it (a new segment, or the grown end of the expandable one); None if no room."""
        pool = self._pools[small]
        if not self.expandable_segments:
            seg = self._device.allocate(self.allocation_size(size))
            if seg is None:
                return None
            self._segments[seg.offset] = (seg, small)
            pool.add(seg.offset, seg.end, seg.offset)
            self._reserved += seg.nbytes
            return seg.offset
        lo, hi = self._exp[small]
        gap = self._exp[True][0] - self._exp[False][1]
        page = self._page_bytes(small)
        if small:  # grows down: extend the free block starting at lo, if any
            edge = pool.end_of.get(lo)
            have = edge[0] - lo if edge else 0
        else:  # grows up: extend the free block ending at hi, if any
            edge_start = pool.start_of.get(hi)
            have = hi - edge_start if edge_start is not None else 0
        grow = -(-(size - have) // page) * page
        if grow > gap:
            return None
        if small:
            end = pool.remove(lo)[0] if have else lo
            self._exp[small][0] = start = lo - grow
            pool.add(start, end, small)
        else:
            start = edge_start if have else hi
            if have:
                pool.remove(edge_start)
            self._exp[small][1] = hi + grow
            pool.add(start, hi + grow, small)
        self._reserved += grow
        return start

    _n_emptied = 0  #: calls of empty_cache (part of the state ``fits`` answers for)

    def empty_cache(self) -> int:
        """Release cached memory to the device (``torch.cuda.empty_cache``); returns bytes.

        Standard mode: every segment that is one whole free block is released. Expandable
        mode: the free pages at each segment's growing end are unmapped.
        """
        self._n_emptied += 1
        before = self._reserved
        if not self.expandable_segments:
            for start, (seg, small) in list(self._segments.items()):
                pool = self._pools[small]
                blk = pool.end_of.get(start)
                if blk is not None and blk[0] == seg.end:
                    pool.remove(start)
                    del self._segments[start]
                    self._device.free(seg)
                    self._reserved -= seg.nbytes
            return before - self._reserved
        for small in (False, True):
            pool, page = self._pools[small], self._page_bytes(small)
            lo, hi = self._exp[small]
            if small:
                blk = pool.end_of.get(lo)
                if blk is None:
                    continue
                y = blk[0]
                new_lo = hi - -(-(hi - y) // page) * page
                if new_lo > lo:
                    pool.remove(lo)
                    if new_lo < y:
                        pool.add(new_lo, y, small)
                    self._exp[small][0] = new_lo
                    self._reserved -= new_lo - lo
            else:
                x = pool.start_of.get(hi)
                if x is None:
                    continue
                new_hi = lo + -(-(x - lo) // page) * page
                if new_hi < hi:
                    pool.remove(x)
                    if x < new_hi:
                        pool.add(x, new_hi, small)
                    self._exp[small][1] = new_hi
                    self._reserved -= hi - new_hi
        return before - self._reserved

    # -- MemoryPool hooks ------------------------------------------------------------------
    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        if nbytes == 0:  # rule 10: nothing to hand out
            return Allocation(offset=0, nbytes=0, requested=0, tag=tag, id=alloc_id)
        size = self.round_size(nbytes)
        small = size <= self.small_size_bytes
        pool = self._pools[small]
        start = self._cached_block(size, small)
        if start is None:
            start = self._new_segment(size, small)
            if start is None:
                self.empty_cache()  # free all cached segments and retry once
                start = self._new_segment(size, small)
                if start is None:
                    return None
        end, seg = pool.remove(start)
        if self._should_split(end - start - size, small, size):
            pool.add(start + size, end, seg)
            end = start + size
        self._block_seg[start] = seg
        self._allocated += end - start
        return Allocation(offset=start, nbytes=end - start, requested=nbytes, tag=tag, id=alloc_id)

    def _free(self, allocation: Allocation) -> None:
        if allocation.nbytes == 0:  # a 0-byte request held nothing
            return
        start, end = allocation.offset, allocation.end
        seg = self._block_seg.pop(start)
        small = self._is_small_seg(seg)
        pool = self._pools[small]
        self._allocated -= allocation.nbytes
        left = pool.start_of.get(start)
        if left is not None and pool.end_of[left][1] == seg:  # merge left, same segment only
            pool.remove(left)
            start = left
        right = pool.end_of.get(end)
        if right is not None and right[1] == seg:  # merge right, same segment only
            pool.remove(end)
            end = right[0]
        pool.add(start, end, seg)

    def _is_small_seg(self, seg: Hashable) -> bool:
        return seg if self.expandable_segments else self._segments[seg][1]

    def _largest_new(self, free_run: int) -> int:
        """Largest request a new segment carved from ``free_run`` device bytes can serve."""
        r = free_run // self.round_large_bytes * self.round_large_bytes
        if r >= self.min_large_alloc_bytes:
            return r
        return self.small_size_bytes if free_run >= self.small_buffer_bytes else 0

    def largest_free_bytes(self) -> int:
        """Largest request served now without emptying the cache: a cached block (small-pool
        blocks serve at most 1 MiB requests) or a new segment / segment growth. Requests in
        this pool are not monotone (a 12 MiB request may fit where a 5 MiB one, needing a
        20 MiB segment, does not); :meth:`fits` is exact."""
        best = max(self._pools[False].largest(), min(self._pools[True].largest(), self.small_size_bytes))
        if not self.expandable_segments:
            return max(best, self._largest_new(self._device.largest_free_bytes()))
        gap = self._exp[True][0] - self._exp[False][1]
        lo_s, hi_l = self._exp[True][0], self._exp[False][1]
        e_l = self._pools[False].start_of.get(hi_l)
        e_s = self._pools[True].end_of.get(lo_s)
        grow_l = (hi_l - e_l if e_l is not None else 0) + gap // self.large_buffer_bytes * self.large_buffer_bytes
        grow_s = (e_s[0] - lo_s if e_s is not None else 0) + gap // self.small_buffer_bytes * self.small_buffer_bytes
        small_ok = self.small_size_bytes if grow_s >= self.min_block_bytes else 0
        large_ok = grow_l if grow_l > self.small_size_bytes else 0
        return max(best, min(grow_s, small_ok), large_ok)

    def fits(self, nbytes: int) -> bool:
        """Exact: would ``allocate(nbytes)`` succeed now (including the empty-cache retry)?
        Runs the allocation on a copy of the pool: O(pool state). Answers are kept until the
        pool next changes (an allocation, a free, a failed allocation — which may empty the
        cache — or ``empty_cache``): a scheduling pass asks the same question of the same
        unchanged pool many times."""
        state = (self._n_alloc, self._n_free, self._n_fail, self._n_emptied)
        memo = self.__dict__.get("_fits_memo")
        if memo is None or memo[0] != state:
            memo = self._fits_memo = (state, {})
        n = int(nbytes)
        hit = memo[1].get(n)
        if hit is None:
            clone = copy.copy(self)
            clone.__dict__.pop("_fits_memo", None)
            hit = memo[1][n] = copy.deepcopy(clone)._allocate(n, None, 0) is not None
        return hit

    def cached_free_blocks(self) -> list[tuple[int, int, bool]]:
        """Cached free blocks as ``(start, end, is_small_pool)``, in address order."""
        return sorted((s, e, small) for small, pool in self._pools.items() for s, (e, _seg) in pool.end_of.items())

    @property
    def n_segments(self) -> int:
        """Segments held (standard mode) or pools with mapped memory (expandable mode)."""
        if not self.expandable_segments:
            return len(self._segments)
        return sum(1 for lo, hi in self._exp.values() if hi > lo)
