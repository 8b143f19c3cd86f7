"""The memory-pool seam: ``allocate(nbytes, tag) -> Allocation | None``, ``free``, ``stats``.

A pool manages one device's memory of capacity ``M`` as an address range ``[0, M)``.
``None`` from :meth:`MemoryPool.allocate` means "no room now"; the caller (the engine)
decides whether to wait, preempt or fail. Pools are the one stateful kind of policy: they own
their bookkeeping and only the engine (or a serving replica on the engine's behalf) calls them.

What a pool can do beyond the seam it declares as class attributes, so callers ask instead of
guessing from class names: :attr:`MemoryPool.addressed` (offsets are positions a real arena
can back), :attr:`MemoryPool.exact_free_count` (an allocation succeeds exactly when its blocks
are free: a KV cache may count free blocks itself), :attr:`MemoryPool.reserves_max_length`
(every allocation reserves a sequence's maximum length: a KV cache on it reserves, not grows),
:attr:`MemoryPool.owns_storage` (each allocation is its own storage, ``pool.tensor(a)``).
Pools of fixed-size blocks derive from :class:`BlockPool` (block size, growth in whole blocks).

Subclasses implement :meth:`_allocate` and :meth:`_free` and keep ``self._allocated`` (bytes
handed out, after rounding) and ``self._reserved`` (bytes the pool holds from the device,
>= allocated; equal for pools that do not cache) up to date; the base class keeps requested
bytes, live allocations and failure counts, so every policy reports stats the same way.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Hashable, Sequence


@dataclass(frozen=True, slots=True)
class Allocation:
    """A granted block: ``[offset, offset + nbytes)`` in the pool's address range.

    ``nbytes`` is what the pool set aside (after rounding); ``requested`` what was asked.
    Paged pools hand out several blocks: ``blocks`` then lists their offsets, each of the
    pool's block size, and ``offset`` is the first.
    """

    offset: int
    nbytes: int
    requested: int
    tag: Hashable = None
    blocks: tuple[int, ...] = ()
    id: int = 0  #: unique per pool, so equal-looking allocations are distinct

    @property
    def end(self) -> int:
        return self.offset + self.nbytes

    def extents(self) -> list[tuple[int, int]]:
        """The ``(start, end)`` byte ranges this allocation covers."""
        if self.blocks:
            size = self.nbytes // len(self.blocks)
            return [(b, b + size) for b in self.blocks]
        return [(self.offset, self.offset + self.nbytes)]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """What every pool reports, the same way.

    - ``requested_bytes``: sum of live requests (what callers asked for)
    - ``allocated_bytes``: sum of live allocations after rounding (>= requested)
    - ``reserved_bytes``: held from the device, including cached free blocks (>= allocated)
    - ``largest_free_bytes``: the largest request that could succeed now without growing
    - ``internal_frag_bytes`` = allocated − requested
    - ``external_frag`` = 1 − largest free / total free (0 when nothing is free)
    - ``utilisation`` = requested / capacity
    """

    capacity_bytes: int
    requested_bytes: int
    allocated_bytes: int
    reserved_bytes: int
    largest_free_bytes: int
    free_bytes: int
    n_live: int
    n_alloc: int
    n_free: int
    n_failures: int

    @property
    def internal_frag_bytes(self) -> int:
        return self.allocated_bytes - self.requested_bytes

    @property
    def external_frag(self) -> float:
        return 0.0 if self.free_bytes <= 0 else 1.0 - self.largest_free_bytes / self.free_bytes

    @property
    def utilisation(self) -> float:
        return self.requested_bytes / self.capacity_bytes if self.capacity_bytes else 0.0


class MemoryPool(ABC):
    """Base of every pool policy. ``capacity_bytes`` is the seed's ``M``."""

    #: offsets are positions in ``[0, capacity)`` that a real arena can back (False: labels,
    #: e.g. the ideal pool's running counter)
    addressed: ClassVar[bool] = True
    #: ``allocate`` succeeds exactly when the request's blocks are free (no rounding beyond the
    #: block, no fragmentation), so a KV cache's own free-block count is exact
    exact_free_count: ClassVar[bool] = False
    #: every allocation reserves a sequence's maximum length up front (``kv_mode: auto`` reserves)
    reserves_max_length: ClassVar[bool] = False
    #: each allocation is its own storage, given by ``tensor(allocation)`` (a real allocator)
    owns_storage: ClassVar[bool] = False

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = int(capacity_bytes)
        self._allocated = 0
        self._reserved = 0
        self._requested = 0
        self._live: dict[int, Allocation] = {}
        self._next_id = 1
        self._n_alloc = 0
        self._n_free = 0
        self._n_fail = 0

    # -- the seam -----------------------------------------------------------------------
    def allocate(self, nbytes: int, tag: Hashable = None) -> Allocation | None:
        """Set aside at least ``nbytes``; ``None`` if there is no room now."""
        if nbytes < 0:
            raise ValueError(f"allocate: nbytes must be >= 0, got {nbytes}")
        a = self._allocate(int(nbytes), tag, self._next_id)
        if a is None:
            self._n_fail += 1
            return None
        self._next_id += 1
        self._live[a.id] = a
        self._requested += a.requested
        self._n_alloc += 1
        return a

    def free(self, allocation: Allocation) -> None:
        """Return ``allocation`` to the pool. Freeing twice is an error."""
        if self._live.pop(allocation.id, None) is None:
            raise ValueError(f"free: allocation {allocation.id} is not live in this pool")
        self._requested -= allocation.requested
        self._n_free += 1
        self._free(allocation)

    def stats(self) -> PoolStats:
        free = self.capacity_bytes - self._allocated
        return PoolStats(
            capacity_bytes=self.capacity_bytes,
            requested_bytes=self._requested,
            allocated_bytes=self._allocated,
            reserved_bytes=self._reserved,
            largest_free_bytes=self.largest_free_bytes(),
            free_bytes=free,
            n_live=len(self._live),
            n_alloc=self._n_alloc,
            n_free=self._n_free,
            n_failures=self._n_fail,
        )

    def levels(self) -> tuple[int, int, int, int]:
        """``(allocated, reserved, requested, largest_free)`` bytes: the cheap subset of
        :meth:`stats` the engine records after every operation."""
        return (self._allocated, self._reserved, self._requested, self.largest_free_bytes())

    def fits(self, nbytes: int) -> bool:
        """Would ``allocate(nbytes)`` succeed now? Placement asks this; it changes nothing."""
        return nbytes <= self.largest_free_bytes()

    def live(self) -> list[Allocation]:
        """Live allocations, oldest first."""
        return list(self._live.values())

    # -- helpers for policies (optional) ------------------------------------------------
    def _replace_live(self, old: Allocation, new: Allocation) -> None:
        """Swap a live allocation for a resized one with the same ``id`` (e.g. a paged KV
        cache growing by a block); keeps the requested-bytes total in step. The subclass
        updates ``_allocated``/``_reserved`` itself."""
        if new.id != old.id or self._live.get(old.id) is not old:
            raise ValueError(f"_replace_live: allocation {old.id} is not live in this pool")
        self._live[old.id] = new
        self._requested += new.requested - old.requested

    # -- hooks for policies -------------------------------------------------------------
    @abstractmethod
    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        """Find room for ``nbytes``; update ``_allocated``/``_reserved``; return the block."""

    @abstractmethod
    def _free(self, allocation: Allocation) -> None:
        """Give the block back; update ``_allocated``/``_reserved``."""

    @abstractmethod
    def largest_free_bytes(self) -> int:
        """Largest single request that would succeed now."""

    def empty_cache(self) -> int:
        """Release memory the pool keeps reserved for reuse (``torch.cuda.empty_cache``);
        returns the bytes released. A pool that keeps none releases 0."""
        return 0


class BlockPool(MemoryPool):
    """A pool of fixed-size blocks of :attr:`block_bytes` that grows an allocation in place by
    whole blocks (a KV cache's block pool). Its free count is exact in blocks.

    - :meth:`append_blocks`: one allocation grows by ``n`` blocks (a new object, same id)
    - :meth:`append_blocks_many`: several at once, all or nothing
    - :meth:`defer_blocks_many`: as ``append_blocks_many`` with the objects rebuilt lazily
    - :meth:`settle`: the allocation with its deferred blocks (the live object)
    """

    exact_free_count = True
    block_bytes: int

    @abstractmethod
    def append_blocks(self, allocation: Allocation, n_more: int) -> Allocation | None: ...

    @abstractmethod
    def append_blocks_many(self, allocations: Sequence[Allocation], counts: Sequence[int]) -> list[Allocation] | None: ...

    @abstractmethod
    def defer_blocks_many(self, allocations: Sequence[Allocation], counts: Sequence[int]) -> bool: ...

    @abstractmethod
    def settle(self, allocation: Allocation) -> Allocation: ...
