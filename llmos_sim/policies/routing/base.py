"""Routers: which replica serves an arriving request. A load snapshot per replica in, an
index out; routers never touch replicas."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What a router sees of one replica at a request's arrival."""

    index: int
    outstanding: int  #: requests routed here and not finished or failed (running + waiting)
    kv_used_frac: float  #: KV blocks held / all blocks
    waiting: int  #: requests queued, not running


class Router:
    """Base router: pick a replica for ``request`` given the loads (one per replica)."""

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:  # pragma: no cover - interface
        raise NotImplementedError
