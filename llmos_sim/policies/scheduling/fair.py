"""Fair sharing across tenants: Dominant Resource Fairness (DRF), optionally weighted."""
from __future__ import annotations

import heapq
from typing import Mapping

from llmos_sim.policies.scheduling.base import Decision, Placement, QueueScheduler, Start
from llmos_sim.types import FULL_DEVICE_MILLI, GPU, Job
from llmos_sim.view import ClusterView


class DRF(QueueScheduler):
    """Weighted Dominant Resource Fairness over ``Job.tenant`` (non-preemptive).

    A tenant's dominant share is ``max_r used_r / total_r`` over resource types (gpu, cpu,
    host memory) of its running jobs, divided by its ``weights[tenant]`` (default 1.0). Each
    pass repeatedly serves the tenant with the lowest weighted dominant share: its oldest
    waiting job that can start now starts, and the tenant's share grows by that job's
    dominant share. A tenant none of whose jobs can start drops out of the pass. With one
    resource type (gpus only) this is weighted max-min fair sharing of GPUs.
    """

    def __init__(self, placement: Placement | None = None, weights: Mapping[str, float] | None = None,
                 elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=False, elastic_grow=elastic_grow)
        self.weights = {str(k): float(v) for k, v in dict(weights or {}).items()}

    def dominant_share(self, job: Job, n_devices: int, view: ClusterView) -> float:
        """The dominant share of ``job`` on ``n_devices`` (unweighted, in [0, 1])."""
        totals = view.cluster.totals()
        s = n_devices * job.gpu_milli / FULL_DEVICE_MILLI / totals[GPU]
        scale = n_devices / job.gpus
        for k, v in job.demand.items():
            if totals.get(k, 0.0) > 0:
                s = max(s, v * scale / totals[k])
        return s

    def usage(self, view: ClusterView) -> dict[str, float]:
        """Weighted dominant share per tenant of the running jobs."""
        u: dict[str, float] = {}
        for r in view.running.values():
            t = r.job.tenant
            u[t] = u.get(t, 0.0) + self.dominant_share(r.job, len(r.devices), view)
        return u

    def decide(self, view: ClusterView) -> Decision:
        queues: dict[str, list[Job]] = {}
        for j in view.queue:
            queues.setdefault(j.tenant, []).append(j)
        if not queues:
            return Decision()
        use = self.usage(view)
        heap = [(use.get(t, 0.0) / self.weights.get(t, 1.0), t, 0) for t in queues]
        heapq.heapify(heap)
        starts: list[Start] = []
        while heap:
            share, t, i = heapq.heappop(heap)
            jobs = queues[t]
            while i < len(jobs):
                job = jobs[i]
                i += 1
                devs = self.try_start(job, view)
                if devs is not None:
                    starts.append(Start(job.id, devs))
                    share += self.dominant_share(job, len(devs), view) / self.weights.get(t, 1.0)
                    if i < len(jobs):
                        heapq.heappush(heap, (share, t, i))
                    break
        resizes = self.grow(view) if self.elastic_grow and view.free.total and view.under_demand else ()
        return Decision(starts=tuple(starts), resizes=tuple(resizes))
