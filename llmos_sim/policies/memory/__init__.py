"""Memory-pool policies behind one seam (see :mod:`llmos_sim.policies.memory.base`).

One class per policy, one YAML per policy in ``configs/memory/`` (Hydra is the registry).
"""
from llmos_sim.policies.memory.base import Allocation, BlockPool, MemoryPool, PoolStats
from llmos_sim.policies.memory.buddy import BuddyPool
from llmos_sim.policies.memory.caching import CachingPool
from llmos_sim.policies.memory.contiguous import ContiguousReservationPool
from llmos_sim.policies.memory.fit import BestFitPool, FirstFitPool, FitPool, NextFitPool, WorstFitPool
from llmos_sim.policies.memory.ideal import IdealPool
from llmos_sim.policies.memory.paged import PagedPool
from llmos_sim.policies.memory.slab import SizeClassPool

__all__ = [
    "Allocation", "MemoryPool", "BlockPool", "PoolStats", "IdealPool", "FitPool", "FirstFitPool", "NextFitPool",
    "BestFitPool", "WorstFitPool", "BuddyPool", "SizeClassPool", "CachingPool", "PagedPool",
    "ContiguousReservationPool",
]
