"""Threshold autoscaling, in the manner of Kubernetes' horizontal pod autoscaler and KServe /
Knative's concurrency target: scale up on a long queue or missed SLOs, down after a quiet
spell, with a cooldown between changes."""
from __future__ import annotations

import math

from llmos_sim.policies.autoscaling.base import Autoscaler, ScaleStep, ServiceLoad


class ThresholdAutoscaler(Autoscaler):
    """One replica more or less at a time, between the service's own count and ``max_replicas``.

    Up (+1) when ``waiting / ready > up_queue_per_replica``, or when the recent SLO attainment
    (over the last ``slo_window_s``, at least ``min_slo_samples`` requests) is below
    ``up_slo_attainment`` (``null`` turns that trigger off). Down (-1) when the service has been
    quiet for ``down_idle_s``: at every decision over that span, its outstanding requests would
    have fit in one replica fewer at ``down_outstanding_per_replica`` each, and nothing waited.
    ``cooldown_s``: no change within this long of the last one (up or down). Decisions come
    every ``interval_s``.

    State: the time of the last change and the start of the current quiet spell (a policy that
    remembers, like round-robin routing; one instance per service).
    """

    def __init__(self, max_replicas: int, up_queue_per_replica: float = 4.0, up_slo_attainment: float | None = 0.9,
                 min_slo_samples: int = 20, down_idle_s: float = 120.0, down_outstanding_per_replica: float = 4.0,
                 cooldown_s: float = 60.0, interval_s: float = 10.0, slo_window_s: float = 60.0) -> None:
        def pos(name, v, strict=True):
            v = float(v)
            if not (v > 0 if strict else v >= 0) or not math.isfinite(v):
                raise ValueError(f"autoscaler.{name} must be a finite number {'>' if strict else '>='} 0, got {v!r}")
            return v

        self.max_replicas = int(max_replicas)
        if self.max_replicas < 1:
            raise ValueError(f"autoscaler.max_replicas must be >= 1, got {max_replicas!r}")
        self.up_queue_per_replica = pos("up_queue_per_replica", up_queue_per_replica, strict=False)
        if up_slo_attainment is not None and not 0.0 <= float(up_slo_attainment) <= 1.0:
            raise ValueError(f"autoscaler.up_slo_attainment must be in [0, 1] or null, got {up_slo_attainment!r}")
        self.up_slo_attainment = None if up_slo_attainment is None else float(up_slo_attainment)
        self.min_slo_samples = int(min_slo_samples)
        self.down_idle_s = pos("down_idle_s", down_idle_s, strict=False)
        self.down_outstanding_per_replica = pos("down_outstanding_per_replica", down_outstanding_per_replica, strict=False)
        self.cooldown_s = pos("cooldown_s", cooldown_s, strict=False)
        self.interval_s = pos("interval_s", interval_s)
        self.slo_window_s = pos("slo_window_s", slo_window_s)
        self._last_change_s = -math.inf
        self._quiet_since_s: float | None = None

    def decide(self, load: ServiceLoad) -> ScaleStep:
        now = load.now_s
        quiet = (load.waiting == 0 and load.n_ready > load.n_min
                 and load.outstanding <= (load.n_ready - 1) * self.down_outstanding_per_replica)
        if not quiet:
            self._quiet_since_s = None
        elif self._quiet_since_s is None:
            self._quiet_since_s = now
        if now - self._last_change_s < self.cooldown_s:
            return ScaleStep()
        step = self._step(load, now)
        if step.delta:
            self._last_change_s = now
            self._quiet_since_s = None
        return step

    def _step(self, load: ServiceLoad, now: float) -> ScaleStep:
        if load.n_asked < self.max_replicas and load.n_provisioning + load.n_queued == 0:
            q = load.queue_per_ready
            if q > self.up_queue_per_replica:
                return ScaleStep(+1, f"queue {q:.3g}/replica > {self.up_queue_per_replica:g}")
            a = load.slo_attainment
            if (self.up_slo_attainment is not None and load.n_slo_samples >= self.min_slo_samples
                    and a < self.up_slo_attainment):
                return ScaleStep(+1, f"SLO attainment {a:.3g} < {self.up_slo_attainment:g}")
        if self._quiet_since_s is not None and now - self._quiet_since_s >= self.down_idle_s:
            return ScaleStep(-1, f"quiet for {now - self._quiet_since_s:g} s")
        return ScaleStep()
