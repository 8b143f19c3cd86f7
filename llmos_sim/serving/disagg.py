"""Prefill/decode disaggregation (Splitwise, DistServe): two pools of replicas and a KV link.

A co-located service runs each request's prefill and decode on one replica, so long prefills
stall the decodes batched with them (TPOT) and decodes take the batch slots prefills want
(TTFT). A disaggregated service splits them:

1. an arriving request is routed (the prefill router) to a **prefill replica**, which runs it
   up to its first token — TTFT ends there, as in DistServe and Splitwise;
2. at its first token the decode router picks a **decode replica**; the request waits there
   (first come, first served per decode replica) until that replica's pool can allocate the
   blocks of its prompt and first token, which are then **allocated to it before the transfer
   starts** (vLLM's disaggregated connectors: the decode scheduler allocates the blocks a
   remote KV is read into; DistServe's decode instances pull KV when they have room). The
   **prefill replica keeps the request's blocks until the transfer has ended** (vLLM's
   connectors delay freeing them until the decode side has read them), so a full decode pool
   holds KV back in the prefill pool, and a prefill replica short of blocks waits for a
   transfer to end (``Replica.held_elsewhere``) instead of failing its head. Blocks freed on
   the decode replica by a sequence that leaves it (finished or failed) go to the waiting
   transfers **at the free**, before the replica's next decision, less the blocks its running
   rows need for their next token — unless sequences preempted there are waiting: in vLLM's
   scheduler running requests grow first and preempted ones, at the front of the waiting
   queue, come before requests whose KV is still to be received. Blocks a preemption frees
   are that decision's, and the transfers try again right after it (also after any decision
   that left blocks over). A decode replica with nothing runnable while transfers under way
   hold blocks of its pool waits for one to land (``Replica.held_elsewhere``);
3. with prefix caching on, the decode replica's pool first looks up the request's prefix
   hashes: the whole hash blocks it has cached are **referenced, not sent** (vLLM's
   connectors read only the blocks the decode side's prefix cache lacks), and new blocks are
   allocated for the rest. Its prompt's missing KV (``(prompt_tokens − cached) ×
   model.kv_bytes_per_token`` bytes; a prompt cached whole sends nothing and lands after the
   latency) crosses a **link**
   (:class:`KVLink`): first ``latency_s`` (the handshake; shares nothing), then its bytes at the
   link's bandwidth, **shared with the transfers on the same link**: ``sharing: fair``
   (processor sharing, the default: ``n`` transfers under way move at ``bw / n`` each, as
   flows on one RDMA NIC roughly do) or ``fifo`` (one at a time, in the order they joined);
   ``scope`` says which transfers share a link: ``source`` (the default: those out of one
   prefill replica, its NICs), ``destination`` (into one decode replica), ``pair``,
   ``single``, or ``both``: each transfer crosses its prefill replica's NICs *and* its decode
   replica's NICs, with max-min fair rates over both by progressive filling (``fifo``: in join
   order, each takes what its two NICs have left; :class:`FabricState`). Alone on its link a
   transfer takes ``latency_s + bytes / bandwidth``. Logged as
   two ``kv_transfer`` records (``phase`` "start" when its decode blocks are allocated, "end"
   on arrival; see :data:`llmos_sim.events.KV_TRANSFER`);
4. on arrival the prefill replica frees its blocks and the request waits on the decode replica
   as a sequence whose computed tokens come back from elsewhere — the replica's swap-in path
   (``WaitingSeq.swapped``), with the copy already paid for (``WaitingSeq.landed``) and its
   blocks already held (``Replica.enqueue(..., held_blocks=)``: admission takes no more for
   them): it decodes at once on admission, no prompt recomputed. Its whole hash blocks become
   findable in the decode pool's prefix cache on arrival (later transfers to that replica
   skip them; a prefix-aware decode router sees them); it continues there as a hashed
   sequence holding those units, which return to the cache when it ends or is preempted by
   recompute (it takes back those still cached when it returns; vLLM caches a received KV's
   blocks under the request's hashes).

A request of one output token finishes on its prefill replica (nothing to decode). The decode
stage's TPOT and inter-token latencies include the waits for decode blocks and admission and the transfer (the
gap between the first token and the second is what a user sees); the request table, the
summary and goodput are the co-located run's, from the same records.

Pools (``topology.prefill`` and ``topology.decode``): ``replicas``, ``gpu`` (a catalogue name,
e.g. ``A100``, or a gpu config; null: the run's ``gpu`` group), ``tp`` (null: ``serving.tp``),
``router`` and ``batching`` (configs; null: the run's groups). Each pool's replicas are built
exactly as a co-located run's (:func:`llmos_sim.run.build_replica_factory` with the pool's
GPU, TP and batching: KV capacity by vLLM's memory rule, the cost model); the prefill
replicas are numbered ``0 … P−1`` and the decode replicas ``P … P+D−1`` in every record.
``serving.replicas`` is not used.

Link (``topology.link``): ``bw_bytes_s`` per GPU and ``latency_s``. A replica of TP ``t`` holds
its KV sharded over ``t`` GPUs; each GPU pair sends its shard over its own link, so a transfer
between a prefill replica of TP ``tp`` and a decode replica of TP ``td`` moves at
``min(tp, td) × bw_bytes_s``. Defaults: 50 GB/s = one 400 Gb/s NDR InfiniBand NIC per GPU (a
DGX H100 has one ConnectX-7 per GPU; Splitwise assumes InfiniBand between its prefill and
token machines), and 100 µs per transfer — RDMA's own latency is a few µs; the rest is an
allowance for the per-request handshake that a KV transfer engine (Splitwise's, vLLM's
``KVConnector``s) performs, not a measured figure. Set ``bw_bytes_s`` to a GPU's NVLink
bandwidth for prefill and decode in one node (DistServe's placement).

On the shared cluster (``mode: mixed``) a :class:`~llmos_sim.serving.cluster.DisaggServiceHost`
builds a :class:`DisaggSystem` on the devices its job was granted: it routes the arrivals itself
(``next_arrival``), gives each prefill/decode pair the placement's bandwidth (``pair_bw``: links
are then per scope key and bandwidth), and adds decode replicas that the decode router sees once
they are ready (:attr:`DisaggSystem.decode_open`) and prefill replicas (:meth:`add_prefill`).

Simplifications, stated: a transfer's bytes go in one piece after its prefill (Splitwise
overlaps the copy with the prefill, layer by layer); a request whose blocks the decode pool can
never hold fails at its first token; the decode pool's cache is looked up once, when the
transfer's blocks are allocated (units landing later are not shared by a transfer already under
way); a landed request that a recompute preemption sends back recomputes on the decode
replica the part of its prompt whose units the cache no longer has (its other blocks are not
kept, as for any hashed sequence).

Preempted sequences first (vLLM's scheduler puts them at the front of its waiting queue, and
allocates a remote KV's blocks in that queue's order): while sequences preempted on a decode
replica wait there, no transfer takes blocks of its pool (unless none is under way and its head
would otherwise fail: then the waiting transfers try). A decode replica whose preempted head
does not fit while sequences landed behind it hold blocks, with nothing runnable, makes those
landed sequences give up their blocks: each is preempted by recompute (``req_preempt``) and
waits to recompute its prompt there (``Replica._yield_landed``), instead of the head failing as
unschedulable. Transfers that started before the preemption took their blocks then; vLLM's own
scheduler would wait on such a head for ever. A landed head that does not fit likewise goes
first (first come first served): landed sequences each hold their prompt's blocks and may each
need more before they run (the next token's block; static batching's whole reservation, which
counts a landed request's held blocks as its own), so without it they would wait on each other
until the head failed.

Fast-forward on decode replicas: a span of decode iterations must not run past an arrival. A
decode replica's arrivals are transfers; those under way end no earlier than their links'
next end until the next join (then rates are planned again), those waiting for blocks start no
earlier than their decode replica's clock, and any later hand-off comes at the end of a prefill
iteration, no earlier than the event each prefill replica waits for (``Replica.wake_s``), so
no transfer can end before the least of these plus the link's latency
(:meth:`DisaggSystem.next_landing_s`).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import heapq
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
from omegaconf import DictConfig, open_dict
from simpy.events import URGENT

from llmos_sim import events as E
from llmos_sim.kernel import Instant, push_at, sparse_gc
from llmos_sim.policies.routing.base import Router
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.view import GROW
from llmos_sim.serving.system import ServingResult, ServingSystem, build_result, replica_loads
from llmos_sim.validate import ConfigError

#: the link's defaults (see the module docstring for where they come from)
LINK_BW_BYTES_S = 50e9
LINK_LATENCY_S = 100e-6
STAGES = ("prefill", "decode")
#: how transfers on one link share its bandwidth: ``fair`` (processor sharing: the ``n`` under
#: way move at ``bw / n`` each), ``fifo`` (one at a time, in the order they entered)
LINK_SHARING = ("fair", "fifo")
#: which transfers share one link: ``source`` (those out of one prefill replica: its NICs),
#: ``destination`` (those into one decode replica), ``pair`` (one link per prefill/decode
#: pair), ``single`` (every transfer on one link), ``both`` (each transfer crosses its prefill
#: replica's NICs and its decode replica's NICs: rates shared over both, :class:`FabricState`)
LINK_SCOPES = ("source", "destination", "pair", "single", "both")


@dataclass(frozen=True, slots=True)
class KVLink:
    """The links a prompt's KV crosses from a prefill replica to a decode replica: each has
    ``bw_bytes_s``, shared by the transfers on it (``sharing``), which link a transfer takes
    by ``scope``; every transfer first waits ``latency_s`` (not sharing anything)."""

    bw_bytes_s: float = LINK_BW_BYTES_S  #: bytes per second of one link
    latency_s: float = LINK_LATENCY_S  #: fixed time per transfer, before its bytes move
    sharing: str = "fair"  #: see :data:`LINK_SHARING`
    scope: str = "source"  #: see :data:`LINK_SCOPES`

    def __post_init__(self) -> None:
        if not self.bw_bytes_s > 0:
            raise ConfigError("topology.link.bw_bytes_s", f"must be > 0, got {self.bw_bytes_s!r}")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise ConfigError("topology.link.latency_s", f"must be finite and >= 0, got {self.latency_s!r}")
        if self.sharing not in LINK_SHARING:
            raise ConfigError("topology.link.sharing", f"must be one of {', '.join(LINK_SHARING)}, got {self.sharing!r}")
        if self.scope not in LINK_SCOPES:
            raise ConfigError("topology.link.scope", f"must be one of {', '.join(LINK_SCOPES)}, got {self.scope!r}")

    def seconds(self, nbytes: int) -> float:
        """Time of a transfer of ``nbytes`` alone on its link: ``latency_s + nbytes / bw_bytes_s``."""
        return self.latency_s + nbytes / self.bw_bytes_s

    def key(self, src: int, dst: int):
        """The link a transfer from replica ``src`` to replica ``dst`` takes (``both``: one
        :class:`FabricState` for every transfer, which knows each one's two NICs)."""
        scope = self.scope
        return src if scope == "source" else dst if scope == "destination" else (src, dst) if scope == "pair" else 0

    def state(self, bw: float):
        """A new state for one link of this scope (``bw``: the link's bytes per second)."""
        fair = self.sharing == "fair"
        return FabricState(bw, fair) if self.scope == "both" else LinkState(bw, fair)


class Transfer:
    """One request's KV on its way: ``rem`` bytes still to move once it is on its link (set
    when it starts: the prompt's bytes less those the decode replica already holds, ``cached``
    tokens of its prefix); ``rate``: its bytes per second now (:class:`FabricState` only)."""

    __slots__ = ("req", "src", "j", "dst", "nbytes", "blocks", "first_token_s", "rem", "cached", "rate")

    def __init__(self, req, src: int, j: int, dst: int, blocks: int, first_token_s: float) -> None:
        self.req, self.src, self.j, self.dst, self.blocks = req, src, j, dst, blocks
        self.first_token_s = first_token_s
        self.nbytes, self.rem, self.cached, self.rate = 0, 0.0, 0, 0.0


class LinkState:
    """The transfers moving bytes on one link, advanced at each change (one joins, one ends).

    ``fair``: the ``n`` under way each move at ``bw / n`` (processor sharing); ``fifo``: the
    first moves at ``bw``, the others wait. :attr:`next_end` is when the next one ends if none
    joins before (a join only delays the others: a lower bound on the next end)."""

    __slots__ = ("bw", "fair", "active", "t", "next_end", "version")

    def __init__(self, bw: float, fair: bool) -> None:
        self.bw, self.fair = bw, fair
        self.active: list[Transfer] = []
        self.t = 0.0  # time the remaining bytes are counted at
        self.next_end = math.inf
        self.version = 0  # the completion instant that is still valid

    def advance(self, now: float) -> None:
        """Count the bytes moved from :attr:`t` to ``now``."""
        dt = now - self.t
        if dt > 0 and self.active:
            if self.fair:
                moved = dt * self.bw / len(self.active)
                for x in self.active:
                    x.rem -= moved
            else:
                self.active[0].rem -= dt * self.bw
        self.t = max(self.t, now)

    def due(self) -> list[Transfer]:
        """The transfers that end at :attr:`next_end` (those with the fewest bytes left; fifo: the first)."""
        if not self.active:
            return []
        if not self.fair:
            return [self.active[0]]
        least = min(x.rem for x in self.active)
        return [x for x in self.active if x.rem == least]

    def plan(self) -> float:
        """Set and return :attr:`next_end` from the transfers under way now."""
        if not self.active:
            self.next_end = math.inf
        elif self.fair:
            self.next_end = self.t + max(0.0, min(x.rem for x in self.active)) * len(self.active) / self.bw
        else:
            self.next_end = self.t + max(0.0, self.active[0].rem) / self.bw
        self.version += 1
        return self.next_end


class FabricState(LinkState):
    """``scope: both``: every transfer crosses two links of ``bw`` each, its prefill
    replica's NICs (``src``) and its decode replica's NICs (``dst``), shared with every other
    transfer on either. ``fair``: max-min fair rates by progressive filling (all rates rise
    together; when a link is full, the transfers on it keep their rate and the others rise
    on); ``fifo``: in the order they joined, each takes what its two links have left (the first
    on a link moves at ``bw``, a later one waits while either of its links is taken).

    A transfer joining may speed another up (max-min fairness is not monotone), so
    :attr:`next_end` holds only until the next join; :meth:`DisaggSystem.next_landing_s`
    bounds by the next possible join anyway."""

    __slots__ = ()

    def advance(self, now: float) -> None:
        dt = now - self.t
        if dt > 0:
            for x in self.active:
                x.rem -= dt * x.rate
        self.t = max(self.t, now)

    def rates(self) -> None:
        """Set each transfer's :attr:`Transfer.rate` from the transfers under way."""
        bw, act = self.bw, self.active
        if not self.fair:
            left: dict = {}
            for x in act:
                r = min(left.get(("s", x.src), bw), left.get(("d", x.dst), bw))
                x.rate = r
                left[("s", x.src)] = left.get(("s", x.src), bw) - r
                left[("d", x.dst)] = left.get(("d", x.dst), bw) - r
            return
        cap: dict = {}
        for x in act:
            x.rate = 0.0
            cap[("s", x.src)] = cap[("d", x.dst)] = bw
        live = act
        while live:
            n: dict = {}
            for x in live:
                n[("s", x.src)] = n.get(("s", x.src), 0) + 1
                n[("d", x.dst)] = n.get(("d", x.dst), 0) + 1
            share = {k: cap[k] / c for k, c in n.items()}
            inc = min(share.values())
            full = {k for k, v in share.items() if v == inc}
            for k, c in n.items():
                cap[k] = 0.0 if k in full else cap[k] - inc * c
            for x in live:
                x.rate += inc
            live = [x for x in live if ("s", x.src) not in full and ("d", x.dst) not in full]

    def _ends(self) -> list[float]:
        return [self.t + max(0.0, x.rem) / x.rate if x.rate > 0 else math.inf for x in self.active]

    def due(self) -> list[Transfer]:
        if not self.active:
            return []
        ends = self._ends()
        first = min(ends)
        return [x for x, e in zip(self.active, ends) if e == first]

    def plan(self) -> float:
        self.rates()
        self.next_end = min(self._ends()) if self.active else math.inf
        self.version += 1
        return self.next_end


class DisaggSystem(ServingSystem):
    """A prefill pool behind the prefill router (the arrivals are :class:`ServingSystem`'s,
    routed over :attr:`prefill`), a decode pool behind the decode router, and the KV links.

    KV ownership (see the module docstring): a prefill replica keeps a handed-off request's
    blocks until its transfer has ended (its pool's :attr:`KVCacheManager.release_hook`: a
    release of such a request waits for the transfer); a request waits, after its first
    token, for its blocks in the decode replica's pool (first come, first served per decode
    replica), which are allocated to it before its transfer starts (its prefix cached there
    referenced, not sent) and which its admission there then holds; the decode pool's hook
    starts waiting transfers as blocks free."""

    fixed_replicas = False  # (a service host adds and drains prefill replicas and routes itself)

    def __init__(self, requests: Sequence, make_prefill, make_decode, prefill_router: Router, decode_router: Router,
                 n_prefill: int, n_decode: int, link: KVLink, kv_bytes_per_token: int,
                 log: E.EventLog | None = None, progress: bool = False, env=None, next_arrival=None,
                 pair_bw=None) -> None:
        # ``next_arrival``: a service host on the shared cluster routes the arrivals itself (over
        # :attr:`prefill`) and says when the next one comes; ``pair_bw(i, j)``: the bytes per
        # second between prefill position ``i`` and decode position ``j`` where the placement
        # decides it (a link is then per scope key and bandwidth: NVLink and NICs are separate)
        super().__init__(() if next_arrival is not None else requests, make_prefill, prefill_router, n_prefill, log,
                         progress, env)
        if next_arrival is not None:
            self.next_arrival_s = next_arrival
        self.prefill: list[Replica] = self.replicas  # (the arrivals are routed over self.replicas)
        self.decode: list[Replica] = []
        self.decode_router = decode_router
        #: positions in :attr:`decode` the decode router sees (a service host drains and adds them)
        self.decode_open: list[int] = []
        #: called ``(request id, decode position)`` when the decode router has placed a request
        self.on_decode_route = None
        self.link = link
        self.pair_bw = pair_bw
        self.kv_bytes_per_token = int(kv_bytes_per_token)
        self._by_id = {r.id: r for r in requests}
        self._in_flight: list[int] = []  # requests handed to each decode replica, not yet landed
        self._pending: list[deque] = []  # waiting for decode blocks
        self._retry: list[bool] = []  # a retry of a decode replica's pending transfers is due
        self._joins: list = []  # (time, n, transfer): transfers in latency, joining their links then (a heap)
        self._n = itertools.count()
        self._links: dict = {}  # link key -> LinkState
        # prefill replica -> request id -> whether the replica has released it (its blocks wait
        # for the transfer's end); the event a prefill replica short of blocks waits for
        self._held: list[dict] = []
        self._freed: list = []
        self._prefill_pos: dict[int, int] = {}  # prefill replica index -> its position
        for rep in self.prefill:
            self._wire_prefill(rep)
        self._sent: list[int] = []  # transfers under way to each decode replica (their blocks held there)
        self._landed: list = []  # the event a stalled decode replica waits for
        for j in range(n_decode):
            self.add_decode(make_decode(n_prefill + j, self.env, self.log, self.next_landing_s))
        self.max_pending = 0  #: most requests waiting for decode blocks at once
        self.max_held_blocks = 0  #: most prefill blocks held for transfers at once (all replicas)
        self._held_blocks = 0
        self.cached_tokens = 0  #: prompt tokens not sent: the decode replica had them cached

    def _wire_prefill(self, rep: Replica) -> None:
        i = len(self._held)
        self._prefill_pos[rep.index] = i
        self._held.append({})
        self._freed.append(None)
        rep.handoff = self._handoff
        rep.kv.release_hook = functools.partial(self._prefill_release, i)
        rep.held_elsewhere = functools.partial(self._held_event, i)

    def add_prefill(self, rep: Replica) -> int:
        """Add prefill replica ``rep`` (a service scaled up); its position. The arrivals'
        router (the service host's) decides when it takes requests."""
        self.prefill.append(rep)
        self._wire_prefill(rep)
        return len(self.prefill) - 1

    def add_decode(self, rep: Replica, open_: bool = True) -> int:
        """Add decode replica ``rep``; its position. ``open_``: the decode router sees it now
        (else once :attr:`decode_open` lists it)."""
        j = len(self.decode)
        self.decode.append(rep)
        for ls, v in ((self._in_flight, 0), (self._pending, deque()), (self._retry, False), (self._sent, 0),
                      (self._landed, None)):
            ls.append(v)
        if open_:
            self.decode_open.append(j)
        rep.sync_finishes = False
        rep.kv.release_hook = functools.partial(self._decode_release, j)
        rep.held_elsewhere = functools.partial(self._landing_event, j)
        return j

    @property
    def all_replicas(self) -> list[Replica]:
        return self.prefill + self.decode

    def next_landing_s(self) -> float:
        """No transfer ends before this time: a decode replica's "next arrival". A transfer on
        a link ends no earlier than the link's :attr:`LinkState.next_end`; one in its latency
        joins its link at its join time; one waiting for blocks on decode replica ``j`` starts
        no earlier than ``j``'s clock (blocks free there at its own iterations) and takes at
        least ``latency_s``; a new hand-off comes at the end of a prefill iteration, no earlier
        than the event each prefill replica waits for (``Replica.wake_s``; an idle one waits for
        the next request's arrival, one short of blocks for a transfer's end)."""
        lat = self.link.latency_s
        t = min(self.next_arrival_s(), min(rep.wake_s for rep in self.prefill)) + lat
        if self._joins:
            t = min(t, self._joins[0][0])
        for ln in self._links.values():
            if ln.next_end < t:
                t = ln.next_end
        for j, q in enumerate(self._pending):
            if q:
                t = min(t, self.decode[j].now + lat)
        return t

    def left_behind(self) -> str | None:
        """What the hand-off still holds (transfers waiting for decode blocks or under way,
        prefill blocks kept for them), or None: at the end of a run, nothing."""
        pending, flying = sum(len(q) for q in self._pending), sum(self._in_flight)
        held = sum(len(h) for h in self._held)
        if pending or flying or held or self._joins or any(ln.active for ln in self._links.values()):
            return (f"hand-off not empty at the end: {pending} transfers waiting for decode blocks, {flying} handed "
                    f"to decode replicas not landed, {held} requests' blocks kept on prefill replicas")
        return None

    def decode_waiting(self, j: int) -> int:
        """Requests waiting on decode replica ``j``: for admission, or for its blocks before
        their transfer."""
        return len(self.decode[j].waiting) + len(self._pending[j])

    # -- the prefill side: blocks kept until the transfer ends -----------------------------
    def _prefill_release(self, i: int, seq, cache_tokens: int = 0) -> int:
        held = self._held[i]
        state = held.get(seq)
        if state is None:
            return self.prefill[i].kv.free_now(seq, cache_tokens)
        if state == "sent":  # the transfer already ended
            del held[seq]
            return self._free_held(i, seq)
        held[seq] = "released"  # freed when its transfer ends
        return 0

    def _free_held(self, i: int, seq) -> int:
        rep = self.prefill[i]
        self._held_blocks -= rep.kv.held_blocks(seq)
        n = rep.kv.free_now(seq)
        ev = self._freed[i]
        if ev is not None:
            self._freed[i] = None
            ev.succeed()
        return n

    def _drop_held(self, i: int, rid) -> None:
        """Request ``rid``'s KV is no longer needed on prefill replica ``i`` (sent, or failed)."""
        held = self._held[i]
        if held[rid] == "released":
            del held[rid]
            self._free_held(i, rid)
        else:  # the replica releases it later (async scheduling): then it is freed
            held[rid] = "sent"

    def _held_event(self, i: int):
        """Prefill replica ``i`` cannot run anything: the event of a held request's blocks
        freeing (None when it holds none for transfers)."""
        if not self._held[i]:
            return None
        if self._freed[i] is None:
            self._freed[i] = self.env.event()
        return self._freed[i]

    def _handoff(self, rep: Replica, rids: list, now: float) -> None:
        """Prefill replica ``rep`` produced the first token of ``rids`` at ``now``: finish those
        of one output token; for the others, pick a decode replica (the decode router) and
        queue the transfer there until that replica's pool has the request's blocks."""
        log, router, open_ = self.log, self.decode_router, self.decode_open
        i = self._prefill_pos[rep.index]
        for rid in rids:
            r = self._by_id[rid]
            if r.output_tokens <= 1:
                log.emit(now, E.REQ_FINISH, rid, (rep.index,))
                continue
            loads = replica_loads([self.decode[j] for j in open_], router, r)
            for k, load in enumerate(loads):  # positions among the open decode replicas, hand-offs not yet landed counted
                load.index = k
                load.outstanding += self._in_flight[open_[k]]
            j = open_[router.route(r, loads)]
            if self.on_decode_route is not None:
                self.on_decode_route(rid, j)
            kv = self.decode[j].kv
            if not kv.can_ever_fit(r.prompt_tokens, r.output_tokens):
                log.emit(now, E.REQ_FAIL, rid,
                         ("kv_too_small: " + kv.too_small(r.prompt_tokens, r.output_tokens, self.decode[j].index),))
                continue
            blocks = kv.admit_blocks(r.prompt_tokens, r.output_tokens, r.prompt_tokens + 1)
            if r.prefix_hashes:  # (a no-op without prefix caching there)
                kv.register(rid, r.prefix_hashes, r.prefix_block_tokens, r.prompt_tokens)
            self._held[i][rid] = "kept"
            self._held_blocks += rep.kv.held_blocks(rid)
            self.max_held_blocks = max(self.max_held_blocks, self._held_blocks)
            self._in_flight[j] += 1
            self._pending[j].append(Transfer(r, i, j, self.decode[j].index, blocks, now))
        for j, q in enumerate(self._pending):
            if q and not _own_waiting(self.decode[j]):  # (its preempted sequences come first)
                self._start_pending(j, now)
        self.max_pending = max(self.max_pending, sum(len(q) for q in self._pending))

    # -- the decode side: blocks before the transfer ------------------------------------------
    def _decode_release(self, j: int, seq, cache_tokens: int = 0) -> int:
        """Decode replica ``j``'s release hook: free ``seq``'s blocks now. Blocks freed by a
        sequence leaving the replica (finished, or failed) go to the transfers waiting there
        at once, at the replica's clock, before its next decision, less the blocks its running
        rows need for their next token (running rows grow first, as in vLLM's scheduler); any
        blocks left after that decision, and blocks freed by a preemption (the decision's, for
        the rows it grows), are tried after the decision (an urgent instant at the same time)."""
        rep = self.decode[j]
        kv = rep.kv
        before = kv.unheld_blocks
        n = kv.free_now(seq, cache_tokens)
        if self._pending[j] and kv.unheld_blocks > before:  # blocks freed: the waiting transfers may start
            if _leaves(rep, seq) and not _own_waiting(rep):  # (its preempted sequences come first)
                self._start_pending(j, rep.now, _next_growth(rep))
            if self._pending[j] and not self._retry[j]:
                self._retry[j] = True
                push_at(self._queue, max(self.env.now, rep.now), Instant(functools.partial(self._retry_pending, j)),
                        URGENT)
        return n

    def _retry_pending(self, j: int, _event=None) -> None:
        """The transfers waiting on decode replica ``j`` try after a decision, unless sequences
        preempted there wait (they come first; a later free tries again)."""
        self._retry[j] = False
        if not _own_waiting(self.decode[j]):  # (its preempted sequences come first)
            self._start_pending(j, self.env.now)

    def _start_pending(self, j: int, now: float, keep: int = 0) -> None:
        """Start the transfers waiting on decode replica ``j`` (in order) while its pool has
        their blocks beyond ``keep``; each takes its blocks there now: the prefix that pool has
        cached (referenced, not sent) and new blocks for the rest, whose bytes it sends."""
        q, kv = self._pending[j], self.decode[j].kv
        while q:
            x = q[0]
            rid = x.req.id
            hashed = kv.is_hashed(rid)
            hit, shared = kv.prefix_hit(rid, x.req.prompt_tokens) if hashed else (0, 0)
            # (a count: a fragmenting pool's ``free_blocks`` is a lower bound, its ``grow`` decides)
            if kv.unheld_blocks - keep < x.blocks - shared or not self._take_blocks(kv, x, hit, hashed):
                if kv.unheld_blocks == kv.total_blocks:  # refused by an empty pool: it never will take it
                    q.popleft()
                    self._in_flight[j] -= 1
                    kv.forget(rid)
                    self.log.emit(now, E.REQ_FAIL, rid, (f"kv_refused: decode replica {self.decode[j].index}'s "
                                                         f"empty pool refused {x.blocks} blocks",))
                    self._drop_held(x.src, rid)
                    continue
                return
            q.popleft()
            self._sent[j] += 1
            x.nbytes = (x.req.prompt_tokens - x.cached) * self.kv_bytes_per_token
            x.rem = float(x.nbytes)
            self.cached_tokens += x.cached
            self.log.emit(now, E.KV_TRANSFER, rid, ("start", self.prefill[x.src].index, x.dst, x.nbytes))
            heapq.heappush(self._joins, (now + self.link.latency_s, next(self._n), x))
            push_at(self._queue, now + self.link.latency_s, Instant(self._join), URGENT)

    @staticmethod
    def _take_blocks(kv, x: Transfer, hit: int, hashed: bool) -> bool:
        """Allocate transfer ``x``'s blocks in decode pool ``kv``: a hashed request first
        references the ``hit`` tokens cached there (:meth:`KVCacheManager.take_prefix`; its
        other whole hash blocks fill first as new units), then the rest; False, holding
        nothing, when the pool refuses."""
        got = kv.take_prefix(x.req.id, hit) if hashed else 0
        if kv.grow(x.req.id, x.blocks - got // kv.block_tokens):
            x.cached = got
            return True
        kv.free_now(x.req.id)
        return False

    # -- the links --------------------------------------------------------------------------
    def _join(self, _event=None) -> None:
        """The earliest transfer in latency starts moving its bytes on its link."""
        now = self.env.now
        _, _, x = heapq.heappop(self._joins)  # (joins come in time order: this one is the earliest)
        key = self.link.key(x.src, self.decode[x.j].index)
        if x.rem <= 0:  # its whole prompt was cached there: nothing to send
            self._land(x, now)
            return
        bw = self.link.bw_bytes_s
        if self.pair_bw is not None:
            bw = self.pair_bw(x.src, x.j)
            key = (key, bw)
        ln = self._links.get(key)
        if ln is None:
            ln = self._links[key] = self.link.state(bw)
            ln.t = now
        ln.advance(now)
        ln.active.append(x)
        self._plan(ln)

    def _plan(self, ln: LinkState) -> None:
        end = ln.plan()
        if ln.active:
            push_at(self._queue, end, Instant(functools.partial(self._end, ln, ln.version)), URGENT)

    def _end(self, ln: LinkState, version: int, _event=None) -> None:
        """The transfers due on link ``ln`` end now (unless one joined since: ``version``)."""
        if version != ln.version:
            return
        now = self.env.now
        done = ln.due()
        ln.advance(now)
        for x in done:
            x.rem = 0.0
            ln.active.remove(x)
        self._plan(ln)
        for x in done:
            self._land(x, now)

    def _land(self, x: Transfer, now: float) -> None:
        """Request ``x.req``'s KV arrived at decode replica ``x.j``: the prefill replica frees
        its blocks, the request joins the decode replica's queue holding the blocks taken for it."""
        r, j = x.req, x.j
        self._in_flight[j] -= 1
        self._sent[j] -= 1
        dst = self.decode[j]
        self.log.emit(now, E.KV_TRANSFER, r.id, ("end", self.prefill[x.src].index, dst.index, x.nbytes))
        self._drop_held(x.src, r.id)
        kv = dst.kv
        if kv.is_hashed(r.id):  # its prompt's whole hash blocks are complete here: cached for later requests
            kv.computed(r.id, r.prompt_tokens)
        # (it stays hashed there: a recompute preemption takes back the units still cached)
        dst.enqueue(r, landed_s=x.first_token_s, held_blocks=x.blocks)
        ev = self._landed[j]
        if ev is not None:
            self._landed[j] = None
            ev.succeed()

    def _landing_event(self, j: int):
        """Decode replica ``j`` cannot run anything (its waiting sequences do not fit): the
        event of the next transfer landing there, while transfers under way hold blocks of its
        pool (they land, decode, and free them); None when none does. With none under way, the
        transfers waiting there (held back by its preempted sequences) try first."""
        if not self._sent[j] and self._pending[j]:  # none under way: the waiting ones try (else its head fails)
            self._start_pending(j, self.decode[j].now)
        if not self._sent[j]:
            return None
        if self._landed[j] is None:
            self._landed[j] = self.env.event()
        return self._landed[j]

    def run(self, until: float | None = None) -> None:
        super().run(until)
        for rep in self.decode:
            rep.flush_itl(self.env.now)


def _leaves(rep: Replica, seq) -> bool:
    """Does the release of ``seq`` on ``rep`` mean it leaves the replica (it finished, or is
    no row: a failed waiting sequence, a finish released after the next decision), rather than
    a preemption of a row (still running, not finished)?"""
    tab = rep.table
    try:
        r = tab.rid.index(seq)
    except ValueError:
        return True
    return tab.generated[r] >= tab.output[r]


def _own_waiting(rep: Replica) -> bool:
    """Does ``rep`` have waiting sequences that need blocks (preempted there; a landed one
    holds its blocks)? vLLM's scheduler puts preempted requests at the front of its waiting
    queue, before requests whose KV is still to be received."""
    return any(not w.landed for w in rep.waiting)


def _next_growth(rep: Replica) -> int:
    """Blocks ``rep``'s running rows not finished need for one more token each."""
    kv, tab = rep.kv, rep.table
    if kv.mode != GROW:  # (reserved whole at admission)
        return 0
    bt = kv.block_tokens
    return sum(1 for c, b, g, o in zip(tab.computed, tab.blocks, tab.generated, tab.output) if g < o and c >= b * bt)


def is_disaggregated(cfg) -> bool:
    """Whether the composed config asks for a disaggregated service (``topology.kind``)."""
    topo = cfg.get("topology", None)
    if topo is None:
        return False
    kind = topo.get("kind", "colocated")
    if kind not in ("colocated", "disaggregated"):
        raise ConfigError("topology.kind", f"must be colocated or disaggregated, got {kind!r}")
    return kind == "disaggregated"


def _positive_int(v, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {v!r}")
    return int(v)


def pool_config(cfg, stage: str) -> DictConfig:
    """The composed config with the ``stage`` pool's GPU, TP and batching in place of the
    run's (what :func:`llmos_sim.run.build_replica_factory` reads)."""
    pool = cfg.topology.get(stage, None) or {}
    out = copy.deepcopy(cfg)
    with open_dict(out):
        gpu = pool.get("gpu", None)
        if gpu is not None:
            out.gpu = ({"_target_": "llmos_sim.serving.specs.gpu_spec", "name": str(gpu)} if isinstance(gpu, str)
                       else gpu)
        tp = pool.get("tp", None)
        if tp is not None:
            if out.get("serving", None) is None:
                out.serving = {}
            out.serving.tp = _positive_int(tp, f"topology.{stage}.tp")
        if pool.get("batching", None) is not None:
            out.batching = pool.batching
    return out


def link_of(topo) -> KVLink:
    link = topo.get("link", None) or {}
    bw, lat = link.get("bw_bytes_s", None), link.get("latency_s", None)
    for key, v in (("bw_bytes_s", bw), ("latency_s", lat)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"topology.link.{key}", f"must be a number, got {v!r}")
    return KVLink(LINK_BW_BYTES_S if bw is None else float(bw), LINK_LATENCY_S if lat is None else float(lat),
                  str(link.get("sharing", None) or "fair"), str(link.get("scope", None) or "source"))


def transfer_table(log: E.EventLog) -> pd.DataFrame:
    """One row per KV transfer: request, from/to replica, bytes, its first token's time, start
    and end times, the wait for the decode replica's blocks (``wait_s``: first token to start)
    and the transfer's duration (from the ``kv_transfer`` and ``req_first_token`` records)."""
    start, end, first = {}, {}, {}
    for t, kind, rid, data in log.records:
        if kind == E.KV_TRANSFER:
            (start if data[0] == "start" else end)[rid] = (t, data)
        elif kind == E.REQ_FIRST_TOKEN and rid not in first:
            first[rid] = t
    rows = [(rid, d[1], d[2], d[3], first.get(rid, math.nan), t0, end[rid][0] if rid in end else math.nan)
            for rid, (t0, d) in start.items()]
    df = pd.DataFrame(rows, columns=["request", "from_replica", "to_replica", "nbytes", "first_token_s", "start_s",
                                     "end_s"])
    df["wait_s"] = df["start_s"] - df["first_token_s"]
    df["transfer_s"] = df["end_s"] - df["start_s"]
    return df


def simulate(cfg, seed: int, progress: bool = False, backend=None) -> ServingResult:
    """Run the disaggregated service described by ``cfg`` (``topology.kind: disaggregated``)
    with ``seed`` (requests from the run's ``serving`` seed stream, as a co-located run's);
    the same result as :func:`llmos_sim.serving.system.simulate`, plus a ``transfers`` table
    and the pools' facts in the summary."""
    from hydra.utils import instantiate

    from llmos_sim.run import build_replica_factory, rngs

    topo = cfg.topology
    if backend is not None and backend.serving_replica(instantiate(cfg.model)) is not None:
        raise ValueError("topology=disaggregated runs on simulated replicas (backend=simpy): a real backend's "
                         "replicas cannot take a prompt's KV from another replica")
    n = {st: _positive_int((topo.get(st, None) or {}).get("replicas", 1), f"topology.{st}.replicas") for st in STAGES}
    link = link_of(topo)
    factories = {st: build_replica_factory(pool_config(cfg, st), backend) for st in STAGES}
    link = dataclasses.replace(link, bw_bytes_s=link.bw_bytes_s * min(f.tp for f in factories.values()))  # per GPU pair
    routers = {}
    for st in STAGES:
        rc = (topo.get(st, None) or {}).get("router", None)
        routers[st] = instantiate(rc if rc is not None else cfg.router)  # one instance per stage
    spec = factories["prefill"].spec  # (the settings both pools share: stop time, SLOs)
    env = backend.environment() if backend is not None else None
    with sparse_gc():
        requests = instantiate(cfg.workload).requests(rngs(int(seed))["serving"])
        system = DisaggSystem(requests, factories["prefill"], factories["decode"], routers["prefill"],
                              routers["decode"], n["prefill"], n["decode"], link,
                              factories["prefill"].model.kv_bytes_per_token, progress=progress, env=env)
        system.run(spec.max_time_s)
        res = build_result(system.log, spec.slo_ttft_s, spec.slo_tpot_s, spec.slo_e2e_s)
    tr = transfer_table(system.log)
    res.tables["transfers"] = tr
    res.summary.update({
        "prefill_replicas": float(n["prefill"]), "decode_replicas": float(n["decode"]),
        "gpus": float(sum(n[st] * factories[st].tp for st in STAGES)),
        "kv_transfers": float(len(tr)),
        "kv_transfer_s_mean": float(tr["transfer_s"].mean()) if len(tr) else math.nan,
        "kv_transfer_wait_s_mean": float(tr["wait_s"].mean()) if len(tr) else math.nan,
        "kv_transfer_wait_max_queue": float(system.max_pending),
        "prefill_held_blocks_max": float(system.max_held_blocks),
        "kv_transfer_bytes": float(tr["nbytes"].sum()) if len(tr) else 0.0,
    })
    if system.decode[0].kv.prefix_caching:  # prompt tokens the decode replica had cached: not sent
        bpt = system.kv_bytes_per_token
        prompt = {r.id: r.prompt_tokens for r in system.requests}
        tr["cached_tokens"] = [prompt[rid] - nb // bpt for rid, nb in zip(tr["request"], tr["nbytes"])]
        res.summary["kv_transfer_cached_tokens"] = float(system.cached_tokens)
    res.extra.update(kv_blocks_per_replica=system.prefill[0].kv.total_blocks,
                     kv_blocks_decode=system.decode[0].kv.total_blocks,
                     kv_capacity_bytes=factories["prefill"].capacity_bytes, replicas=system.all_replicas)
    return res
