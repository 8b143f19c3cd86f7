"""The SimPy cluster backend: a task takes ``overhead + T_d`` seconds of simulated time."""
from __future__ import annotations

import simpy

from llmos_sim.backend import Backend
from llmos_sim.kernel import Instant, push_at, queue_of
from llmos_sim.formulas import distributed_time_s
from llmos_sim.backends.simpy_cluster.cost import TrainingCost
from llmos_sim.types import Task


class SimPyCluster(Backend):
    """Waits the cost model's time. Preemption needs nothing here: the engine ignores the
    stale completion event of a cut-short task."""

    def __init__(self, cost_model: TrainingCost | None = None) -> None:
        self.cost_model = cost_model if cost_model is not None else TrainingCost()

    def rate_flops_s(self, task: Task) -> float:
        return self.cost_model.rate_flops_s(task, self.cluster)

    def run(self, task: Task) -> simpy.Event:
        return self.start(task)[0]

    def start(self, task: Task) -> tuple[simpy.Event, float]:
        """Completion at ``now + overhead + T_d`` with ``T_d = T / Σ C_i · factor``; rate
        ``Σ C_i / factor``. Capacity and factor are computed once per task."""
        cm, cluster = self.cost_model, self.cluster
        cap = cm.capacity_flops(task, cluster)
        factor = cm.factor(task, cluster)
        dt = task.overhead_s + distributed_time_s(task.work_flops, (cap,), factor)
        return push_at(self._queue, self.env.now + dt, Instant()), cap / factor

    def bind(self, env: simpy.Environment, cluster) -> None:
        super().bind(env, cluster)
        self._queue = queue_of(env)


