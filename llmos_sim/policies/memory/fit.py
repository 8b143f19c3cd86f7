"""Address-range pools: first/next/best/worst-fit with splitting and coalescing.

One base class, :class:`FitPool`, owns the free-extent bookkeeping (split on allocate,
coalesce with both neighbours on free); each variant overrides one hook,
:meth:`FitPool._choose`, that picks which free extent to carve from.

Data structures (all kept in step; invariants checked by the property tests):

- ``_free_end``: start -> end of every free extent, and ``_free_start``: end -> start.
  Coalescing a freed block with its left/right neighbour is two O(1) dict look-ups.
- ``_keys``: a sorted list of ``(size << shift) | start`` ints, one per free extent. It is the
  size-ordered index: best-fit is one ``bisect``, worst-fit and ``largest_free_bytes`` read
  the last element. Packing size and start into one int keeps comparisons in C; ties in
  size break by the lowest start, so choices are deterministic.
- ``_index`` (first/next-fit only): :class:`_OffsetIndex`, free extents ordered by start in
  chunks of at most ``2 * LOAD``, with a segment tree of chunk maxima, so the
  lowest-addressed extent that fits is found in O(log n + LOAD), not by a scan.

Invariants: free extents are disjoint, never adjacent (adjacent ones are merged), aligned
to ``alignment_bytes`` and lie in ``[0, usable_capacity_bytes)``; together with the live
allocations they tile that range exactly.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from typing import Hashable

from llmos_sim.policies.memory.base import Allocation, MemoryPool


class _OffsetIndex:
    """Free extents ordered by start offset, in chunks, with a max-tree over the chunks.

    A two-level sorted list (the layout ``sortedcontainers.SortedList`` uses): ``_starts[i]``
    and ``_sizes[i]`` are parallel sorted chunks of at most ``2 * LOAD`` extents,
    ``_firsts[i] == _starts[i][0]``. ``_tree`` is a segment tree of chunk maxima (leaf ``P+i``
    holds ``max(_sizes[i])``; empty leaves hold 0), so "the first chunk at or after ``i`` with
    an extent of at least ``n`` bytes" is an O(log n_chunks) descent, and first-fit costs
    O(log n + LOAD) instead of a scan over every extent. The tree is rebuilt (O(n_chunks))
    only when chunks split or vanish, i.e. at most once per ``LOAD`` changes.
    """

    LOAD = 64

    def __init__(self) -> None:
        self._starts: list[list[int]] = []
        self._sizes: list[list[int]] = []
        self._firsts: list[int] = []
        self._P = 1
        self._tree: list[int] = [0, 0]

    # -- max-tree over chunks -------------------------------------------------------------
    def _rebuild(self) -> None:
        c = len(self._sizes)
        P = 1
        while P < c:
            P *= 2
        t = [0] * (2 * P)
        for i, sz in enumerate(self._sizes):
            t[P + i] = max(sz)
        for k in range(P - 1, 0, -1):
            a, b = t[2 * k], t[2 * k + 1]
            t[k] = a if a > b else b
        self._P, self._tree = P, t

    def _set_max(self, i: int, m: int) -> None:
        t = self._tree
        k = self._P + i
        if t[k] == m:
            return
        t[k] = m
        k >>= 1
        while k:
            a, b = t[2 * k], t[2 * k + 1]
            m = a if a > b else b
            if t[k] == m:
                break
            t[k] = m
            k >>= 1

    def _first_chunk(self, i: int, size: int) -> int | None:
        """Smallest chunk index >= ``i`` whose max is >= ``size``."""
        t, P = self._tree, self._P
        k = P + i
        if t[k] < size:
            while k > 1:
                if not k & 1 and t[k + 1] >= size:  # right sibling covers the next chunks
                    k += 1
                    break
                k >>= 1
            else:
                return None
        while k < P:  # descend to the leftmost qualifying leaf
            k = 2 * k if t[2 * k] >= size else 2 * k + 1
        return k - P

    # -- sorted-list operations -------------------------------------------------------------
    def _chunk(self, start: int) -> int:
        i = bisect_right(self._firsts, start) - 1
        return i if i > 0 else 0

    def insert(self, start: int, size: int) -> None:
        if not self._firsts:
            self._starts.append([start])
            self._sizes.append([size])
            self._firsts.append(start)
            self._rebuild()
            return
        i = self._chunk(start)
        starts, sizes = self._starts[i], self._sizes[i]
        j = bisect_left(starts, start)
        starts.insert(j, start)
        sizes.insert(j, size)
        if j == 0:
            self._firsts[i] = start
        if len(starts) > 2 * self.LOAD:  # split the chunk in two halves
            half = len(starts) // 2
            s2, z2 = starts[half:], sizes[half:]
            del starts[half:], sizes[half:]
            self._starts.insert(i + 1, s2)
            self._sizes.insert(i + 1, z2)
            self._firsts.insert(i + 1, s2[0])
            self._rebuild()
        elif size > self._tree[self._P + i]:
            self._set_max(i, size)

    def remove(self, start: int) -> None:
        i = self._chunk(start)
        starts, sizes = self._starts[i], self._sizes[i]
        j = bisect_left(starts, start)
        size = sizes[j]
        del starts[j], sizes[j]
        if not starts:
            del self._starts[i], self._sizes[i], self._firsts[i]
            self._rebuild()
            return
        if j == 0:
            self._firsts[i] = starts[0]
        if size == self._tree[self._P + i]:
            self._set_max(i, max(sizes))

    def update(self, start: int, new_start: int, new_size: int) -> None:
        """Change one extent in place; the caller guarantees its rank in address order is
        unchanged (a carved extent's remainder, or an extent grown by coalescing)."""
        i = self._chunk(start)
        starts, sizes = self._starts[i], self._sizes[i]
        j = bisect_left(starts, start)
        old = sizes[j]
        starts[j], sizes[j] = new_start, new_size
        if j == 0:
            self._firsts[i] = new_start
        m = self._tree[self._P + i]
        if new_size > m:
            self._set_max(i, new_size)
        elif old == m and new_size < old:
            self._set_max(i, max(sizes))

    def first_fit(self, size: int, lo: int = 0) -> int | None:
        """Start of the lowest-addressed extent with start >= ``lo`` and at least ``size``."""
        if not self._firsts:
            return None
        i = self._chunk(lo)
        starts, sizes = self._starts[i], self._sizes[i]
        if starts[0] < lo and self._tree[self._P + i] >= size:  # lo falls inside chunk i
            j = bisect_left(starts, lo)
            tail = sizes[j:]
            v = next(filter(size.__le__, tail), None)  # C-speed scan for the first fit
            if v is not None:
                return starts[j + tail.index(v)]
            i += 1
        i = self._first_chunk(i, size) if i < len(self._sizes) else None
        if i is None:
            return None
        sizes = self._sizes[i]
        # first element >= size; sizes.index(v) finds it, as no earlier element is >= size
        v = next(filter(size.__le__, sizes))  # StopIteration here = max-tree out of step
        return self._starts[i][sizes.index(v)]

    def floor(self, offset: int) -> int | None:
        """Start of the last extent starting at or before ``offset`` (None if none)."""
        if not self._firsts:
            return None
        i = self._chunk(offset)
        starts = self._starts[i]
        j = bisect_right(starts, offset) - 1
        return starts[j] if j >= 0 else None


class FitPool(MemoryPool):
    """Contiguous allocation over ``[0, capacity)`` with splitting and coalescing.

    Requests are rounded up to a multiple of ``alignment_bytes`` (a zero-byte request takes
    one unit, so every allocation has its own address); the tail of the range beyond the
    last whole unit (``capacity % alignment``) is never handed out. ``reserved == allocated``
    (nothing is cached). Subclasses override :meth:`_choose`.
    """

    #: subclasses that search in address order (first/next-fit) set this to build _index
    _offset_ordered: bool = False

    def __init__(self, capacity_bytes: int, alignment_bytes: int = 1) -> None:
        super().__init__(capacity_bytes)
        if alignment_bytes < 1:
            raise ValueError(f"alignment_bytes must be >= 1, got {alignment_bytes}")
        self.alignment_bytes = int(alignment_bytes)
        #: the part of the range that whole units cover
        self.usable_capacity_bytes = self.capacity_bytes // self.alignment_bytes * self.alignment_bytes
        self._shift = max(self.usable_capacity_bytes.bit_length(), 1)
        self._mask = (1 << self._shift) - 1
        self._free_end: dict[int, int] = {}
        self._free_start: dict[int, int] = {}
        self._keys: list[int] = []
        self._index = _OffsetIndex() if self._offset_ordered else None
        if self.usable_capacity_bytes:
            self._add(0, self.usable_capacity_bytes)

    # -- free-extent bookkeeping ------------------------------------------------------
    def _add(self, start: int, size: int) -> None:
        end = start + size
        self._free_end[start] = end
        self._free_start[end] = start
        insort(self._keys, (size << self._shift) | start)
        if self._index is not None:
            self._index.insert(start, size)

    def _remove(self, start: int) -> int:
        end = self._free_end.pop(start)
        del self._free_start[end]
        keys = self._keys
        del keys[bisect_left(keys, ((end - start) << self._shift) | start)]
        if self._index is not None:
            self._index.remove(start)
        return end

    def _replace(self, start: int, new_start: int, new_end: int) -> None:
        """Turn free extent ``start`` into ``[new_start, new_end)``, keeping its address rank."""
        end = self._free_end.pop(start)
        del self._free_start[end]
        keys, sh = self._keys, self._shift
        del keys[bisect_left(keys, ((end - start) << sh) | start)]
        self._free_end[new_start] = new_end
        self._free_start[new_end] = new_start
        insort(keys, ((new_end - new_start) << sh) | new_start)
        if self._index is not None:
            self._index.update(start, new_start, new_end - new_start)

    def round_size(self, nbytes: int) -> int:
        """Bytes set aside for a request of ``nbytes`` (rounded up to the alignment)."""
        a = self.alignment_bytes
        return (max(nbytes, 1) + a - 1) // a * a

    def free_extents(self) -> list[tuple[int, int]]:
        """Free ``(start, end)`` ranges in address order (for tests and plots)."""
        return sorted(self._free_end.items())

    # -- the hook ---------------------------------------------------------------------
    def _choose(self, size: int) -> int | None:
        """Start of the free extent to carve ``size`` bytes from, or None if none fits."""
        raise NotImplementedError

    # -- MemoryPool hooks -------------------------------------------------------------
    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        size = self.round_size(nbytes)
        start = self._choose(size)
        if start is None:
            return None
        end = self._free_end[start]
        if end - start > size:  # split: the remainder stays free, right after the block
            self._replace(start, start + size, end)
        else:
            self._remove(start)
        self._allocated += size
        self._reserved = self._allocated
        self._on_allocated(start, size)
        return Allocation(offset=start, nbytes=size, requested=nbytes, tag=tag, id=alloc_id)

    def _on_allocated(self, start: int, size: int) -> None:
        """Called after a block is carved (next-fit moves its rover here)."""

    def _free(self, allocation: Allocation) -> None:
        start, end = allocation.offset, allocation.end
        self._allocated -= allocation.nbytes
        self._reserved = self._allocated
        left = self._free_start.get(start)
        right_end = self._free_end.get(end)
        if left is not None:  # coalesce with the free extent ending where we start
            if right_end is not None:  # ... and with the one starting where we end
                self._remove(end)
                end = right_end
            self._replace(left, left, end)
        elif right_end is not None:  # coalesce with the free extent starting where we end
            self._replace(end, start, right_end)
        else:
            self._add(start, end - start)

    def fits(self, nbytes: int) -> bool:
        """Exact: some free extent holds the rounded request (every policy finds it then)."""
        return self.round_size(nbytes) <= self.largest_free_bytes()

    def largest_free_bytes(self) -> int:
        return self._keys[-1] >> self._shift if self._keys else 0


class FirstFitPool(FitPool):
    """Carve from the lowest-addressed free extent that is large enough."""

    _offset_ordered = True

    def _choose(self, size: int) -> int | None:
        return self._index.first_fit(size, 0)


class NextFitPool(FitPool):
    """First-fit that resumes where the last search stopped (Knuth's roving pointer).

    The rover is the end of the last allocated block. The search starts at the free extent
    containing the rover (or the first one after it), runs to the end of the range and then
    wraps around to offset 0.
    """

    _offset_ordered = True

    def __init__(self, capacity_bytes: int, alignment_bytes: int = 1) -> None:
        super().__init__(capacity_bytes, alignment_bytes)
        self.rover_bytes = 0  #: offset where the next search starts

    def _choose(self, size: int) -> int | None:
        idx = self._index
        lo = self.rover_bytes
        f = idx.floor(lo)
        if f is not None and self._free_end[f] > lo:  # the rover sits inside a free extent
            lo = f
        found = idx.first_fit(size, lo)
        if found is None and lo > 0:
            found = idx.first_fit(size, 0)  # wrap around
        return found

    def _on_allocated(self, start: int, size: int) -> None:
        self.rover_bytes = start + size


class BestFitPool(FitPool):
    """Carve from the smallest free extent that is large enough (lowest address on ties)."""

    def _choose(self, size: int) -> int | None:
        keys = self._keys
        i = bisect_left(keys, size << self._shift)
        return keys[i] & self._mask if i < len(keys) else None


class WorstFitPool(FitPool):
    """Carve from the largest free extent (lowest address on ties)."""

    def _choose(self, size: int) -> int | None:
        keys = self._keys
        if not keys:
            return None
        top = keys[-1] >> self._shift
        if top < size:
            return None
        return keys[bisect_left(keys, top << self._shift)] & self._mask
