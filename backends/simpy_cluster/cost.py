"""Training cost model: ``T_d = T / Σ C_i`` over the granted devices, times a factor.

The factor models placement and communication; it is exactly 1.0 by default so the seed's
formula holds exactly. :class:`CrossNodeSlowdown` is the simplest non-trivial one.
"""
from __future__ import annotations

from llmos_sim.formulas import distributed_time_s
from llmos_sim.types import Cluster, Task


class CostModel:
    """``T_d = T / Σ (C_i · share_i) · factor(placement)``; ``factor`` = 1.0 here."""

    def capacities(self, task: Task, cluster: Cluster) -> list[float]:
        share = task.share_milli / 1000
        devs = cluster.devices
        return [devs[d].spec.flops * share for d in task.devices]

    def factor(self, task: Task, cluster: Cluster) -> float:
        """Placement/communication slowdown (>= 1 slows the job down). Exactly 1.0 here."""
        return 1.0

    def compute_s(self, task: Task, cluster: Cluster) -> float:
        """Seconds of compute for ``task.work_flops`` (no overheads)."""
        return distributed_time_s(task.work_flops, self.capacities(task, cluster), self.factor(task, cluster))

    def rate_flops_s(self, task: Task, cluster: Cluster) -> float:
        return sum(self.capacities(task, cluster)) / self.factor(task, cluster)


class CrossNodeSlowdown(CostModel):
    """A job spread over ``k`` > 1 nodes runs ``1 + per_extra_node · (k − 1)`` times slower."""

    def __init__(self, per_extra_node: float = 0.0) -> None:
        if per_extra_node < 0:
            raise ValueError(f"per_extra_node must be >= 0, got {per_extra_node}")
        self.per_extra_node = per_extra_node

    def factor(self, task: Task, cluster: Cluster) -> float:
        k = len({cluster.devices[d].node for d in task.devices})
        return 1.0 + self.per_extra_node * (k - 1)
