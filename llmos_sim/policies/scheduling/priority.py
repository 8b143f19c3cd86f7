"""Strict priority: higher ``Job.priority`` first, then arrival."""
from __future__ import annotations

from typing import Iterable

from llmos_sim.policies.scheduling.base import Placement, QueueScheduler
from llmos_sim.types import Job
from llmos_sim.view import ClusterView


class PriorityFIFO(QueueScheduler):
    """Waiting jobs by ``Job.priority`` (higher first), then arrival, then id. With the default
    ``blocking=True`` a high-priority job that does not fit holds lower ones back until it
    does (no starvation of the important job); ``blocking=False`` lets lower ones that fit go
    ahead. Non-preemptive. On the shared cluster, training jobs and services' replica jobs
    compete by their priorities under it."""

    def __init__(self, placement: Placement | None = None, blocking: bool = True, elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)

    def order(self, view: ClusterView) -> Iterable[Job]:
        return sorted(view.queue, key=lambda j: self.order_key(j, view))

    def order_key(self, job: Job, view: ClusterView) -> tuple:
        return (-job.priority, job.arrival_s, job.id)
