"""Shortest job first (non-preemptive) on known (oracle) durations."""
from __future__ import annotations

from typing import Iterable

from llmos_sim.policies.scheduling.base import Placement, QueueScheduler, oracle_duration_s
from llmos_sim.types import Job
from llmos_sim.view import ClusterView


class SJF(QueueScheduler):
    """Waiting jobs by their oracle duration (ties: arrival, then id). Non-preemptive: a
    running job always finishes. Skips jobs that do not fit by default (``blocking=False``),
    as SJF schedulers in the literature do."""

    def __init__(self, placement: Placement | None = None, blocking: bool = False, elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)
        self._keys: dict[int, tuple] = {}  # job id -> sort key; a job's oracle duration never changes

    def order(self, view: ClusterView) -> Iterable[Job]:
        keys = self._keys
        for j in view.queue:
            if j.id not in keys:
                keys[j.id] = self.order_key(j, view)
        return sorted(view.queue, key=lambda j: keys[j.id])

    def order_key(self, job: Job, view: ClusterView) -> tuple:
        return (oracle_duration_s(job, view), job.arrival_s, job.id)
