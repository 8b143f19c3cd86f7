"""The SimPy cluster backend: a task takes ``overhead + T_d + tail`` seconds of simulated time."""
from __future__ import annotations

import simpy

from llmos_sim.backend import Backend, schedule_at
from llmos_sim.backends.simpy_cluster.cost import CostModel
from llmos_sim.types import Task


class SimPyCluster(Backend):
    """Waits the cost model's time. Preemption needs nothing here: the engine ignores the
    stale completion event of a cut-short task."""

    def __init__(self, cost_model: CostModel | None = None) -> None:
        self.cost_model = cost_model if cost_model is not None else CostModel()

    def rate_flops_s(self, task: Task) -> float:
        return self.cost_model.rate_flops_s(task, self.cluster)

    def run(self, task: Task) -> simpy.Event:
        env = self.env
        dt = task.overhead_s + self.cost_model.compute_s(task, self.cluster)
        return schedule_at(env, simpy.Event(env), env.now + dt)
