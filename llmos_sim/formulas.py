"""The seed document's three formulas (section 4), as pure functions.

- distributed computing: ``T_d = T / Σ C_i``
- dynamic resource scheduling: ``R_i* = min(R_i, R_i^d)``
- memory-pool management: ``M_u* = min(M, M_u + M_d)``

Everything else in the simulator that computes a time, a grant or a pool level goes through
these (or, for memory, through a pool policy that the ideal pool reduces to this formula).
"""
from __future__ import annotations

from typing import Iterable, Mapping


def distributed_time_s(work_flops: float, capacities_flops: Iterable[float], factor: float = 1.0) -> float:
    """``T_d = T / Σ C_i`` times a placement/communication ``factor`` (exactly 1.0 by default)."""
    total = float(sum(capacities_flops))
    if total <= 0:
        raise ValueError("distributed_time_s: the granted devices have no capacity (Σ C_i = 0)")
    return work_flops / total * factor


def grant(available: Mapping[str, float], demanded: Mapping[str, float]) -> dict[str, float]:
    """``R_i* = min(R_i, R_i^d)`` for each resource type the job demands.

    A type the cluster does not have counts as 0 available.
    """
    return {k: min(float(available.get(k, 0.0)), float(v)) for k, v in demanded.items()}


def pool_usage_bytes(capacity_bytes: int, used_bytes: int, demand_bytes: int) -> int:
    """``M_u* = min(M, M_u + M_d)``: the ideal pool's usage after a request."""
    return min(capacity_bytes, used_bytes + demand_bytes)
