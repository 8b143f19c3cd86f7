"""Property tests: every memory policy keeps the seam's invariants under random alloc/free."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmos_sim.memtrace.policies import POLICY_NAMES, make_pool
from llmos_sim.policies.memory import (
    BestFitPool, BuddyPool, CachingPool, ContiguousReservationPool, FirstFitPool, FitPool, IdealPool,
    MemoryPool, NextFitPool, PagedPool, SizeClassPool, WorstFitPool,
)

KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Case:
    make: Callable[[], MemoryPool]
    max_request_bytes: int
    address_range: bool = True  # offsets are real positions (everything but ideal)


CASES: dict[str, Case] = {
    "ideal": Case(lambda: IdealPool(1000), 300, address_range=False),
    "first_fit": Case(lambda: FirstFitPool(1000), 300),
    "first_fit_aligned": Case(lambda: FirstFitPool(1003, alignment_bytes=8), 300),
    "next_fit": Case(lambda: NextFitPool(1000), 300),
    "best_fit": Case(lambda: BestFitPool(1000), 300),
    "worst_fit": Case(lambda: WorstFitPool(1000), 300),
    "buddy": Case(lambda: BuddyPool(1024, min_block_bytes=16), 300),
    "buddy_odd_capacity": Case(lambda: BuddyPool(1500, min_block_bytes=16), 300),
    "size_class": Case(lambda: SizeClassPool(16 * KiB, slab_bytes=1 * KiB, min_class_bytes=16,
                                             max_class_bytes=256, classes_per_doubling=2), 3000),
    "caching": Case(lambda: CachingPool(64 * MiB), 24 * MiB),
    "caching_expandable": Case(lambda: CachingPool(64 * MiB, expandable_segments=True), 24 * MiB),
    "paged": Case(lambda: PagedPool(1000, block_bytes=64), 300),
    "contiguous": Case(lambda: ContiguousReservationPool(1000, max_len_bytes=100), 250),
}


def full_largest_free(pool: MemoryPool) -> int:
    """largest_free_bytes of an empty, fully coalesced pool of this kind."""
    if isinstance(pool, FitPool):
        return pool.usable_capacity_bytes
    if isinstance(pool, PagedPool):
        return pool.n_blocks * pool.block_bytes
    if isinstance(pool, BuddyPool):
        units = pool.capacity_bytes // pool.min_block_bytes
        return pool.min_block_bytes << (units.bit_length() - 1)
    if isinstance(pool, SizeClassPool):
        return pool.capacity_bytes // pool.slab_bytes * pool.slab_bytes
    if isinstance(pool, CachingPool):
        return pool._largest_new(pool.capacity_bytes // 512 * 512) if not pool.expandable_segments else \
            pool.capacity_bytes // pool.large_buffer_bytes * pool.large_buffer_bytes
    return pool.capacity_bytes


def check_invariants(pool: MemoryPool, case: Case) -> None:
    live = pool.live()
    s = pool.stats()
    assert s.allocated_bytes == sum(a.nbytes for a in live)
    assert s.requested_bytes == sum(a.requested for a in live)
    assert s.n_live == len(live)
    assert all(a.nbytes >= a.requested for a in live)
    assert s.reserved_bytes >= s.allocated_bytes
    assert s.reserved_bytes <= s.capacity_bytes
    assert 0 <= s.largest_free_bytes <= s.capacity_bytes
    assert 0.0 <= s.external_frag <= 1.0
    if not case.address_range:
        return
    ext = sorted(e for a in live for e in a.extents() if a.nbytes)  # a 0-byte allocation occupies nothing
    prev_end = 0
    for start, end in ext:
        assert start >= prev_end, f"overlap at {start} (previous ended {prev_end})"
        assert end > start
        prev_end = end
    assert prev_end <= pool.capacity_bytes
    if isinstance(pool, FitPool):  # free extents + live blocks tile the usable range
        pieces = sorted(ext + pool.free_extents())
        pos = 0
        for start, end in pieces:
            assert start == pos
            pos = end
        assert pos == pool.usable_capacity_bytes
        free = pool.free_extents()
        assert all(free[i][1] < free[i + 1][0] for i in range(len(free) - 1)), "adjacent free extents not merged"


ops_strategy = st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.integers(0, 10**6)), min_size=1, max_size=60)


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy)
def test_random_alloc_free_keeps_invariants(name: str, ops) -> None:
    case = CASES[name]
    pool = case.make()
    held = []
    for is_alloc, frac, pick in ops:
        if is_alloc or not held:
            n = int(frac * case.max_request_bytes)
            expect = pool.fits(n)
            free_before = pool.capacity_bytes - pool.stats().allocated_bytes
            a = pool.allocate(n, tag=pick)
            assert (a is not None) == expect, f"fits({n}) said {expect}"
            if isinstance(pool, IdealPool) and free_before >= n:
                assert a is not None, "ideal pool failed although total free >= request"
            if a is not None:
                assert a.requested == n
                held.append(a)
        else:
            pool.free(held.pop(pick % len(held)))
        check_invariants(pool, case)
    for a in held:
        pool.free(a)
    if isinstance(pool, CachingPool):
        pool.empty_cache()
    s = pool.stats()
    assert (s.allocated_bytes, s.requested_bytes, s.reserved_bytes, s.n_live) == (0, 0, 0, 0)
    assert s.largest_free_bytes == full_largest_free(pool)
    if isinstance(pool, FitPool):
        assert pool.free_extents() == [(0, pool.usable_capacity_bytes)]


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_config_instantiates_and_serves(name: str) -> None:
    pool = make_pool(name, capacity_bytes=1 << 30)
    a = pool.allocate(3 * MiB, tag="x")
    assert a is not None and a.requested == 3 * MiB and a.tag == "x"
    pool.free(a)
    assert pool.stats().allocated_bytes == 0


def test_freeing_twice_is_an_error() -> None:
    pool = FirstFitPool(100)
    a = pool.allocate(10)
    pool.free(a)
    with pytest.raises(ValueError):
        pool.free(a)


@pytest.mark.parametrize("cls", [FirstFitPool, NextFitPool])
@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.integers(0, 10**6)), min_size=1, max_size=200))
def test_offset_index_with_tiny_chunks_matches_brute_force(cls, ops) -> None:
    """Force chunk splits/merges (LOAD=2) and compare every first-fit choice with a scan."""
    pool = cls(2000)
    pool._index.LOAD = 2  # chunks of <= 4 extents: splits and removals happen constantly
    held = []
    for is_alloc, n, pick in ops:
        if is_alloc or not held:
            free = pool.free_extents()
            if cls is FirstFitPool:
                expect = next((s for s, e in free if e - s >= n), None)
            else:
                r = pool.rover_bytes
                after = [(s, e) for s, e in free if e > r]
                expect = next((s for s, e in after + free if e - s >= n), None)
            a = pool.allocate(n)
            assert (a.offset if a else None) == expect
            if a:
                held.append(a)
        else:
            pool.free(held.pop(pick % len(held)))
    check_invariants(pool, CASES["first_fit"])

