"""The backend seam: execute a :class:`~llmos_sim.types.Task` under a grant, signal completion.

Backends differ only in how work takes time. The SimPy cluster model computes the time from
the seed's ``T_d = T / Σ C_i`` and waits on it; the torch backend runs real kernels and reports
measured time. Both return a SimPy event that fires when the task's work is done; the engine
never asks how.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import simpy

from llmos_sim.kernel import Instant, push_at, queue_of  # noqa: F401  (re-exported: their old home)
from llmos_sim.types import Cluster, Task


class Backend(ABC):
    """Executes tasks. One instance per run; :meth:`bind` is called once before the run."""

    #: True when the control plane must run in wall-clock time (real execution)
    realtime: bool = False

    def environment(self) -> simpy.Environment:
        """The SimPy environment the engine runs in (simulated time by default)."""
        return simpy.Environment()

    def serving_replica(self, model: Any) -> Any:
        """For ``mode: serving``: a factory with :class:`~llmos_sim.serving.replica.Replica`'s
        signature whose replicas execute their iterations (real execution), given the run's
        model spec; ``None`` (the default) keeps the simulated replica, whose iterations take
        the cost model's time."""
        return None

    def bind(self, env: simpy.Environment, cluster: Cluster) -> None:
        self.env = env
        self.cluster = cluster

    def attach(self, log: Any, pools: Any) -> None:
        """The run's event log and per-device memory pools, once the engine has built them.
        Real backends materialise a job's memory from its allocations and log measurements;
        the simulated one needs neither."""

    def done_flops(self, task: Task) -> float | None:
        """FLOPs ``task`` really finished, if this backend measures progress (real execution);
        ``None`` lets the engine use its rate × elapsed-time estimate."""
        return None

    @abstractmethod
    def rate_flops_s(self, task: Task) -> float:
        """Expected progress rate of ``task`` once running (FLOP/s), for progress accounting."""

    @abstractmethod
    def run(self, task: Task) -> simpy.Event:
        """Start ``task`` now; the returned event fires when its work is done."""

    def start(self, task: Task) -> tuple[simpy.Event, float]:
        """Start ``task``: its completion event and expected rate (FLOP/s). The engine calls
        this; the default combines :meth:`run` and :meth:`rate_flops_s`, and a backend that
        computes both together (the SimPy model) overrides it to do the work once."""
        return self.run(task), self.rate_flops_s(task)

    def cancel(self, task: Task) -> None:
        """``task`` was preempted or resized: stop it (the engine ignores its event)."""

    def close(self) -> dict[str, Any]:
        """End of run; returns facts worth recording (e.g. measured rates)."""
        return {}
