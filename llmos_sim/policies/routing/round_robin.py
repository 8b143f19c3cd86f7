"""Round-robin routing: replicas in turn, whatever their load."""
from __future__ import annotations

from typing import Sequence

from llmos_sim.policies.routing.base import ReplicaLoad, Router


class RoundRobin(Router):
    """Request ``k`` (in arrival order) goes to replica ``k mod n``."""

    uses_loads = False
    uses_kv = False
    routes_ahead = True

    def __init__(self) -> None:
        self._next = 0

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:
        i = self._next % len(loads)
        self._next = i + 1
        return i
