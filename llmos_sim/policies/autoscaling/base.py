"""Autoscalers: how many replicas a service on the shared cluster asks for. A load snapshot
of the service in, a scale step out; autoscalers never touch replicas or the cluster (the
service host applies the step: it submits a replica job to the cluster scheduler, or drains a
replica)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceLoad:
    """What an autoscaler sees of one service at a decision.

    Replica counts: ``n_ready`` take requests; ``n_provisioning`` were granted devices and
    load their weights; ``n_draining`` finish their requests before their job ends;
    ``n_queued`` were asked for and wait for the cluster scheduler. ``n_min`` is the count the
    service's own job holds (never drained).
    """

    now_s: float
    n_ready: int
    n_provisioning: int
    n_draining: int
    n_queued: int
    n_min: int
    #: requests routed to ready replicas and not yet admitted to a batch (summed over them)
    waiting: int
    #: requests routed to ready replicas and not finished or failed (running + waiting)
    outstanding: int
    #: share of the requests that ended in the last ``slo_window_s`` that met both the TTFT and
    #: the TPOT SLO (a failed request misses); NaN when none ended in the window
    slo_attainment: float = math.nan
    #: requests that ended in the window (what ``slo_attainment`` is measured on)
    n_slo_samples: int = 0

    @property
    def n_asked(self) -> int:
        """Replicas the service has or has asked for (ready, provisioning, queued); draining
        ones are on their way out."""
        return self.n_ready + self.n_provisioning + self.n_queued

    @property
    def queue_per_ready(self) -> float:
        """Waiting requests per ready replica (inf when none is ready but some wait)."""
        if self.n_ready:
            return self.waiting / self.n_ready
        return math.inf if self.waiting else 0.0


@dataclass(frozen=True)
class ScaleStep:
    """An autoscaler's answer: ``delta`` = +1 (ask for one more replica), -1 (drain one), 0;
    ``reason`` says why (logged with the ``scale`` record)."""

    delta: int = 0
    reason: str = ""


class Autoscaler:
    """Base autoscaler: asked every ``interval_s`` seconds while the service runs.

    ``slo_window_s``: how far back :attr:`ServiceLoad.slo_attainment` looks. The host never
    asks for more than one pending replica at a time (a scale-up waits until the previous one
    is ready), never drains below ``ServiceLoad.n_min``, and ignores a step it cannot apply.
    """

    interval_s: float = 10.0
    slo_window_s: float = 60.0

    def decide(self, load: ServiceLoad) -> ScaleStep:  # pragma: no cover - interface
        raise NotImplementedError
