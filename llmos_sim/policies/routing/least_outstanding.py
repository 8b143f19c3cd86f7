"""Least-outstanding-requests routing (ties: lowest index)."""
from __future__ import annotations

from typing import Sequence

from llmos_sim.policies.routing.base import ReplicaLoad, Router


class LeastOutstanding(Router):
    """The replica with the fewest requests in flight (running + waiting)."""

    uses_kv = False

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:
        return min(loads, key=lambda l: (l.outstanding, l.index)).index
