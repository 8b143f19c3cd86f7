"""The KV cache of one serving replica, on top of any :class:`~llmos_sim.policies.memory.base.MemoryPool`.

Tokens map to blocks of ``block_tokens`` tokens, blocks to bytes (``block_tokens ·
bytes_per_token``). Two ways to hold a sequence's cache:

- ``grow`` (paged, vLLM): a sequence holds ``ceil(tokens / block_tokens)`` blocks; more are
  allocated as its tokens grow (16 tokens → 1 block, 17 → 2).
- ``reserve`` (contiguous, pre-vLLM serving): at admission a sequence reserves its maximum
  length (``reserve_tokens``, or its own prompt + output when that is 0) in one allocation and
  never grows.

Every block goes through the pool (``allocate`` / ``free``), so the bytes a policy holds, its
rounding waste and its failures are the pool's own numbers. The manager keeps counters the
batching policies read (free blocks) so they need not ask the pool on the hot path; for
fragmenting pools an allocation can still fail when the counter says it fits, and callers
handle that (``grow`` returns False).

Prefix caching (optional, vLLM's ``enable_prefix_caching``), for one case only: a sequence
preempted by recompute leaves its full blocks cached while they sit in the free queue; when
it is admitted again, the leading blocks not yet reused are hits and need no recompute. The
free queue is modelled by two counters: blocks pushed (freed; a sequence frees its tail block
first, as vLLM does) and blocks popped (allocated, from the head). A freed block is reused
once the pops pass its push position. Blocks taken back from the middle of the queue (a
preempted sequence's hit, vLLM's ``touch``) leave it: every block queued after them moves up
as many places, so the queue's length stays the free count. As in vLLM's scheduler, a
returning sequence's hit is what is left once the blocks taken earlier in the same iteration
(the running sequences' growth, the admissions before it) have been popped
(:meth:`requeued_tokens`).

Prefix caching across requests (the same switch), for requests that carry prefix block hashes
(:attr:`Request.prefix_hashes`, e.g. the Mooncake traces): the cache works at the granularity
of the request's hash blocks. A hash block of ``H`` tokens (512 in the Mooncake traces) spans
``H / block_tokens`` KV blocks (32 with 16-token blocks; ``block_tokens`` must divide ``H``),
held as one *unit*: its own pool allocations, a key (the hash id), a reference count. A
sequence's KV is then ``[unit 0, unit 1, ..., unit m-1 | private blocks]``: the units cover its
prompt's whole hash blocks (a partial last hash block, and the generated tokens, are private).
Growth fills the units first, block by block as the batching policy asks (so the block counts
policies compute are unchanged), then the private allocation.

- A unit becomes findable (cached) when its sequence has computed all its tokens; a second
  sequence that computed the same hash block meanwhile keeps its copy private.
- At admission a sequence takes the longest run of cached units from its first hash block
  (at most ``known - 1`` tokens: vLLM always computes the last token): a hit. It references
  them (the count goes up) and starts with ``computed`` = the hit tokens, so exactly those
  tokens' prefill is skipped.
- At release a cached unit's count goes down; at zero it stays in GPU memory, *evictable*, on
  an LRU list (the tail unit of a sequence first, as vLLM frees tail blocks first). Other
  units are freed.
- Evictable units count as free blocks (:attr:`free_blocks`, as vLLM counts cached blocks in
  its free queue); an allocation that does not fit in the pool evicts LRU units until it does.
- A hit on an evictable unit takes its blocks out of the free count; a hit on a unit other
  sequences hold takes nothing (``shared`` blocks, which admission does not count).

Host-memory tier (optional, :class:`HostTier`, ``serving.host_kv_bytes``): a second pool of
host memory behind the GPU's, of bounded capacity, for swapped-out sequences and evicted prefix
units (vLLM's CPU offload, Mooncake's DRAM pool). A unit evicted from the GPU is copied to host
memory (LRU there too; swapped sequences take precedence and evict cached units); a hit may then
continue on host units, which are copied back into new GPU blocks at admission. Every copy is
priced: its bytes join the iteration's host-link traffic (``BatchShape.swap_bytes``, at the
GPU's ``host_bw_bytes_s``). A swap preemption that does not fit in host memory becomes a
recompute preemption. Without the tier, swap space is unlimited and evicted units are dropped.
"""
from __future__ import annotations

from typing import Callable, Hashable, Sequence

from llmos_sim.policies.memory.base import Allocation, BlockPool, MemoryPool
from llmos_sim.serving.view import GROW, RESERVE, KVMode, block_growth, blocks_for



def make_pool(factory: Callable[..., MemoryPool], capacity_bytes: int, block_bytes: int,
              slot_bytes: int | None = None) -> MemoryPool:
    """Call a pool factory with ``capacity_bytes``, sized for this KV cache by what the pool
    class declares: a :class:`~llmos_sim.policies.memory.base.BlockPool` gets ``block_bytes``
    (one KV block), a pool that declares ``reserves_max_length`` gets ``max_len_bytes`` =
    ``slot_bytes`` (the reservation; one block when None), overriding the config's generic
    sizes. Any other factory (a pool class, or a callable that builds pools) gets the capacity."""
    target = getattr(factory, "func", factory)
    kw: dict = {"capacity_bytes": capacity_bytes}
    if isinstance(target, type) and issubclass(target, MemoryPool):
        if issubclass(target, BlockPool):
            kw["block_bytes"] = block_bytes
        if target.reserves_max_length:
            kw["max_len_bytes"] = slot_bytes or block_bytes
    return factory(**kw)


class Unit:
    """One hash block's KV in the prefix cache: ``n`` blocks in ``allocs`` (pool allocations
    of ``nbytes`` bytes in all), ``ref`` sequences using it; ``cached`` when findable by
    ``key`` (else private to its sequence: not complete yet, or a duplicate of a cached one)."""

    __slots__ = ("key", "allocs", "n", "nbytes", "ref", "cached")

    def __init__(self, key: int) -> None:
        self.key = key
        self.allocs: list[Allocation] = []
        self.n = 0
        self.nbytes = 0
        self.ref = 1
        self.cached = False

    def __repr__(self) -> str:
        return f"Unit(key={self.key!r}, n={self.n}, ref={self.ref}, cached={self.cached})"


class HostTier:
    """Host memory behind one replica's KV cache: swapped sequences and evicted prefix units,
    accounted in a :class:`MemoryPool` of ``capacity_bytes`` (any pool; an
    :class:`~llmos_sim.policies.memory.ideal.IdealPool` by default). Cached units are evicted
    LRU to make room; swapped sequences are never evicted (a swap that does not fit is refused)."""

    def __init__(self, capacity_bytes: int, pool: MemoryPool | None = None) -> None:
        if pool is None:
            from llmos_sim.policies.memory.ideal import IdealPool
            pool = IdealPool(int(capacity_bytes))
        self.pool = pool
        self._units: dict[int, Allocation] = {}  # key -> its copy, least recently used first
        self._swapped: dict[Hashable, Allocation] = {}
        self.n_dropped_units = 0  #: units evicted from host memory too (gone)

    def __contains__(self, key: int) -> bool:
        return key in self._units

    def _room(self, nbytes: int) -> Allocation | None:
        while True:
            a = self.pool.allocate(nbytes)
            if a is not None or not self._units:
                return a
            k = next(iter(self._units))
            self.pool.free(self._units.pop(k))
            self.n_dropped_units += 1

    def _keep(self, into: dict, key: Hashable, nbytes: int) -> bool:
        """Allocate ``nbytes`` (evicting cached units) and file it under ``key`` in ``into``;
        False if they do not fit."""
        a = self._room(nbytes)
        if a is None:
            return False
        into[key] = a
        return True

    def put_unit(self, key: int, nbytes: int) -> bool:
        """Keep a copy of an evicted unit (most recently used); True when bytes were copied.
        A unit the host already holds (the GPU recomputed it after an earlier offload: equal
        hashes are equal KV) keeps its one copy, made most recently used, and nothing is
        copied; False too when it cannot fit at all."""
        old = self._units.pop(key, None)
        if old is not None:
            self._units[key] = old
            return False
        return self._keep(self._units, key, nbytes)

    def take_unit(self, key: int) -> int:
        """The unit goes back to the GPU: its host copy is freed; returns its bytes."""
        a = self._units.pop(key)
        self.pool.free(a)
        return a.requested

    def swap_out(self, seq: Hashable, nbytes: int) -> bool:
        """Hold a swapped sequence's ``nbytes`` (evicting cached units); False if they do not fit."""
        return self._keep(self._swapped, seq, nbytes)

    def swap_in(self, seq: Hashable) -> None:
        """The sequence's cache went back to the GPU (or it is gone): free its host copy."""
        a = self._swapped.pop(seq, None)
        if a is not None:
            self.pool.free(a)

    @property
    def used_bytes(self) -> int:
        return self.pool.stats().allocated_bytes


class KVCacheManager:
    """Token → block → byte accounting for one replica, backed by ``pool``.

    Invariant: blocks not held by any sequence + Σ held blocks == ``total_blocks``.
    """

    def __init__(self, pool: MemoryPool, bytes_per_token: int, block_tokens: int = 16, mode: str = GROW,
                 reserve_tokens: int = 0, prefix_caching: bool = False, host: HostTier | None = None) -> None:
        if block_tokens < 1 or bytes_per_token < 1:
            raise ValueError("KVCacheManager: block_tokens and bytes_per_token must be >= 1")
        if mode not in (GROW, RESERVE):
            raise ValueError(f"KVCacheManager: mode must be 'grow' or 'reserve', got {mode!r}")
        mode = KVMode(mode)
        self.pool = pool
        self.bytes_per_token = int(bytes_per_token)
        self.block_tokens = int(block_tokens)
        self.block_bytes = self.block_tokens * self.bytes_per_token
        self.mode = mode
        self.reserve_tokens = int(reserve_tokens)
        self.total_blocks = pool.capacity_bytes // self.block_bytes
        self._free = self.total_blocks
        # a paged pool grows one allocation per sequence in place (O(1) per block)
        blocks = mode == GROW and isinstance(pool, BlockPool)
        self._append = pool.append_blocks if blocks else None
        self._append_many = pool.append_blocks_many if blocks else None
        # ... and, with blocks of this size (so nothing is rounded: a sequence's bytes are its
        # blocks'), can defer the new blocks' bookkeeping until the allocation is freed (counts
        # and free blocks stay exact; see :meth:`BlockPool.defer_blocks_many`)
        self._defer = pool.defer_blocks_many if blocks and pool.block_bytes == self.block_bytes else None
        self._exact = mode == GROW and pool.exact_free_count
        self.used_bytes = 0  #: bytes the pool set aside for live KV (after its rounding)
        self._held: dict[Hashable, list[Allocation]] = {}
        self._nblocks: dict[Hashable, int] = {}
        self.prefix_caching = bool(prefix_caching) and mode == GROW
        self._pushes = self.total_blocks  # free-queue positions handed out (all blocks start free)
        self._pops = 0  # blocks taken from the queue's head
        self._cached: dict[Hashable, tuple[int, int, int]] = {}  # seq -> (push position, blocks, full blocks)
        self._hit: dict[Hashable, int] = {}  # seq -> cached blocks it is taking back (not pops)
        self._hashes_seen = False  # a sequence with prefix hashes registered (check(): the queue's length)
        # -- prefix caching across requests (hash units, see the module docstring) --
        self._table: dict[int, Unit] = {}  # key -> cached unit
        self._lru: dict[int, Unit] = {}  # key -> evictable cached unit (ref 0), least recently used first
        self._evictable = 0  # blocks of the units in _lru (counted in _free)
        self.cached_bytes = 0  #: bytes of evictable cached units (in the pool, not in used_bytes)
        self._hseq: dict[Hashable, tuple] = {}  # seq -> (keys of its whole hash blocks, blocks per unit, H)
        self._units: dict[Hashable, list[Unit]] = {}  # seq -> the units it holds, in token order
        self._hblocks: dict[Hashable, int] = {}  # seq -> blocks allocated in its units
        self._hfill: set = set()  # seqs with unit blocks still to allocate (they grow one by one)
        self._hdone: dict[Hashable, int] = {}  # seq -> units complete so far (absent once all are)
        self.n_evicted_units = 0  #: units evicted from the cache so far
        self.host = host  #: the host-memory tier (None: unlimited swap space, evicted units dropped)
        self.transfer_bytes = 0  #: host-link bytes of offloads and reloads not yet charged to an iteration
        self.n_host_hits = 0  #: units taken back from host memory
        self.last_host_units = 0  #: of them, by the last :meth:`take_prefix`
        #: ``(seq, cache_tokens) -> blocks freed now``, or None: what :meth:`release` does
        #: instead of freeing at once; it frees through :meth:`free_now`, now or later
        #: (disaggregation: a prefill replica keeps a request's KV until its transfer has
        #: ended; a decode replica starts the transfers waiting for its blocks as they free)
        self.release_hook: Callable[[Hashable, int], int] | None = None

    # -- pure queries (policies use these through the view) ----------------------------
    @property
    def free_blocks(self) -> int:
        """Blocks a sequence could get now. Exact for paged and ideal pools; for other pools
        also bounded by the largest free extent (a fragmenting pool may refuse less)."""
        if self._exact:
            return self._free
        # (evictable cached units may free a larger extent: counted as if they did; an
        # allocation that still does not fit is refused, and callers handle refusals)
        return min(self._free, self.pool.largest_free_bytes() // self.block_bytes + self._evictable)

    @property
    def growth_in_one_call(self) -> bool:
        """True when :meth:`grow_many` is never refused while the blocks fit (the count is
        exact) and one call with several lists of growth, one after the other, is the same as
        one call per list (the same blocks, in the same order): a paged pool of this block size."""
        return self._defer is not None

    @property
    def unheld_blocks(self) -> int:
        """Blocks no sequence holds (a count: a fragmenting pool may still refuse one
        allocation of fewer, see :attr:`free_blocks`)."""
        return self._free

    def blocks_for(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens: ``ceil(tokens / block_tokens)``."""
        return blocks_for(int(tokens), self.block_tokens)

    def growth(self, computed, tokens, blocks) -> tuple[list[int], list[int]]:
        """``(rows, need)``: the rows that cross into new blocks (:func:`~llmos_sim.serving.view.block_growth`)."""
        return block_growth(computed, tokens, blocks, self.block_tokens)

    def max_blocks(self, prompt_tokens: int, output_tokens: int) -> int:
        """Blocks the sequence holds at its largest (its last token is never cached)."""
        if self.mode == RESERVE:
            return self.blocks_for(self.reserve_tokens or prompt_tokens + output_tokens)
        return self.blocks_for(prompt_tokens + output_tokens - 1)

    def can_ever_fit(self, prompt_tokens: int, output_tokens: int) -> bool:
        """Could this request finish on an empty cache?"""
        if self._over_reservation(prompt_tokens, output_tokens):
            return False
        return self.max_blocks(prompt_tokens, output_tokens) <= self.total_blocks

    def _over_reservation(self, prompt_tokens: int, output_tokens: int) -> bool:
        """With a fixed reservation per sequence: does the sequence at its largest exceed it?"""
        return bool(self.mode == RESERVE and self.reserve_tokens
                    and prompt_tokens + output_tokens - 1 > self.reserve_tokens)

    def too_small(self, prompt_tokens: int, output_tokens: int, replica: int) -> str:
        """Why a request :meth:`can_ever_fit` refuses never fits on replica ``replica`` (this
        cache's), with the numbers (a failure's reason): the blocks it needs at its largest
        against all of them, or, with a fixed reservation per sequence, its largest size
        against that reservation."""
        if self._over_reservation(prompt_tokens, output_tokens):
            return (f"its {prompt_tokens + output_tokens - 1} tokens at their largest exceed the "
                    f"{self.reserve_tokens}-token reservation per sequence on replica {replica}")
        return f"needs {self.max_blocks(prompt_tokens, output_tokens)} blocks, replica {replica} has {self.total_blocks}"

    def admit_blocks(self, prompt_tokens: int, output_tokens: int, tokens: int) -> int:
        """Blocks a newly admitted sequence takes when its first ``tokens`` tokens are computed."""
        if self.mode == RESERVE:
            return self.max_blocks(prompt_tokens, output_tokens)
        return self.blocks_for(tokens)

    @property
    def used_frac(self) -> float:
        """Blocks held / all blocks."""
        return 1.0 - self._free / self.total_blocks if self.total_blocks else 1.0

    def cached_tokens(self, seq: Hashable, known_tokens: int, ahead: int = 0) -> int:
        """Tokens of ``seq`` still in the prefix cache (whole leading blocks; at most
        ``known_tokens - 1``, vLLM always recomputes the last token) once ``ahead`` more
        blocks have been taken from the free queue's head."""
        e = self._cached.get(seq)
        if e is None:
            return 0
        pos, n, full = e
        alive = max(0, min(full, pos + n - self._pops - ahead, (known_tokens - 1) // self.block_tokens))
        return alive * self.block_tokens

    def requeued_tokens(self, seq: Hashable, known_tokens: int, ahead: int) -> "int | None":
        """:meth:`cached_tokens` for a sequence preempted by recompute whose blocks are in the
        free queue (None for any other): what its admission finds cached after ``ahead``
        blocks were taken from the queue's head before it in the same iteration."""
        if seq not in self._cached:
            return None
        return self.cached_tokens(seq, known_tokens, ahead)

    def take_cached(self, seq: Hashable, tokens: int) -> None:
        """``seq`` is admitted again reusing ``tokens`` cached tokens (from :meth:`cached_tokens`)."""
        e = self._cached.pop(seq, None)
        if tokens:
            h = self._hit[seq] = tokens // self.block_tokens
            if e is not None:
                # taking its leading blocks back removes them from the free queue (vLLM's
                # ``touch``): they are the last ``h`` of its ``n`` positions (it freed its tail
                # block first), and every block queued after them moves ``h`` places closer to
                # the head, i.e. to eviction
                end = e[0] + e[1]
                for s, (pos, n, full) in self._cached.items():
                    if pos >= end:
                        self._cached[s] = (pos - h, n, full)
                self._pushes -= h

    def held_blocks(self, seq: Hashable) -> int:
        """Private blocks ``seq`` holds (its hash units not counted)."""
        return self._nblocks.get(seq, 0)

    # -- prefix caching across requests -------------------------------------------------
    def register(self, seq: Hashable, hashes: Sequence[int], hash_tokens: int, prompt_tokens: int) -> None:
        """``seq`` carries prefix hashes (``hashes[j]`` covers prompt tokens ``[0, (j + 1) ·
        hash_tokens)``); its whole hash blocks become cacheable units. No-op without prefix
        caching. ValueError when ``block_tokens`` does not divide ``hash_tokens``."""
        if not self.prefix_caching or not hashes:
            return
        self._hashes_seen = True
        if hash_tokens % self.block_tokens:
            raise ValueError(f"prefix caching: the KV block size ({self.block_tokens} tokens, serving.block_tokens) "
                             f"must divide the requests' prefix hash block ({hash_tokens} tokens)")
        n_full = min(len(hashes), int(prompt_tokens) // hash_tokens)
        if n_full:
            self._hseq[seq] = (tuple(hashes[:n_full]), hash_tokens // self.block_tokens, hash_tokens)

    def is_hashed(self, seq: Hashable) -> bool:
        """Does ``seq`` have cacheable hash units (:meth:`register`)?"""
        return seq in self._hseq

    @property
    def filling(self) -> dict:
        """Sequences whose hash units are not all complete yet (the replica reports their
        computed tokens through :meth:`computed`); empty without prefix caching."""
        return self._hdone

    def prefix_units(self, seq: Hashable, tokens: int) -> int:
        """Hash blocks (units) ``tokens`` cached tokens of ``seq`` make."""
        h = self._hseq.get(seq)
        return int(tokens) // h[2] if h is not None else 0

    def prefix_hit(self, seq: Hashable, limit_tokens: int) -> tuple[int, int]:
        """``(tokens, shared_blocks)``: the cached prefix ``seq`` would take now (whole units,
        at most ``limit_tokens`` tokens: ``known - 1``, as vLLM always computes the last
        token) and how many of its blocks other sequences hold (those a hit does not take from
        the free blocks)."""
        h = self._hseq.get(seq)
        if h is None:
            return 0, 0
        keys, ratio, H = h
        table, host = self._table, self.host
        m = shared = 0
        for k in keys[: max(0, int(limit_tokens)) // H]:
            u = table.get(k)
            if u is None:
                if host is not None and k in host:  # on host memory: copied back at admission
                    m += 1
                    continue
                break
            m += 1
            if u.ref:
                shared += ratio
        return m * H, shared

    def cached_prefix_tokens(self, hashes: Sequence[int], hash_tokens: int, prompt_tokens: int) -> int:
        """Tokens of a prompt with these hashes that a hit would skip here now (routers ask)."""
        table, host = self._table, self.host
        m = 0
        for k in hashes[: (int(prompt_tokens) - 1) // hash_tokens]:
            if k not in table and (host is None or k not in host):
                break
            m += 1
        return m * hash_tokens

    def take_prefix(self, seq: Hashable, tokens: int) -> int:
        """``seq`` is admitted with a hit of ``tokens`` (from :meth:`prefix_hit`, this instant):
        it references those units; an evictable one leaves the LRU list and the free count; one
        on host memory is copied into new blocks (its bytes join :attr:`transfer_bytes`).
        Returns the tokens taken: fewer only when a fragmenting pool refuses a copy's blocks."""
        h = self._hseq.get(seq)
        if h is None:
            return 0
        keys, ratio, H = h
        m = int(tokens) // H
        units = []
        table, lru = self._table, self._lru
        self.last_host_units = 0
        for j, k in enumerate(keys[:m]):
            u = table.get(k)
            if u is None:  # on host memory: back into new GPU blocks, cached again
                u = self._reload(k, ratio, seq)
                if u is None:
                    m = j
                    break
            elif u.ref == 0:
                del lru[k]
                nbytes = u.nbytes
                self._evictable -= u.n
                self._free -= u.n
                self.cached_bytes -= nbytes
                self.used_bytes += nbytes
            u.ref += 1
            units.append(u)
        self._units[seq] = units
        self._hblocks[seq] = m * ratio
        if m < len(keys):
            self._hfill.add(seq)
        if m < len(keys):
            self._hdone[seq] = m
        else:
            self._hdone.pop(seq, None)
        return m * H

    def _reload(self, key: int, ratio: int, seq: Hashable) -> Unit | None:
        """Copy a host unit back into ``ratio`` new blocks (ref 0 until the caller counts it);
        None when it is no longer on the host (dropped to make room meanwhile) or the pool
        refuses the blocks."""
        host = self.host
        if host is None or key not in host:
            return None
        nbytes = host.take_unit(key)  # (first: making room below may offload units and drop host ones)
        a = self._alloc(ratio, seq)
        if a is None:
            host.put_unit(key, nbytes)
            return None
        self._free -= ratio
        u = Unit(key)
        u.allocs.append(a)
        u.n, u.nbytes, u.ref, u.cached = ratio, a.nbytes, 0, True
        self._table[key] = u
        self.transfer_bytes += a.nbytes
        self.used_bytes += a.nbytes
        self.n_host_hits += 1
        self.last_host_units += 1
        return u
    def computed(self, seq: Hashable, tokens: int) -> None:
        """``seq`` has ``tokens`` tokens in its cache now: its units complete by then become
        cached (findable), unless the same key is cached already."""
        j = self._hdone.get(seq)
        if j is None:
            return
        keys, ratio, H = self._hseq[seq]
        units, table = self._units[seq], self._table
        n = len(keys)
        while j < n and (j + 1) * H <= tokens and j < len(units) and units[j].n == ratio:
            u = units[j]
            if u.key not in table:
                table[u.key] = u
                u.cached = True
            j += 1
        if j >= n:
            del self._hdone[seq]
        else:
            self._hdone[seq] = j

    def _evict_one(self) -> bool:
        """Free the least recently used evictable unit; False when there is none."""
        if not self._lru:
            return False
        k = next(iter(self._lru))
        u = self._lru.pop(k)
        del self._table[k]
        free = self.pool.free
        nbytes = u.nbytes
        for a in u.allocs:
            free(a)
        self._evictable -= u.n
        self.cached_bytes -= nbytes
        self.n_evicted_units += 1
        if self.host is not None and self.host.put_unit(k, nbytes):  # offloaded: a priced copy
            self.transfer_bytes += nbytes
        return True

    def empty_pool_cache(self) -> bool:
        """Release the memory the pool keeps cached for reuse (a caching allocator's
        ``empty_cache``, which its own failed allocation would do before retrying): a
        stalled replica's last resort before it fails its head, since :attr:`free_blocks`
        counts only what is served without emptying that cache. True if any was released."""
        return self.pool.empty_cache() > 0

    def take_transfer_bytes(self) -> int:
        """Host-link bytes of offloads and reloads since the last call (charged to an iteration)."""
        n, self.transfer_bytes = self.transfer_bytes, 0
        return n

    def _make_room(self, n_blocks: int) -> None:
        """Evict LRU units until ``n_blocks`` blocks fit in the pool's free blocks (exact for
        paged and ideal pools; others may still refuse, see :meth:`_alloc`)."""
        while self._free - self._evictable < n_blocks and self._evict_one():
            pass

    def _alloc(self, n_blocks: int, seq: Hashable) -> Allocation | None:
        """One pool allocation of ``n_blocks`` blocks, evicting LRU units while it does not fit."""
        self._make_room(n_blocks)
        while True:
            a = self.pool.allocate(n_blocks * self.block_bytes, seq)
            if a is not None or not self._evict_one():
                return a

    def _grow_units(self, seq: Hashable, n_blocks: int) -> int:
        """Fill ``seq``'s hash units with up to ``n_blocks`` new blocks; returns how many went
        there (the rest are private), or -1 when the pool refused."""
        keys, ratio, _ = self._hseq[seq]
        have = self._hblocks[seq]
        cap = len(keys) * ratio
        if have >= cap:
            return 0
        units = self._units[seq]
        put = 0
        refused = False
        while put < n_blocks and have < cap:
            j, off = divmod(have, ratio)
            k = min(n_blocks - put, ratio - off)
            if j == len(units):
                units.append(Unit(keys[j]))
            a = self._alloc(k, seq)
            if a is None:
                refused = True
                break
            u = units[j]
            u.allocs.append(a)
            u.n += k
            u.nbytes += a.nbytes
            have += k
            put += k
            self._free -= k  # (at once: the next allocation's room is counted from it)
            self.used_bytes += a.nbytes
        self._hblocks[seq] = have
        if have == cap:
            self._hfill.discard(seq)
        return -1 if refused else put

    # -- mutation (the replica only) ----------------------------------------------------
    def grow(self, seq: Hashable, n_blocks: int) -> bool:
        """Give ``seq`` ``n_blocks`` more blocks (one pool allocation); False if no room."""
        if n_blocks <= 0:
            return True
        if n_blocks > self._free:
            return False
        if not self.prefix_caching:
            return self._grow(seq, n_blocks)
        # the free queue loses the blocks actually taken (none when the pool refuses: a
        # fragmenting pool may, with enough blocks free), less those taken back from the cache
        free = self._free
        ok = self._grow(seq, n_blocks)
        taken = free - self._free  # (eviction keeps ``_free``: an evictable block counts free)
        if taken:
            self._pops += taken - min(self._hit.pop(seq, 0), taken)
        return ok

    def _grow(self, seq: Hashable, n_blocks: int) -> bool:
        """:meth:`grow` past its checks (0 < ``n_blocks`` <= free), free-queue count aside."""
        if self.prefix_caching:
            if seq in self._hfill:
                put = self._grow_units(seq, n_blocks)
                if put < 0:
                    return False
                n_blocks -= put
                if not n_blocks:
                    return True
            if self._evictable:
                self._make_room(n_blocks)
        held = self._held.get(seq)
        if held is not None and self._defer is not None:
            if not self._defer(held, (n_blocks,)):
                return False
            self._nblocks[seq] += n_blocks
            self._free -= n_blocks
            self.used_bytes += n_blocks * self.block_bytes
            return True
        if held is not None and self._append is not None:
            old = held[0]
            a = self._append(old, n_blocks)
            if a is None:
                return False
            held[0] = a
            self._nblocks[seq] += n_blocks
            self._free -= n_blocks
            self.used_bytes += a.nbytes - old.nbytes
            return True
        a = self._alloc(n_blocks, seq) if self._lru else self.pool.allocate(n_blocks * self.block_bytes, seq)
        if a is None:
            return False
        if held is None:
            self._held[seq] = [a]
            self._nblocks[seq] = n_blocks
        else:
            held.append(a)
            self._nblocks[seq] += n_blocks
        self._free -= n_blocks
        self.used_bytes += a.nbytes
        return True

    def grow_many(self, seqs: list, counts: list[int]) -> int:
        """Give ``seqs[i]`` ``counts[i]`` (> 0) more blocks, in order, as :meth:`grow` would one
        by one; returns how many succeeded (they are a prefix: it stops at the first refusal).
        A paged pool does it in one call (:meth:`PagedPool.append_blocks_many`) when every
        sequence already holds blocks and all fit."""
        total = sum(counts)
        one_call = self._append_many is not None and total <= self._free
        if one_call and self.prefix_caching:
            if self._hfill and not self._hfill.isdisjoint(seqs):  # hash units fill one by one (below)
                one_call = False
            elif self._evictable:  # evict cached units until the pool has the blocks
                self._make_room(total)
        if one_call:
            held, nblocks = self._held, self._nblocks
            try:
                olds = [held[s][0] for s in seqs]
            except KeyError:  # a sequence holds nothing yet: one by one below
                olds = None
            if olds is not None:
                if self._defer is not None:  # (the handles it holds, the counts > 0 it was given)
                    ok = self._defer(olds, counts, False)
                else:
                    news = self._append_many(olds, counts)
                    ok = news is not None
                    if ok:
                        for s, a in zip(seqs, news):
                            held[s][0] = a
                if ok:
                    for s, n in zip(seqs, counts):
                        nblocks[s] += n
                    if self.prefix_caching:  # blocks taken back from the cache are not popped
                        hit = self._hit
                        for s, n in zip(seqs, counts):
                            self._pops += n - min(hit.pop(s, 0), n)
                    self._free -= total
                    self.used_bytes += total * self.block_bytes
                    return len(seqs)
        grow = self.grow
        for i, (s, n) in enumerate(zip(seqs, counts)):
            if not grow(s, n):
                return i
        return len(seqs)

    def release(self, seq: Hashable, cache_tokens: int = 0) -> int:
        """``seq`` no longer needs its KV here: :meth:`free_now`, or, when a
        :attr:`release_hook` is set, that hook (which frees through :meth:`free_now`, now or
        later); returns the blocks freed now."""
        hook = self.release_hook
        if hook is not None:
            return hook(seq, cache_tokens)
        return self.free_now(seq, cache_tokens)

    def free_now(self, seq: Hashable, cache_tokens: int = 0) -> int:
        """Free everything ``seq`` holds; returns the number of its private blocks freed (its
        hash units go back to the cache or are freed too). With prefix caching,
        ``cache_tokens`` (its computed tokens) stay findable while not reused."""
        units = self._units.pop(seq, None) if self._units else None
        if units is not None:
            self._release_units(seq, units)
            cache_tokens = 0  # the units are the cache of a hashed sequence
        held = self._held.pop(seq, None)
        if held is None:
            return 0
        n = self._nblocks.pop(seq)
        free = self.pool.free
        for a in held:
            free(a)
        # a paged pool frees the blocks deferred to an allocation too (not in its nbytes)
        self.used_bytes -= n * self.block_bytes if self._defer is not None else sum(a.nbytes for a in held)
        self._free += n
        if self.prefix_caching:
            if cache_tokens:
                self._cached[seq] = (self._pushes, n, cache_tokens // self.block_tokens)
            self._pushes += n
        return n

    def _release_units(self, seq: Hashable, units: list[Unit]) -> None:
        """Drop ``seq``'s references: cached units at count 0 join the LRU list (tail unit
        first, so it is evicted first); private ones are freed."""
        self._hblocks.pop(seq, None)
        self._hdone.pop(seq, None)
        self._hfill.discard(seq)
        lru, free = self._lru, self.pool.free
        for u in reversed(units):
            nbytes = u.nbytes
            if u.cached:
                u.ref -= 1
                if u.ref == 0:  # evictable: counted free again
                    lru[u.key] = u
                    self._free += u.n
                    self._evictable += u.n
                    self.cached_bytes += nbytes
                    self.used_bytes -= nbytes
            else:
                self._free += u.n
                for a in u.allocs:
                    free(a)
                self.used_bytes -= nbytes
                u.allocs = []
                u.nbytes = 0

    def forget(self, seq: Hashable) -> None:
        """``seq`` is gone for good (finished or failed): drop its hash registration."""
        if self._hseq:
            self._hseq.pop(seq, None)

    def check(self) -> None:
        """Assert the bookkeeping invariants (tests): every block is free, evictable, held
        privately or in a referenced unit exactly once; reference counts match the holders."""
        private = sum(self._nblocks.values())
        refs: dict[int, int] = {}
        held_units = 0
        for units in self._units.values():
            for u in units:
                refs[id(u)] = refs.get(id(u), 0) + 1
                if refs[id(u)] == 1:
                    held_units += u.n
        for units in self._units.values():
            for u in units:
                assert u.ref == refs[id(u)], (u, refs[id(u)])
                assert u.nbytes == sum(a.nbytes for a in u.allocs), u
        for k, u in self._lru.items():
            assert u.ref == 0 and u.cached and self._table[k] is u and id(u) not in refs
            assert u.nbytes == sum(a.nbytes for a in u.allocs), u
        assert self._evictable == sum(u.n for u in self._lru.values())
        for k, u in self._table.items():
            assert u.cached and u.key == k and (u.ref > 0 or k in self._lru)
        assert private + held_units + self._free == self.total_blocks, (private, held_units, self._free)
        assert self._free >= self._evictable >= 0
        if self.prefix_caching and not self._hashes_seen:  # (hash units live outside the queue)
            # the free queue's length (positions handed out, less those popped from its head and
            # those of blocks taken back but not yet counted as allocated) is the free count
            assert self._pushes - self._pops + sum(self._hit.values()) == self._free, (
                self._pushes, self._pops, self._hit, self._free)

    def block_offsets(self, seq: Hashable) -> list[int]:
        """Byte offsets in the pool of the blocks ``seq`` holds, in token order (block ``j``
        holds tokens ``j·block_tokens …``). A real backend maps them onto its device arena."""
        held = self._held.get(seq)
        if held is None:
            return []
        if self._defer is not None:  # blocks a paged pool deferred: materialise them
            settle = self.pool.settle
            held[:] = [settle(a) for a in held]
        bb = self.block_bytes
        out: list[int] = []
        for a in held:
            out.extend(a.blocks if a.blocks else range(a.offset, a.offset + a.nbytes // bb * bb, bb))
        return out
