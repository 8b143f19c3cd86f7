"""Exact, hand-computed sequences for each memory policy."""
from __future__ import annotations

import random

import pytest

from llmos_sim.policies.memory import (
    BestFitPool, BuddyPool, CachingPool, ContiguousReservationPool, FirstFitPool, NextFitPool,
    PagedPool, SizeClassPool, WorstFitPool,
)

KiB, MiB = 1 << 10, 1 << 20


# -- fit family ------------------------------------------------------------------------------
def test_split_leaves_remainder_after_block() -> None:
    pool = FirstFitPool(100)
    a = pool.allocate(30)
    assert (a.offset, a.nbytes) == (0, 30)
    assert pool.free_extents() == [(30, 100)]
    assert pool.largest_free_bytes() == 70


def test_coalesce_left_right_both() -> None:
    pool = FirstFitPool(100)
    a, b, c, d = (pool.allocate(10) for _ in range(4))
    assert [x.offset for x in (a, b, c, d)] == [0, 10, 20, 30]
    pool.free(b)
    assert pool.free_extents() == [(10, 20), (40, 100)]
    pool.free(a)  # merges with the free extent on its right
    assert pool.free_extents() == [(0, 20), (40, 100)]
    pool.free(c)  # merges with the free extent on its left
    assert pool.free_extents() == [(0, 30), (40, 100)]
    pool.free(d)  # merges on both sides
    assert pool.free_extents() == [(0, 100)]


def _holes(cls):
    """Free extents of sizes 30 @0, 10 @35, 50 @50 (two 5-byte spacers live)."""
    pool = cls(100)
    a = pool.allocate(30)
    pool.allocate(5)
    b = pool.allocate(10)
    pool.allocate(5)
    pool.free(a)
    pool.free(b)
    assert pool.free_extents() == [(0, 30), (35, 45), (50, 100)]
    return pool


@pytest.mark.parametrize("cls, where", [(FirstFitPool, 0), (BestFitPool, 35), (WorstFitPool, 50), (NextFitPool, 50)])
def test_choice_of_extent(cls, where) -> None:
    assert _holes(cls).allocate(8).offset == where


def test_best_fit_ties_break_by_lowest_address() -> None:
    pool = BestFitPool(100)
    a, _, b, _ = pool.allocate(10), pool.allocate(5), pool.allocate(10), pool.allocate(5)
    pool.free(b)
    pool.free(a)
    assert pool.allocate(10).offset == 0


def test_next_fit_rover_moves_and_wraps() -> None:
    pool = NextFitPool(100)
    a, b, c = pool.allocate(10), pool.allocate(10), pool.allocate(10)
    pool.free(a)
    assert pool.rover_bytes == 30
    x = pool.allocate(5)  # first-fit would take 0; next-fit continues at the rover
    assert x.offset == 30 and pool.rover_bytes == 35
    y = pool.allocate(65)  # takes the rest of the range
    assert y.offset == 35 and pool.rover_bytes == 100
    z = pool.allocate(10)  # nothing after the rover: wraps around to 0
    assert z.offset == 0


def test_alignment_rounds_and_skips_tail() -> None:
    pool = FirstFitPool(100, alignment_bytes=8)
    assert pool.usable_capacity_bytes == 96
    a = pool.allocate(1)
    assert (a.nbytes, a.requested) == (8, 1)
    assert pool.stats().internal_frag_bytes == 7
    assert pool.allocate(88) is not None and pool.allocate(1) is None


def test_fit_failure_with_enough_total_free_is_external_fragmentation() -> None:
    pool = _holes(FirstFitPool)
    assert pool.allocate(60) is None
    s = pool.stats()
    assert s.n_failures == 1 and s.free_bytes == 90 and s.largest_free_bytes == 50
    assert s.external_frag == pytest.approx(1 - 50 / 90)


# -- contiguous reservation ---------------------------------------------------------------------
def test_contiguous_reservation_waste() -> None:
    pool = ContiguousReservationPool(100, max_len_bytes=25)
    a = pool.allocate(1)
    assert (a.offset, a.nbytes, a.requested) == (0, 25, 1)
    assert pool.stats().internal_frag_bytes == 24
    big = pool.allocate(30)  # longer than max_len: two whole slots
    assert (big.offset, big.nbytes) == (25, 50)
    assert pool.allocate(25).offset == 75
    assert pool.allocate(1) is None
    assert pool.stats().requested_bytes == 56 and pool.stats().allocated_bytes == 100


# -- buddy ------------------------------------------------------------------------------------
def test_buddy_split_and_merge() -> None:
    pool = BuddyPool(1024, min_block_bytes=64)
    a = pool.allocate(100)  # order 1 (128 B): 1024 -> 512+512 -> 256+256 -> 128+128
    assert (a.offset, a.nbytes) == (0, 128)
    assert pool._lists[1] == [128] and pool._lists[2] == [256] and pool._lists[3] == [512]
    b = pool.allocate(64)  # splits the free 128 @128
    assert (b.offset, b.nbytes) == (128, 64)
    assert pool._lists[0] == [192] and pool._lists[1] == []
    c = pool.allocate(64)
    assert c.offset == 192
    pool.free(b)  # buddy 192 is live: no merge
    assert pool._lists[0] == [128]
    pool.free(c)  # merges 128+192 -> 128@128, not further while a is live
    assert pool._lists[0] == [] and pool._lists[1] == [128]
    pool.free(a)  # merges all the way up
    assert pool.largest_free_bytes() == 1024 and pool._lists[4] == [0]


def test_buddy_capacity_not_a_power_of_two() -> None:
    pool = BuddyPool(1536 + 10, min_block_bytes=64)  # 1024@0 + 512@1024, 10 B unused
    assert pool.largest_free_bytes() == 1024
    a = pool.allocate(600)
    assert (a.offset, a.nbytes) == (0, 1024)
    assert pool.largest_free_bytes() == 512 and pool.allocate(513) is None
    pool.free(a)
    assert pool.largest_free_bytes() == 1024  # the two top-level blocks never merge


# -- size classes -----------------------------------------------------------------------------
def test_size_class_rounding_and_slabs() -> None:
    pool = SizeClassPool(8 * MiB, slab_bytes=2 * MiB, min_class_bytes=256, max_class_bytes=256 * KiB,
                         classes_per_doubling=4)
    assert pool.classes_bytes[:6] == (256, 320, 384, 448, 512, 640)
    assert [pool.class_for(n) for n in (0, 1, 256, 257, 448, 449)] == [256, 256, 256, 320, 448, 512]
    assert pool.class_for(256 * KiB + 1) is None
    a, b = pool.allocate(300), pool.allocate(310)
    assert (a.offset, a.nbytes, b.offset) == (0, 320, 320)  # same slab, consecutive slots
    c = pool.allocate(1000)  # another class: a new slab (page)
    assert c.offset == 2 * MiB and c.nbytes == 1024
    s = pool.stats()
    assert s.reserved_bytes == 4 * MiB and s.allocated_bytes == 320 + 320 + 1024
    big = pool.allocate(3 * MiB)  # large: two whole pages
    assert (big.offset, big.nbytes) == (4 * MiB, 4 * MiB)
    assert pool.allocate(1) is None  # class 256 B has no slab and no page is free
    assert pool.fits(300) and pool.allocate(300) is not None  # a free slot in the 320 B slab
    assert not pool.fits(2 * KiB)
    for x in (a, b, c, big):
        pool.free(x)
    assert pool.stats().reserved_bytes == 2 * MiB  # the 320 B slab still holds the last object


# -- caching allocator ------------------------------------------------------------------------
def test_caching_small_requests_share_a_2mib_segment() -> None:
    pool = CachingPool(64 * MiB)
    a = pool.allocate(1000)  # rounded to 1024 B, small pool, new 2 MiB segment
    assert (a.offset, a.nbytes) == (0, 1024)
    b = pool.allocate(1)
    assert (b.offset, b.nbytes) == (1024, 512)
    s = pool.stats()
    assert (s.reserved_bytes, s.allocated_bytes, pool.n_segments) == (2 * MiB, 1536, 1)


def test_caching_5mib_request_gets_20mib_segment_and_split() -> None:
    pool = CachingPool(64 * MiB)
    a = pool.allocate(5 * MiB)
    assert (a.offset, a.nbytes) == (0, 5 * MiB)  # remainder 15 MiB > 1 MiB: split
    assert pool.stats().reserved_bytes == 20 * MiB
    b = pool.allocate(5 * MiB)  # best fit: the cached 15 MiB remainder, no new segment
    assert b.offset == 5 * MiB and pool.stats().reserved_bytes == 20 * MiB


def test_caching_large_requests_round_to_2mib_and_unsplit_remainder() -> None:
    pool = CachingPool(128 * MiB)
    a = pool.allocate(12 * MiB + 1)  # >= 10 MiB: segment = round up to 2 MiB = 14 MiB
    assert pool.stats().reserved_bytes == 14 * MiB
    assert a.nbytes == 12 * MiB + 512  # rounded to 512 B; remainder 2 MiB - 512 B > 1 MiB: split
    pool2 = CachingPool(128 * MiB)
    c = pool2.allocate(19 * MiB + 512 * KiB)  # segment 20 MiB, remainder 0.5 MiB <= 1 MiB: not split
    assert c.nbytes == 20 * MiB and c.requested == 19 * MiB + 512 * KiB
    assert pool2.stats().internal_frag_bytes == 512 * KiB


def test_caching_no_merge_across_segments() -> None:
    pool = CachingPool(64 * MiB)
    blocks = [pool.allocate(1 * MiB) for _ in range(3)]  # two 2 MiB segments, adjacent on device
    assert [b.offset for b in blocks] == [0, 1 * MiB, 2 * MiB] and pool.n_segments == 2
    for b in blocks:
        pool.free(b)
    assert pool.cached_free_blocks() == [(0, 2 * MiB, True), (2 * MiB, 4 * MiB, True)]
    assert pool.stats().reserved_bytes == 4 * MiB  # freed blocks stay cached


def test_caching_frees_cache_and_retries() -> None:
    pool = CachingPool(40 * MiB)
    a, b = pool.allocate(5 * MiB), pool.allocate(5 * MiB)  # both in one 20 MiB segment
    pool.free(a)
    pool.free(b)
    assert pool.stats().reserved_bytes == 20 * MiB
    c = pool.allocate(30 * MiB)  # device has 20 MiB left: release the cached segment, retry
    assert c is not None and c.offset == 0
    assert pool.stats().reserved_bytes == 30 * MiB and pool.n_segments == 1
    assert pool.allocate(30 * MiB) is None and pool.stats().n_failures == 1


def test_caching_expandable_segment_grows_in_place() -> None:
    pool = CachingPool(100 * MiB, expandable_segments=True)
    a = pool.allocate(5 * MiB)
    assert pool.stats().reserved_bytes == 20 * MiB
    b = pool.allocate(30 * MiB)  # extends the trailing 15 MiB free block by one 20 MiB page
    assert b.offset == 5 * MiB and pool.stats().reserved_bytes == 40 * MiB
    s = pool.allocate(1000)  # small pool grows down from the top
    assert s.offset == 100 * MiB - 2 * MiB
    pool.free(a)
    pool.free(b)  # merges across the page boundary: one 40 MiB free block
    assert (0, 40 * MiB, False) in pool.cached_free_blocks()
    assert pool.empty_cache() == 40 * MiB and pool.stats().reserved_bytes == 2 * MiB


# -- paged ------------------------------------------------------------------------------------
def test_paged_block_counts_at_boundaries() -> None:
    pool = PagedPool(100, block_bytes=16)  # 6 blocks, 4 B tail unused
    assert pool.n_blocks == 6
    got = [len(pool.allocate(n).blocks) for n in (0, 1, 16, 17)]
    assert got == [1, 1, 1, 2]
    assert pool.n_free_blocks == 1 and pool.allocate(17) is None and pool.allocate(16) is not None


def test_paged_lowest_blocks_first_and_lifo_reuse() -> None:
    pool = PagedPool(64, block_bytes=16)
    a = pool.allocate(32)
    assert a.blocks == (0, 16) and a.offset == 0 and a.extents() == [(0, 16), (16, 32)]
    b = pool.allocate(16)
    pool.free(a)
    c = pool.allocate(16)
    assert b.blocks == (32,) and c.blocks == (0,)


def test_paged_resize_grow_and_shrink_keep_id() -> None:
    pool = PagedPool(160, block_bytes=16)  # 10 blocks
    a = pool.allocate(10)
    g = pool.resize(a, 40)  # 1 -> 3 blocks, same id, old blocks first
    assert g.id == a.id and len(g.blocks) == 3 and g.blocks[0] == a.blocks[0]
    assert pool.stats().requested_bytes == 40 and pool.stats().allocated_bytes == 48
    assert pool.resize(g, 32) is not None  # same block count
    with pytest.raises(ValueError):
        pool.resize(a, 50)  # the old object is no longer live
    g2 = pool.live()[0]
    assert pool.resize(g2, 1000) is None and pool.live()[0] is g2  # too big: unchanged
    sh = pool.resize(g2, 1)
    assert sh.blocks == g2.blocks[:1] and pool.n_free_blocks == 9
    ap = pool.append_blocks(sh, 2)
    assert len(ap.blocks) == 3 and ap.requested == 48
    pool.free(ap)
    assert pool.n_free_blocks == 10 and pool.stats().requested_bytes == 0


def test_paged_allocate_blocks() -> None:
    pool = PagedPool(64, block_bytes=16)
    a = pool.allocate_blocks(3, requested_bytes=40)
    assert len(a.blocks) == 3 and a.requested == 40
    assert pool.allocate_blocks(2) is None and pool.stats().n_failures == 1


def test_paged_blocks_listed_when_needed_are_those_of_a_full_list() -> None:
    # a pool lists its never-used blocks only as they are needed (512 at a time): the same
    # blocks, in the same order, with the same free counts and failures as a pool that listed
    # all of them at the start, through every call that takes blocks, across listing edges
    rng = random.Random(3)
    lazy, full = PagedPool(1500 * 16, 16), PagedPool(1500 * 16, 16)
    full._unfold(full.n_blocks)
    assert full._fresh == full.n_blocks and lazy._free_stack == [] and lazy.n_free_blocks == 1500
    held: list[tuple] = []  # (lazy allocation, full allocation)
    listed = set()  # the never-used blocks' edge after each call
    for step in range(600):
        op = rng.choice(["alloc", "alloc", "grow", "defer", "resize", "free"])
        if op == "alloc" or not held:
            n = rng.choice([1, 2, 7, 40, 300, 700])
            a, b = lazy.allocate_blocks(n), full.allocate_blocks(n)
            assert (a and a.blocks) == (b and b.blocks)
        elif op in ("grow", "defer"):
            picks = rng.sample(range(len(held)), min(len(held), rng.randint(1, 4)))
            counts = [rng.choice([0, 1, 1, 3, 120]) for _ in picks]
            xs, ys = [held[i][0] for i in picks], [held[i][1] for i in picks]
            if op == "grow":
                got, want = lazy.append_blocks_many(xs, counts), full.append_blocks_many(ys, counts)
                assert (got and [x.blocks for x in got]) == (want and [y.blocks for y in want])
            else:
                assert lazy.defer_blocks_many(xs, counts, check=step % 2 == 0) == full.defer_blocks_many(ys, counts)
        elif op == "resize":
            i = rng.randrange(len(held))
            nbytes = rng.choice([1, 16 * 5, 16 * 200, 16 * 900])
            x, y = lazy.resize(held[i][0], nbytes), full.resize(held[i][1], nbytes)
            assert (x and x.blocks) == (y and y.blocks)
        else:
            a, b = held.pop(rng.randrange(len(held)))
            lazy.free(a)
            full.free(b)
        assert lazy.n_free_blocks == full.n_free_blocks and lazy.stats() == full.stats()
        assert lazy.largest_free_bytes() == full.largest_free_bytes()
        if op != "defer":  # (a call that settles deferred blocks replaces the objects, also when it fails)
            held = list(zip(lazy.live(), full.live()))
        listed.add(lazy._fresh)
    assert [a.blocks for a in lazy.live()] == [b.blocks for b in full.live()]
    assert len(listed) >= 3  # (blocks were listed in several steps)


def test_caching_expandable_splits_large_blocks_down_to_512b() -> None:
    """With expandable segments PyTorch splits any remainder >= 512 B, in the large pool too:
    19 MiB then 20.5 MiB reserve 40 MiB (the 1 MiB left after the first grows), not 60."""
    pool = CachingPool(100 * MiB, expandable_segments=True)
    a = pool.allocate(19 * MiB)
    assert (a.offset, a.nbytes) == (0, 19 * MiB)  # remainder 1 MiB: split (it is > 1 MiB only without)
    assert pool.cached_free_blocks() == [(19 * MiB, 20 * MiB, False)]
    b = pool.allocate(20 * MiB + 512 * KiB)
    assert (b.offset, b.nbytes) == (19 * MiB, 20 * MiB + 512 * KiB)
    s = pool.stats()
    assert (s.reserved_bytes, s.allocated_bytes) == (40 * MiB, 39 * MiB + 512 * KiB)
    c = pool.allocate(20 * MiB + 512 * KiB - 512)  # the 0.5 MiB left + one 20 MiB page, less 512 B: split
    assert (c.offset, c.nbytes) == (39 * MiB + 512 * KiB, 20 * MiB + 512 * KiB - 512)
    assert pool.cached_free_blocks() == [(60 * MiB - 512, 60 * MiB, False)]
    assert pool.stats().reserved_bytes == 60 * MiB


def test_caching_max_split_size_oversize_rules() -> None:
    """``max_split_size``: oversize requests' blocks are never split, small requests never take
    an oversize block, and an oversize block serves only requests within 20 MiB of its size."""
    pool = CachingPool(512 * MiB, max_split_size_bytes=64 * MiB)
    big = pool.allocate(100 * MiB)  # oversize: a 100 MiB segment (round to 2 MiB), not split
    assert (big.offset, big.nbytes, pool.stats().reserved_bytes) == (0, 100 * MiB, 100 * MiB)
    pool.free(big)
    small = pool.allocate(30 * MiB)  # below the limit: refuses the cached 100 MiB block
    assert small.offset == 100 * MiB and pool.stats().reserved_bytes == 130 * MiB
    near = pool.allocate(81 * MiB)  # oversize, the 100 MiB block is within 20 MiB: taken whole
    assert (near.offset, near.nbytes) == (0, 100 * MiB)
    pool.free(near)
    far = pool.allocate(80 * MiB)  # 100 >= 80 + 20: refused, a new 80 MiB segment
    assert (far.offset, far.nbytes) == (130 * MiB, 80 * MiB)
    assert pool.stats().reserved_bytes == 210 * MiB
    # below the limit, blocks still split as without it (remainder > 1 MiB)
    pool2 = CachingPool(512 * MiB, max_split_size_bytes=64 * MiB)
    x = pool2.allocate(40 * MiB)
    pool2.free(x)
    y = pool2.allocate(10 * MiB)
    assert (y.offset, y.nbytes) == (0, 10 * MiB) and pool2.cached_free_blocks() == [(10 * MiB, 40 * MiB, False)]


def test_caching_max_split_size_must_exceed_20mib() -> None:
    with pytest.raises(ValueError, match="max_split_size_bytes"):
        CachingPool(512 * MiB, max_split_size_bytes=20 * MiB)


@pytest.mark.parametrize("expandable", [False, True])
def test_caching_zero_byte_request_is_a_no_op(expandable) -> None:
    pool = CachingPool(64 * MiB, expandable_segments=expandable)
    z = pool.allocate(0)
    assert (z.offset, z.nbytes, z.requested) == (0, 0, 0)
    s = pool.stats()
    assert (s.reserved_bytes, s.allocated_bytes, s.n_live, pool.n_segments) == (0, 0, 1, 0)
    a = pool.allocate(512)
    pool.free(z)
    assert pool.stats().allocated_bytes == 512 and pool.stats().reserved_bytes == 2 * MiB
    pool.free(a)
    assert pool.stats().allocated_bytes == 0
