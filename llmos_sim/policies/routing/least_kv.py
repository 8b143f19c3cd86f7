"""Least-KV-usage routing (ties: fewer waiting, then lowest index)."""
from __future__ import annotations

from typing import Sequence

from llmos_sim.policies.routing.base import ReplicaLoad, Router


class LeastKV(Router):
    """The replica whose KV cache is least full."""

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:
        return min(loads, key=lambda l: (l.kv_used_frac, l.waiting, l.index)).index
