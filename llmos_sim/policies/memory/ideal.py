"""The seed's ideal pool: ``M_u* = min(M, M_u + M_d)``, no fragmentation, no rounding."""
from __future__ import annotations

from typing import Hashable

from llmos_sim.formulas import pool_usage_bytes
from llmos_sim.policies.memory.base import Allocation, MemoryPool


class IdealPool(MemoryPool):
    """Fits whenever total free >= request. Offsets are a running counter: the ideal pool has
    no address space to fragment, so offsets are labels, not positions."""

    addressed = False
    exact_free_count = True

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        used = self._allocated
        after = pool_usage_bytes(self.capacity_bytes, used, nbytes)
        if after - used < nbytes:  # the formula capped it: the request does not fit whole
            return None
        self._allocated = after
        self._reserved = after
        return Allocation(offset=used, nbytes=nbytes, requested=nbytes, tag=tag, id=alloc_id)

    def _free(self, allocation: Allocation) -> None:
        self._allocated -= allocation.nbytes
        self._reserved = self._allocated

    def largest_free_bytes(self) -> int:
        return self.capacity_bytes - self._allocated
