"""Segregated size classes over slabs (Bonwick's slab allocator, jemalloc-style classes).

The range is handed out in pages of ``slab_bytes`` by an inner first-fit pool aligned to
``slab_bytes``. A small request (<= ``max_class_bytes``) is rounded up to its size class and
takes a slot in a slab (one page carved into equal slots) of that class; a slab is taken
when its class has no free slot and given back as soon as all its slots are free. A larger
request is rounded up to whole pages and placed as one contiguous run of pages.

Size classes: powers of two from ``min_class_bytes`` to ``max_class_bytes`` with
``classes_per_doubling`` evenly spaced classes per doubling (1 → pure powers of two; 4 →
jemalloc's spacing: 256, 320, 384, 448, 512, ...).

``allocated`` counts slots at their class size plus large runs; ``reserved`` counts pages
held (slabs, including their free slots and unusable tails, plus large runs).
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Hashable

from llmos_sim.policies.memory.base import Allocation, MemoryPool
from llmos_sim.policies.memory.fit import FirstFitPool


class SizeClassPool(MemoryPool):
    """Size classes carved from ``slab_bytes`` slabs, large requests as page runs."""

    def __init__(
        self,
        capacity_bytes: int,
        slab_bytes: int = 2 << 20,
        min_class_bytes: int = 256,
        max_class_bytes: int = 256 << 10,
        classes_per_doubling: int = 4,
    ) -> None:
        super().__init__(capacity_bytes)
        if not 1 <= min_class_bytes <= max_class_bytes <= slab_bytes:
            raise ValueError("need 1 <= min_class_bytes <= max_class_bytes <= slab_bytes")
        if classes_per_doubling < 1:
            raise ValueError(f"classes_per_doubling must be >= 1, got {classes_per_doubling}")
        self.slab_bytes = int(slab_bytes)
        classes: list[int] = []
        base = int(min_class_bytes)
        while base <= max_class_bytes:
            step = max(base // classes_per_doubling, 1)
            for i in range(classes_per_doubling):
                c = base + i * step
                if c <= max_class_bytes and (not classes or c > classes[-1]):
                    classes.append(c)
            base *= 2
        if classes[-1] != max_class_bytes:
            classes.append(int(max_class_bytes))
        self.classes_bytes: tuple[int, ...] = tuple(classes)  #: size classes, ascending
        self.max_class_bytes = int(max_class_bytes)
        self._pages = FirstFitPool(capacity_bytes, alignment_bytes=self.slab_bytes)
        # slab start -> [class size, free slot offsets (stack), page Allocation]
        self._slabs: dict[int, list] = {}
        # class size -> slab starts that have a free slot (dict used as an ordered set)
        self._partial: dict[int, dict[int, None]] = {c: {} for c in self.classes_bytes}
        self._runs: dict[int, Allocation] = {}  # offset of a large run -> its page Allocation

    def class_for(self, nbytes: int) -> int | None:
        """The size class serving ``nbytes``, or None for a large (page-run) request."""
        if nbytes > self.max_class_bytes:
            return None
        return self.classes_bytes[bisect_left(self.classes_bytes, max(nbytes, 1))]

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        cls = self.class_for(nbytes)
        if cls is None:
            run = self._pages.allocate(nbytes)
            if run is None:
                return None
            self._runs[run.offset] = run
            self._allocated += run.nbytes
            self._reserved += run.nbytes
            return Allocation(offset=run.offset, nbytes=run.nbytes, requested=nbytes, tag=tag, id=alloc_id)
        partial = self._partial[cls]
        if partial:
            start = next(iter(partial))
        else:
            page = self._pages.allocate(self.slab_bytes)
            if page is None:
                return None
            start = page.offset
            n_slots = self.slab_bytes // cls
            # stack: pop() yields the lowest slot first
            self._slabs[start] = [cls, [start + i * cls for i in range(n_slots - 1, -1, -1)], page]
            partial[start] = None
            self._reserved += self.slab_bytes
        slots = self._slabs[start][1]
        offset = slots.pop()
        if not slots:
            del partial[start]
        self._allocated += cls
        return Allocation(offset=offset, nbytes=cls, requested=nbytes, tag=tag, id=alloc_id)

    def _free(self, allocation: Allocation) -> None:
        self._allocated -= allocation.nbytes
        run = self._runs.pop(allocation.offset, None) if allocation.nbytes > self.max_class_bytes else None
        if run is not None:
            self._pages.free(run)
            self._reserved -= run.nbytes
            return
        start = allocation.offset // self.slab_bytes * self.slab_bytes  # slabs are page-aligned
        slab = self._slabs[start]
        cls, slots, page = slab
        slots.append(allocation.offset)
        if len(slots) == self.slab_bytes // cls:  # slab empty: give its page back
            del self._slabs[start]
            self._partial[cls].pop(start, None)
            self._pages.free(page)
            self._reserved -= self.slab_bytes
        else:
            self._partial[cls][start] = None

    def largest_free_bytes(self) -> int:
        """Largest request that fits now: a free page run, else the largest class with a
        free slot. (Smaller classes may still fail; :meth:`fits` is exact.)"""
        run = self._pages.largest_free_bytes()
        if run:
            return run
        for c in reversed(self.classes_bytes):
            if self._partial[c]:
                return c
        return 0

    def fits(self, nbytes: int) -> bool:
        """Exact: would ``allocate(nbytes)`` succeed now?"""
        cls = self.class_for(nbytes)
        if cls is None:
            return self._pages.fits(nbytes)
        return bool(self._partial[cls]) or self._pages.fits(self.slab_bytes)
