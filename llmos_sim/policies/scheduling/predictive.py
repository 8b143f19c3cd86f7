"""Predicted-duration scheduling (QSSF-style), fed by the seed's feedback step.

The engine reports every completed job in ``view.finished`` (oldest first). An
:class:`OnlinePredictor` learns from them incrementally; :class:`PredictedSJF` orders the
queue by the predicted *service* (duration × GPUs, Helios's "quasi-shortest-service-first")
or by predicted duration alone.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from llmos_sim.policies.scheduling.base import Placement, QueueScheduler
from llmos_sim.types import Job
from llmos_sim.view import ClusterView, FinishedJob


class OnlinePredictor:
    """Running mean of observed run time (``finish − first start``, s) per ``(tenant, gpus)``,
    falling back to the tenant's mean, then the global mean, then ``default_s``. A user's
    ``duration_hint_s`` is used only while there is no history at all (``use_hints``).

    :meth:`observe` reads only the finished jobs it has not seen (O(new) per pass)."""

    def __init__(self, default_s: float = 3600.0, use_hints: bool = True) -> None:
        self.default_s = float(default_s)
        self.use_hints = use_hints
        self.seen = 0
        self.by_key: dict[tuple[str, int], list[float]] = {}  # key -> [sum_s, count]
        self.by_tenant: dict[str, list[float]] = {}
        self.total = [0.0, 0.0]

    def observe(self, finished: Sequence[FinishedJob]) -> None:
        """Learn from ``finished[self.seen:]``."""
        for f in finished[self.seen:]:
            d = f.finish_s - f.start_s
            for table, k in ((self.by_key, (f.job.tenant, f.job.gpus)), (self.by_tenant, f.job.tenant)):
                acc = table.setdefault(k, [0.0, 0.0])
                acc[0] += d
                acc[1] += 1
            self.total[0] += d
            self.total[1] += 1
        self.seen = len(finished)

    def predict_s(self, job: Job) -> float:
        """Predicted run time of ``job`` (s)."""
        for table, k in ((self.by_key, (job.tenant, job.gpus)), (self.by_tenant, job.tenant)):
            acc = table.get(k)
            if acc:
                return acc[0] / acc[1]
        if self.total[1]:
            return self.total[0] / self.total[1]
        if self.use_hints and job.duration_hint_s is not None:
            return float(job.duration_hint_s)
        return self.default_s


class PredictedSJF(QueueScheduler):
    """Shortest predicted job first, non-preemptive, skipping jobs that do not fit.

    ``by="service"`` orders by predicted duration × GPUs (QSSF); ``by="duration"`` by
    predicted duration. Ties by arrival, then id. ``default_s``: the prediction before any
    job has finished."""

    def __init__(self, placement: Placement | None = None, by: str = "service", default_s: float = 3600.0,
                 blocking: bool = False, elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)
        if by not in ("service", "duration"):
            raise ValueError(f"PredictedSJF: by must be 'service' or 'duration', got {by!r}")
        self.by = by
        self.predictor = OnlinePredictor(default_s)

    def order(self, view: ClusterView) -> Iterable[Job]:
        self.predictor.observe(view.finished)
        p = self.predictor.predict_s
        if self.by == "service":
            return sorted(view.queue, key=lambda j: (p(j) * j.gpus, j.arrival_s, j.id))
        return sorted(view.queue, key=lambda j: (p(j), j.arrival_s, j.id))
