"""``CachingPool.fits`` keeps its answers only while the pool is unchanged: every allocation,
free, failed allocation and ``empty_cache`` makes it ask again (and it agrees with a real try)."""
import copy

import pytest

from llmos_sim.policies.memory.caching import CachingPool

MiB = 1 << 20


@pytest.mark.parametrize("expandable", [False, True])
def test_fits_follows_every_change_of_the_pool(expandable):
    pool = CachingPool(64 * MiB, expandable_segments=expandable)
    assert pool.fits(40 * MiB) and pool.fits(40 * MiB)          # asked twice, same answer
    a = pool.allocate(40 * MiB)
    assert a is not None
    assert not pool.fits(40 * MiB)                              # the allocation changed the pool
    assert pool.allocate(40 * MiB) is None                      # a failed try agrees
    pool.free(a)
    assert pool.fits(40 * MiB)                                  # the free changed it back
    pool.empty_cache()
    assert pool.fits(40 * MiB)
    for size in (1, 3 * MiB, 20 * MiB, 63 * MiB, 65 * MiB):     # agrees with a real allocation
        assert pool.fits(size) == (copy.deepcopy(pool).allocate(size) is not None)
