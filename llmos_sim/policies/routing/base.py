"""Routers: which replica serves an arriving request. A load snapshot per replica in, an
index out; routers never touch replicas."""
from __future__ import annotations

from typing import Sequence


class ReplicaLoad:
    """What a router sees of one replica at a request's arrival.

    A plain slotted class, not a frozen dataclass: one is built per replica per arrival, so
    construction is kept cheap; read-only by contract."""

    __slots__ = ("index", "outstanding", "kv_used_frac", "waiting", "cached_tokens")

    def __init__(self, index: int, outstanding: int, kv_used_frac: float, waiting: int, cached_tokens: int = 0) -> None:
        self.index = index
        self.outstanding = outstanding  #: requests routed here and not finished or failed (running + waiting)
        self.kv_used_frac = kv_used_frac  #: KV blocks held / all blocks
        self.waiting = waiting  #: requests queued, not running
        #: prompt tokens of this request cached here now (longest cached prefix of its hash
        #: blocks); filled only for routers that declare ``uses_prefix``, else 0
        self.cached_tokens = cached_tokens

    def __repr__(self) -> str:
        return (f"ReplicaLoad(index={self.index!r}, outstanding={self.outstanding!r}, "
                f"kv_used_frac={self.kv_used_frac!r}, waiting={self.waiting!r}, cached_tokens={self.cached_tokens!r})")


class Router:
    """Base router: pick a replica for ``request`` given the loads (one per replica).

    ``uses_prefix`` (class attribute): the router reads :attr:`ReplicaLoad.cached_tokens`, so
    the serving system looks the request's prefix up in every replica's cache (only then);
    ``uses_loads``, ``uses_kv``: what else it reads (both by default), so that what it does not
    read is not computed; ``routes_ahead``: its choices can be made up front."""

    uses_prefix: bool = False
    #: the router reads the loads (False: only how many there are — the serving system then
    #: passes placeholders and reads no replica's state, e.g. round robin)
    uses_loads: bool = True
    #: the router reads :attr:`ReplicaLoad.kv_used_frac` (False: it is NaN, not computed — a
    #: replica in a fast-forwarded span computes it from the span's iterations so far)
    uses_kv: bool = True
    #: the router's choice depends only on the requests it was asked about, in arrival order —
    #: not on any replica's state nor on when it is asked (round robin; a hash of the request
    #: id) —, so the serving system may route every request before the run starts and each
    #: replica plans its decode spans up to its own next arrival (see
    #: :class:`~llmos_sim.serving.system.ServingSystem`); only with ``uses_loads`` false
    routes_ahead: bool = False

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:  # pragma: no cover - interface
        raise NotImplementedError
