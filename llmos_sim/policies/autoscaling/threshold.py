"""Threshold autoscaling, in the manner of Kubernetes' horizontal pod autoscaler and KServe /
Knative's concurrency target: scale up on a long queue or missed SLOs, down after a quiet
spell, with a cooldown between changes."""
from __future__ import annotations

import math

from llmos_sim.policies.autoscaling.base import Autoscaler, ScaleStep, ServiceLoad, StageLoad


class ThresholdAutoscaler(Autoscaler):
    """One replica more or less at a time, between the service's own count and ``max_replicas``
    (replicas holding devices, draining ones included: a replica being drained keeps its
    devices until its last request ends, so a scale-up waits for it rather than exceed the cap).

    Up (+1) when ``waiting / ready > up_queue_per_replica``, or when the recent SLO attainment
    (over the last ``slo_window_s``, at least ``min_slo_samples`` requests) is below
    ``up_slo_attainment`` (``null`` turns that trigger off). Down (-1) when the service has been
    quiet for ``down_idle_s``: at every decision over that span, its outstanding requests would
    have fit in one replica fewer at ``down_outstanding_per_replica`` each, and nothing waited.
    ``cooldown_s``: no change within this long of the last one (up or down). Decisions come
    every ``interval_s``.

    A disaggregated service (:attr:`ServiceLoad.stages` given) scales one pool at a time, by
    the same thresholds read per pool: up, the pool whose waiting requests per ready replica
    are the most above ``up_queue_per_replica``; else the pool whose own SLO attainment (prefill:
    TTFT, decode: TPOT) is the lowest below ``up_slo_attainment``; prefill first on a tie.
    ``max_replicas`` caps both pools together. Down, a pool quiet for ``down_idle_s`` (the
    quiet test above on the pool's counts; prefill first). The cooldown is the service's.

    State: the time of the last change and the start of the current quiet spell (per pool for
    a disaggregated service; a policy that remembers, like round-robin routing; one instance
    per service).
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
        self._stage_quiet_since_s: dict[str, float | None] = {}

    def _quiet(self, load: ServiceLoad | StageLoad) -> bool:
        """Would the outstanding requests fit in one replica fewer, with nothing waiting?"""
        return (load.waiting == 0 and load.n_ready > load.n_min
                and load.outstanding <= (load.n_ready - 1) * self.down_outstanding_per_replica)

    def decide(self, load: ServiceLoad) -> ScaleStep:
        now = load.now_s
        if load.stages:
            quiet = self._stage_quiet_since_s
            for st in load.stages:
                if not self._quiet(st):
                    quiet[st.stage] = None
                elif quiet.get(st.stage) is None:
                    quiet[st.stage] = now
        elif not self._quiet(load):
            self._quiet_since_s = None
        elif self._quiet_since_s is None:
            self._quiet_since_s = now
        if now - self._last_change_s < self.cooldown_s:
            return ScaleStep()
        step = self._stage_step(load, now) if load.stages else self._step(load, now)
        if step.delta:
            self._last_change_s = now
            self._quiet_since_s = None
            self._stage_quiet_since_s = {}
        return step

    def _stage_step(self, load: ServiceLoad, now: float) -> ScaleStep:
        """A disaggregated service's step: which pool grows or drains (see the class's docs)."""
        if load.n_held < self.max_replicas and load.n_provisioning + load.n_queued == 0:
            queued = [st for st in load.stages if st.queue_per_ready > self.up_queue_per_replica]
            if queued:
                st = max(queued, key=lambda st: st.queue_per_ready)
                return ScaleStep(+1, f"{st.stage} queue {st.queue_per_ready:.3g}/replica > "
                                     f"{self.up_queue_per_replica:g}", st.stage)
            if self.up_slo_attainment is not None and load.n_slo_samples >= self.min_slo_samples:
                low = [st for st in load.stages if st.slo_attainment < self.up_slo_attainment]
                if low:
                    st = min(low, key=lambda st: st.slo_attainment)
                    return ScaleStep(+1, f"{st.stage} SLO attainment {st.slo_attainment:.3g} < "
                                         f"{self.up_slo_attainment:g}", st.stage)
        for st in load.stages:
            since = self._stage_quiet_since_s.get(st.stage)
            if since is not None and now - since >= self.down_idle_s:
                return ScaleStep(-1, f"{st.stage} quiet for {now - since:g} s", st.stage)
        return ScaleStep()

    def _step(self, load: ServiceLoad, now: float) -> ScaleStep:
        if load.n_held < self.max_replicas and load.n_provisioning + load.n_queued == 0:
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
