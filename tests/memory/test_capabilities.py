"""Pools declare what they can do; callers read the declaration, never the class name."""
import functools

import pytest

from llmos_sim.policies.memory import (BlockPool, CachingPool, ContiguousReservationPool, FirstFitPool, IdealPool,
                                       MemoryPool, PagedPool)
from llmos_sim.serving.kv import GROW, RESERVE, KVCacheManager, make_pool
from llmos_sim.serving.system import _kv_mode


def test_the_shipped_pools_declare_their_capabilities():
    caps = lambda p: (p.addressed, p.exact_free_count, p.reserves_max_length, p.owns_storage)  # noqa: E731
    assert caps(IdealPool) == (False, True, False, False)
    assert caps(PagedPool) == (True, True, False, False) and issubclass(PagedPool, BlockPool)
    assert caps(ContiguousReservationPool) == (True, False, True, False)
    assert caps(FirstFitPool) == caps(CachingPool) == (True, False, False, False)


class Renamed(IdealPool):
    """A subclass under a name that says nothing: it keeps the ideal pool's capabilities."""


class MyContiguous(PagedPool):
    """A paged pool whose name mentions contiguity: the name must not matter."""


def test_a_renamed_or_subclassed_pool_keeps_its_kv_mode_and_exact_count():
    pool = make_pool(functools.partial(Renamed), 1000, 10)
    assert _kv_mode("auto", pool) == GROW
    kv = KVCacheManager(pool, 1, 10, GROW)
    assert kv._exact and kv._append is None  # counted exactly, not grown in place
    paged = make_pool(functools.partial(MyContiguous), 1000, 10)
    assert _kv_mode("auto", paged) == GROW  # the old rule read "contiguous" in the name as reserve
    kv = KVCacheManager(paged, 1, 10, GROW)
    assert kv._exact and kv._append is not None and kv._defer is not None


def test_a_pool_that_reserves_declares_it():
    class Reserving(FirstFitPool):
        reserves_max_length = True

    assert _kv_mode("auto", Reserving(1000)) == RESERVE
    assert _kv_mode("auto", ContiguousReservationPool(1000, 100)) == RESERVE


def test_a_block_pool_must_grow_in_whole_blocks():
    class Half(BlockPool):  # declares the block-pool contract but implements none of it
        def _allocate(self, nbytes, tag, alloc_id):
            return None

        def _free(self, allocation):
            pass

        def largest_free_bytes(self):
            return 0

    with pytest.raises(TypeError, match="abstract"):
        Half(100)
    assert MemoryPool.addressed and not MemoryPool.exact_free_count
