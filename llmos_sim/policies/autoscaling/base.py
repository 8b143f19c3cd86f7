"""Autoscalers: how many replicas a service on the shared cluster asks for. A load snapshot
of the service in, a scale step out; autoscalers never touch replicas or the cluster (the
service host applies the step: it submits a replica job to the cluster scheduler, or drains a
replica)."""
from __future__ import annotations

import math
from dataclasses import dataclass


def per_ready(waiting: int, n_ready: int) -> float:
    """``waiting / n_ready`` (inf when none is ready but some wait, 0 when none waits)."""
    if n_ready:
        return waiting / n_ready
    return math.inf if waiting else 0.0


@dataclass(frozen=True)
class StageLoad:
    """One pool of a disaggregated service (``stage``: ``prefill`` or ``decode``) at a decision:
    its ready replicas and its own (``n_min``, never drained), the requests waiting in it
    (decode: also those whose KV waits for its blocks), those it holds (prefill: until their KV
    has crossed to the decode pool), and the share of the requests ended in the window that
    met this stage's SLO (prefill: TTFT; decode: TPOT; a failed request misses both; NaN when
    none). Replicas provisioning or queued are the service's (:class:`ServiceLoad`): one at a
    time."""

    stage: str
    n_ready: int
    n_min: int
    waiting: int
    outstanding: int
    slo_attainment: float = math.nan

    @property
    def queue_per_ready(self) -> float:
        """Waiting requests per ready replica of the pool (inf when none is ready but some wait)."""
        return per_ready(self.waiting, self.n_ready)


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
    #: a disaggregated service's pools (prefill, then decode); empty for a co-located one
    stages: tuple[StageLoad, ...] = ()

    @property
    def n_asked(self) -> int:
        """Replicas the service has or has asked for (ready, provisioning, queued); draining
        ones are on their way out."""
        return self.n_ready + self.n_provisioning + self.n_queued

    @property
    def n_held(self) -> int:
        """Replicas that hold or will hold devices: :attr:`n_asked` and the draining ones (a
        draining replica keeps its devices until its last request ends). ``max_replicas``
        caps this count."""
        return self.n_asked + self.n_draining

    @property
    def queue_per_ready(self) -> float:
        """Waiting requests per ready replica (inf when none is ready but some wait)."""
        return per_ready(self.waiting, self.n_ready)


@dataclass(frozen=True)
class ScaleStep:
    """An autoscaler's answer: ``delta`` = +1 (ask for one more replica), -1 (drain one), 0;
    ``reason`` says why (logged with the ``scale`` record); ``stage``: which pool of a
    disaggregated service (``prefill`` or ``decode``; None for a co-located one)."""

    delta: int = 0
    reason: str = ""
    stage: str | None = None


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
