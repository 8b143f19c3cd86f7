"""Heterogeneity-aware placement of jobs onto device types (Gavel-style, non-preemptive).

Throughput model: job ``j`` runs on device type ``t`` at ``C_t · a(j, t)`` FLOP/s per device,
where ``a`` is an optional per-(job class, type) affinity (Gavel's measured throughput matrix,
normalised to peak; default 1.0) — the same model as the cost model
:class:`~llmos_sim.backends.simpy_cluster.cost.DeviceAffinity`, so pass the same ``affinity``
to both. A job's *normalised throughput* on ``t`` is its speed there over its speed on its
best type.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

from llmos_sim.hardware import affinity_of
from llmos_sim.policies.scheduling.base import Placement, QueueScheduler
from llmos_sim.types import FULL_DEVICE_MILLI, Job
from llmos_sim.view import ClusterView


class HeterogeneityAware(QueueScheduler):
    """Each job goes to the free device type where its normalised throughput is highest.

    - ``affinity``: ``{class: {device type: multiplier}}`` (class ``"*"`` = all jobs)
    - ``objective``: ``"throughput"`` serves jobs in arrival order, each on its fastest type
      with room; ``"max_min"`` serves first the jobs that lose the most on their worst type
      (largest best/worst speed ratio), so the scarce fast devices go where they matter and the
      minimum normalised throughput over jobs is as high as the greedy pass can make it
    - ``min_normalised``: never start a job on a type below this fraction of its best speed
      (it waits instead); 0 = take any type
    - a job pinned by ``Job.device_type`` only considers that type

    Jobs are placed within one type (``placement`` picks the devices of that type).
    """

    def __init__(self, placement: Placement | None = None, affinity: Mapping[str, Mapping[str, float]] | None = None,
                 objective: str = "throughput", min_normalised: float = 0.0, blocking: bool = False,
                 elastic_grow: bool = False) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)
        if objective not in ("throughput", "max_min"):
            raise ValueError(f"HeterogeneityAware: objective must be 'throughput' or 'max_min', got {objective!r}")
        self.affinity = {str(k): {str(t): float(x) for t, x in dict(v).items()} for k, v in dict(affinity or {}).items()}
        self.objective = objective
        self.min_normalised = float(min_normalised)
        self._types: dict[str, float] | None = None
        self._node_type: list[str] = []

    def _init(self, view: ClusterView) -> None:
        self._types = {}
        for d in view.cluster.devices:
            self._types[d.spec.name] = d.spec.flops
        self._node_type = [view.cluster.devices[n.devices[0]].spec.name if n.devices else "" for n in view.cluster.nodes]

    def speeds(self, job: Job) -> list[tuple[float, str]]:
        """``(speed FLOP/s per device, type)`` for the types ``job`` may use, fastest first."""
        types = self._types if job.device_type is None else {job.device_type: self._types.get(job.device_type, 0.0)}
        return sorted(((c * affinity_of(self.affinity, job.name, t), t) for t, c in types.items() if c > 0),
                      key=lambda x: (-x[0], x[1]))

    def order(self, view: ClusterView) -> Iterable[Job]:
        if self._types is None:
            self._init(view)
        if self.objective == "throughput":
            return view.queue

        def sensitivity(j: Job) -> float:
            s = self.speeds(j)
            return s[0][0] / s[-1][0] if s else 1.0

        return sorted(view.queue, key=lambda j: (-sensitivity(j), j.arrival_s, j.id))

    def free_by_type(self, view: ClusterView) -> dict[str, int]:
        """Free whole devices per type after this pass's plans (nodes are single-type)."""
        out: dict[str, int] = {}
        free = view.free
        for k in range(1, free.base.max_per_node + 1):
            for n in free.nodes_with(k):
                t = self._node_type[n]
                out[t] = out.get(t, 0) + k
        return out

    def try_start(self, job: Job, view: ClusterView) -> tuple[int, ...] | None:
        if self._types is None:
            self._init(view)
        speeds = self.speeds(job)
        if not speeds:
            return None
        best = speeds[0][0]
        fractional = job.gpu_milli < FULL_DEVICE_MILLI
        free = None if fractional else self.free_by_type(view)
        n = job.gpus
        if not view.resources_fit(job, n):
            return None
        for s, t in speeds:
            if s < self.min_normalised * best:
                break
            if free is not None and free.get(t, 0) < n:
                continue
            pinned = job if job.device_type == t else dataclasses.replace(job, device_type=t)
            devices = self.placement.place(pinned, n, view)
            if devices is not None:
                view.plan(job, devices)
                return devices
        return None
