"""A reference simulator for one serving replica, written from the documented semantics.

Independent of the serving code: a plain loop over iterations, no SimPy, no replica, KV
cache, batching-policy or cost-model code. It exists to be compared with ``llmos_sim`` on
random request sets (``test_serving_oracle.py``).

Scope: one replica, chunked prefill (``batching=chunked_prefill``: vLLM v1's scheduler), FCFS
order, recompute or swap preemption, no watermark, paged KV of ``n_blocks`` blocks of
``block`` tokens, no host tier (unlimited swap space), a linear iteration cost (which does not
price swap traffic), every request able to finish on an empty cache. Prefix caching across
requests (requests given prefix hashes over ``hash_tokens``-token hash blocks) only with
recompute preemption and every request holding at least one whole hash block (so no request
falls back on the free-queue model of a preempted unhashed sequence's own blocks).
Not covered: the other batching policies (static, Orca, prefill-first continuous batching
with its watermark), other orderings, routers other than round robin and least outstanding
(:func:`route`; prefix-aware, least KV), swap preemption with prefix caching, the free-queue reuse of unhashed sequences, the host tier's offloaded units,
asynchronous scheduling, the roofline and measured cost models.

Semantics implemented, with where they are stated:

- Tokens (``llmos_sim.serving.view`` module docstring): ``known = prompt + generated``; an
  iteration computes ``n <= known - computed`` tokens of a sequence; when it reaches
  ``computed == known`` the sequence emits one token; it finishes when ``generated ==
  output``; a recompute preemption sets ``computed = 0`` and keeps the generated tokens, a
  swap keeps ``computed`` (its blocks are freed here and taken again at readmission).
- Blocks (``llmos_sim.serving.kv``): a sequence holds ``ceil(tokens / block)`` blocks of the
  tokens it has computed, grown before the iteration that computes them; a finished or
  preempted sequence frees them all.
- One iteration (``BatchingPolicy.next_batch``, ``schedule_running``, ``admit``, ``_growth``,
  ``Ordering``): running sequences first, in admission order, each
  ``min(known - computed, budget)`` tokens within ``max_num_batched_tokens``; when a row's
  growth does not fit the free blocks, the most recently admitted running sequence is
  preempted (vLLM's ``running.pop()``), until it fits or the row itself was the one
  preempted (then no later row runs). No admission in an iteration that preempted.
  Otherwise waiting sequences (by arrival, then id; a preempted one keeps its place by
  arrival) are admitted head-of-line while the budget lasts, fewer than ``max_num_seqs`` run,
  and the blocks of their chunk fit what the running rows left (with
  ``reserve_full_prompt``: the blocks of their whole remaining prompt must be free).
- Time (``llmos_sim.serving.replica`` module docstring): an iteration starting at ``s`` sees
  every arrival at ``<= s``; it lasts ``base_s + per_prefill_token_s · n_prefill +
  per_decode_token_s · n_decode`` (``LinearCost``), where ``n_decode`` counts the sequences
  that decode one token (``BatchShape.n_decode_tokens``) and ``n_prefill`` every other
  computed token (prefill and recompute chunks); first tokens and finishes are stamped at
  its end, and the next iteration starts then. An idle replica starts at the next arrival.
- Prefix caching (``llmos_sim.serving.kv`` module docstring, docs/architecture.md "Prefix
  caching, host tier, prefix-aware routing"): a request's whole hash blocks are units of
  ``hash_tokens / block`` blocks (the partial last hash block and the generated tokens are
  private); a sequence's blocks fill its units first. A unit is findable once its sequence
  has computed all its tokens, unless its key already is (then that copy stays private and is
  freed with the sequence). At admission a sequence takes the longest run of findable units
  from its first, at most ``known - 1`` tokens in whole units, references them and starts with
  ``computed`` = those tokens (so a prompt cached whole recomputes its last hash block).
  Released units at count zero stay, evictable, least recently used first, the tail unit of a
  sequence before its head; evictable blocks count as free; an allocation that does not fit
  the unheld blocks evicts the least recently used units. Admission counts
  ``blocks_for(hit + chunk) - shared`` blocks, ``shared`` being the hit's blocks that other
  sequences hold when the decision starts (``WaitingSeq.shared``; the replica refreshes the
  hits before each decision, so a second admission hitting a unit the first just took from
  the evictable list counts its blocks again). The decision is applied as the replica
  docstring orders it: preemptions (releases), then the admissions' hits are taken, then the
  blocks of every row are allocated in batch order, so no growth evicts a unit a hit of the
  same iteration counted. Records: ``req_cache`` at a request's first admission: hit tokens,
  hit units, all its hash blocks (a partial last one included).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Seq:
    id: int
    arrival: float
    prompt: int
    output: int
    hashes: tuple = ()  # keys of its prompt's whole hash blocks (units)
    generated: int = 0
    computed: int = 0
    blocks: int = 0
    units: list = field(default_factory=list)  # per complete leading hash block: its cached Unit, or None (private)
    first_token: float | None = None
    finish: float | None = None
    preempts: int = 0
    cache: tuple | None = None  # (hit tokens, hit units) at its first admission, with prefix caching

    @property
    def known(self) -> int:
        return self.prompt + self.generated


@dataclass
class Unit:
    key: int
    ref: int = 1


def blocks_for(tokens: int, block: int) -> int:
    return -(-tokens // block)


class KV:
    """Paged blocks, with the prefix cache of hash units when ``hash_tokens`` is set."""

    def __init__(self, n_blocks: int, block: int, hash_tokens: int):
        self.pool_free = n_blocks  # blocks in no sequence and no cached unit
        self.block = block
        self.hash_tokens = hash_tokens
        self.ratio = hash_tokens // block if hash_tokens else 0
        self.cache: dict[int, Unit] = {}  # findable units by key
        self.lru: dict[int, Unit] = {}  # evictable (count 0) cached units, least recently used first

    @property
    def free(self) -> int:
        return self.pool_free + self.ratio * len(self.lru)

    def hit(self, s: Seq) -> tuple[int, int]:
        """(units, shared blocks): the longest run of cached units from the first, at most
        ``known - 1`` tokens; the blocks of those other sequences hold."""
        if not self.hash_tokens:
            return 0, 0
        k = 0
        while k < len(s.hashes) and s.hashes[k] in self.cache:
            k += 1
        k = min(k, (s.known - 1) // self.hash_tokens)
        return k, self.ratio * sum(1 for key in s.hashes[:k] if self.cache[key].ref > 0)

    def take(self, s: Seq, k: int) -> None:
        for key in s.hashes[:k]:
            u = self.cache[key]
            if u.ref == 0:
                del self.lru[key]
            u.ref += 1
            s.units.append(u)
        s.blocks = k * self.ratio
        s.computed = k * self.hash_tokens

    def grow(self, s: Seq, n: int) -> None:
        while self.pool_free < n:  # evict the least recently used unit
            key = next(iter(self.lru))
            del self.lru[key]
            del self.cache[key]
            self.pool_free += self.ratio
        self.pool_free -= n
        s.blocks += n

    def computed(self, s: Seq) -> None:
        """Units ``s`` has now computed whole become findable (unless the key already is)."""
        while len(s.units) < len(s.hashes) and s.computed >= (len(s.units) + 1) * self.hash_tokens:
            key = s.hashes[len(s.units)]
            u = None if key in self.cache else Unit(key)
            if u is not None:
                self.cache[key] = u
            s.units.append(u)

    def release(self, s: Seq) -> None:
        held = [u for u in s.units if u is not None]
        for u in reversed(held):  # tail unit first: evicted first
            u.ref -= 1
            if u.ref == 0:
                self.lru[u.key] = u
        self.pool_free += s.blocks - self.ratio * len(held)
        s.blocks = 0
        s.units = []


def simulate(requests, n_blocks: int, *, block: int = 16, max_num_seqs: int = 256,
             max_num_batched_tokens: int = 2048, reserve_full_prompt: bool = False,
             preemption: str = "recompute", hash_tokens: int = 0,
             base_s: float = 1.0, per_prefill_token_s: float = 0.0,
             per_decode_token_s: float = 0.0) -> dict[int, Seq]:
    """Serve ``requests`` (``(id, arrival, prompt, output)`` tuples, or with a fifth item, the
    prompt's prefix hashes over ``hash_tokens``-token blocks, which turns prefix caching on);
    each request's record."""
    seqs = {}
    for i, a, p, o, *h in requests:
        m = min(len(h[0]), p // hash_tokens) if h and hash_tokens else 0
        seqs[i] = Seq(i, a, p, o, tuple(h[0][:m]) if m else ())
    kv = KV(n_blocks, block, hash_tokens)
    pending = sorted(seqs.values(), key=lambda s: (s.arrival, s.id))  # not yet arrived
    waiting: list[Seq] = []  # by (arrival, id)
    running: list[Seq] = []  # admission order
    t = 0.0
    while pending or waiting or running:
        if not waiting and not running:
            t = max(t, pending[0].arrival)
        while pending and pending[0].arrival <= t:
            waiting.append(pending.pop(0))
        waiting.sort(key=lambda s: (s.arrival, s.id))

        # The decision, on block counts; its preemptions release at once, its blocks are taken after.
        batch: list[tuple[Seq, int]] = []
        grows: list[int] = []
        admitted: list[tuple[Seq, int, int]] = []
        free = kv.free
        budget = max_num_batched_tokens
        preempted = False
        queue = list(running)
        while queue and budget > 0:
            s = queue.pop(0)
            n = min(s.known - s.computed, budget)
            need = blocks_for(s.computed + n, block) - s.blocks
            while need > free:
                victim = queue.pop() if queue else s
                before = kv.free
                kv.release(victim)
                free += kv.free - before
                if preemption == "recompute":
                    victim.computed = 0
                victim.preempts += 1
                running.remove(victim)
                waiting.append(victim)
                preempted = True
                if victim is s:
                    break
            if s not in running:
                break  # the row itself was preempted
            free -= need
            batch.append((s, n))
            grows.append(need)
            budget -= n
        waiting.sort(key=lambda s: (s.arrival, s.id))

        if not preempted:
            while waiting and budget > 0 and len(running) < max_num_seqs:
                s = waiting[0]
                k, shared = kv.hit(s)
                c = k * hash_tokens if hash_tokens else s.computed
                n = min(s.known - c, budget)
                if blocks_for(s.known if reserve_full_prompt else c + n, block) - shared > free:
                    break
                waiting.pop(0)
                free -= blocks_for(c + n, block) - shared
                running.append(s)
                admitted.append((s, k, n))
                batch.append((s, n))
                budget -= n

        for s, k, n in admitted:  # admissions take their cached prefix, then every row grows
            if hash_tokens:
                kv.take(s, k)
                if s.cache is None:
                    s.cache = (k * hash_tokens, k)
            grows.append(blocks_for(s.computed + n, block) - s.blocks)
        for (s, _), need in zip(batch, grows):
            kv.grow(s, need)

        n_decode = sum(1 for s, n in batch if n == 1 and s.generated >= 1 and s.computed + 1 == s.known)
        n_prefill = sum(n for s, n in batch) - n_decode
        t += base_s + per_prefill_token_s * n_prefill + per_decode_token_s * n_decode
        for s, n in batch:
            s.computed += n
            if hash_tokens:
                kv.computed(s)
            if s.computed == s.known:
                s.generated += 1
                if s.generated == 1:
                    s.first_token = t
                if s.generated == s.output:
                    s.finish = t
                    kv.release(s)
                    running.remove(s)
    return seqs


def route(requests, n_replicas: int, router: str, n_blocks: int, **kw) -> tuple[dict[int, int], dict[int, Seq]]:
    """Route ``requests`` (as :func:`simulate` takes them) over ``n_replicas`` replicas, each
    serving its own with :func:`simulate` (``n_blocks`` and ``kw`` each). ``router``:
    ``round_robin`` (``llmos_sim.policies.routing.round_robin``: request ``k`` in arrival order
    to replica ``k mod n``) or ``least_outstanding`` (``...least_outstanding``: the fewest
    requests routed there and not finished at the arrival, ties to the lowest index). A
    replica's records before an arrival do not depend on the requests that come later, so the
    outstanding counts come from simulating what each replica was given so far. Returns each
    request's replica and record."""
    parts: list[list] = [[] for _ in range(n_replicas)]
    where = {}
    for k, r in enumerate(sorted(requests, key=lambda r: (r[1], r[0]))):
        if router == "round_robin":
            j = k % n_replicas
        else:
            def outstanding(part, at=r[1]):
                seqs = simulate(part, n_blocks, **kw) if part else {}
                return sum(1 for s in seqs.values() if s.finish is None or s.finish > at)
            j = min(range(n_replicas), key=lambda i: (outstanding(parts[i]), i))
        parts[j].append(r)
        where[r[0]] = j
    seqs: dict[int, Seq] = {}
    for part in parts:
        if part:
            seqs.update(simulate(part, n_blocks, **kw))
    return where, seqs
