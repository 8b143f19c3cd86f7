"""Preemptive, priority-ordered scheduling: SRTF, LAS and Tiresias's discretized 2D-LAS.

:class:`PreemptiveScheduler` owns the loop; a policy overrides one hook, :meth:`key`
(lower = served first), for queued and running jobs alike (DESIGN §6.4).

One pass:

1. rank every queued and running job by :meth:`key`;
2. walk the ranking and *select* jobs greedily while their device demand fits the cluster
   (jobs that do not fit are skipped, so smaller ones further down may still be selected);
3. running jobs not selected are *candidate victims*; selected queued jobs are placed, in rank
   order, on the free devices plus the candidate victims' devices (a pass-local copy of the
   free set, :func:`released_view`: a fork of the view's overlay; the engine's state is untouched);
4. only the candidate victims whose devices a start actually uses are preempted, so no job is
   stopped for nothing. The engine applies preempts before starts, so a start planned on a
   victim's devices finds them free.
5. (work conserving) queued jobs that were not selected may still start on devices left free.

A preempted job's progress, attained service and stop time come from the engine's record of
it (``view.suspended``), so these policies keep no state of their own.

``round_s`` sets the engine's periodic pass (the time quantum); passes also run on every
arrival and completion. ``min_run_s`` protects a job for that long after its segment started
(a knob against thrashing when preemption has a checkpoint/restore cost).
"""
from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_right
from typing import Iterable, Sequence

from llmos_sim.policies.scheduling.base import Decision, Placement, Preempt, QueueScheduler, Start
from llmos_sim.types import FULL_DEVICE_MILLI, Job
from llmos_sim.view import ClusterView, RunningJob


def released_view(view: ClusterView, released: Iterable[tuple[RunningJob, Sequence[int]]]) -> ClusterView:
    """A pass-local fork of ``view`` in which each ``(running job, devices)`` pair's devices
    (its share of them) and, when all its devices are released, its non-gpu resources are free.

    Costs O(plans in this pass): only the overlay is copied; the engine's state and the
    original view are not changed. Plans already made on ``view`` are carried over.
    """
    out = view.fork()
    for r, devs in released:
        out.release(r, devs)
    return out


def mean_flops(view: ClusterView) -> float:
    """Average device capacity ``C`` of the cluster (FLOP/s), the reference for durations."""
    return view.cluster.total_flops / view.cluster.n_devices


class PreemptiveScheduler(QueueScheduler):
    """Priority scheduling with preemption; subclasses define :meth:`key`.

    - ``round_s``: period of extra passes (s); ``None`` = only on arrivals and completions
    - ``min_run_s``: a running segment younger than this is never preempted (s)
    - ``work_conserving``: let unselected queued jobs use devices still free after the pass
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True) -> None:
        super().__init__(placement, blocking=False, elastic_grow=False)
        self.round_s = round_s
        self.min_run_s = float(min_run_s)
        self.work_conserving = work_conserving

    # -- the hook ---------------------------------------------------------------------------
    @abstractmethod
    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        """Rank of ``job`` (lower = more urgent); ``running`` is its record if it runs now.
        Must be unique per job (end with ``job.arrival_s, job.id``) so passes are deterministic."""

    # -- what a job has done so far ---------------------------------------------------------
    @staticmethod
    def attained_gpu_s(job: Job, r: RunningJob | None, view: ClusterView) -> float:
        """Device-seconds of service so far (LAS's attained service): from the running record,
        or the engine's record of a preempted job waiting in the queue."""
        if r is not None:
            return r.attained_at(view.now_s)
        s = view.suspended.get(job.id)
        return s.attained_gpu_s if s is not None else 0.0

    @staticmethod
    def done_flops(job: Job, r: RunningJob | None, view: ClusterView) -> float:
        """FLOPs finished so far (running, or preempted and waiting)."""
        if r is not None:
            return min(job.work_flops, r.done_at(view.now_s))
        s = view.suspended.get(job.id)
        return s.done_flops if s is not None else 0.0

    @staticmethod
    def stopped_at_s(job: Job, view: ClusterView) -> float:
        """When ``job`` last stopped running (its arrival if it never ran)."""
        s = view.suspended.get(job.id)
        return s.stopped_s if s is not None and s.stopped_s is not None else job.arrival_s

    @staticmethod
    def need(job: Job) -> float:
        """Devices the job occupies (fractional shares count as fractions)."""
        return job.gpus * job.gpu_milli / FULL_DEVICE_MILLI

    # -- the loop ---------------------------------------------------------------------------
    def decide(self, view: ClusterView) -> Decision:
        now = view.now_s
        running = view.running
        if not view.queue:
            return Decision()
        ranked = [(self.key(j, None, view), j, None) for j in view.queue]
        cap = float(view.cluster.n_devices)
        protected = set()
        for r in running.values():
            if self.min_run_s > 0 and now - r.seg_start_s < self.min_run_s:
                protected.add(r.job.id)
                cap -= self.need(r.job)
            else:
                ranked.append((self.key(r.job, r, view), r.job, r))
        ranked.sort(key=lambda e: e[0])
        to_start: list[Job] = []
        victims: list[RunningJob] = []
        rest: list[Job] = []
        for _, job, r in ranked:
            need = self.need(job) if job.gpu_milli < FULL_DEVICE_MILLI else job.min_devices
            if need <= cap + 1e-9:
                cap -= need
                if r is None:
                    to_start.append(job)
            elif r is not None:
                victims.append(r)
            else:
                rest.append(job)
        if not to_start and not (self.work_conserving and rest and view.free.total):
            return Decision()
        v = released_view(view, ((r, r.devices) for r in victims)) if victims else view
        starts: list[Start] = []
        for job in to_start:
            devs = self.try_start(job, v)
            if devs is not None:
                starts.append(Start(job.id, devs))
        preempts: list[Preempt] = []
        if victims:
            used = {d for s in starts for d in s.devices}
            for r in victims:
                if used.intersection(r.devices):
                    preempts.append(Preempt(r.job.id))
                else:  # keeps running: its devices are not free after all
                    keep = [d for d in r.devices if v.free.is_free(d)]
                    if keep and r.job.gpu_milli == FULL_DEVICE_MILLI:
                        v.free.take(keep)
                    elif r.job.gpu_milli < FULL_DEVICE_MILLI:
                        for d in r.devices:
                            v.share_taken[d] = v.share_taken.get(d, 0) + r.job.gpu_milli
        if self.work_conserving:
            for job in rest:
                if v.free.total == 0 and job.gpu_milli == FULL_DEVICE_MILLI:
                    break
                devs = self.try_start(job, v)
                if devs is not None:
                    starts.append(Start(job.id, devs))
        return Decision(starts=tuple(starts), preempts=tuple(preempts))

    def order(self, view: ClusterView) -> Iterable[Job]:
        return sorted(view.queue, key=lambda j: self.key(j, None, view))


class SRTF(PreemptiveScheduler):
    """Shortest remaining time first (oracle): remaining FLOPs over the job's full demand of
    average devices, in seconds. A shorter arrival preempts a longer running job at once
    (passes run on every arrival)."""

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        rem = job.work_flops - self.done_flops(job, running, view)
        return (rem / (job.gpus * mean_flops(view) * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id)


class LAS(PreemptiveScheduler):
    """Least attained service first (Tiresias's continuous LAS): jobs that have received the
    least service run first; no job size is needed.

    ``service``: ``"gpu_s"`` (device-seconds, Tiresias's 2D: time × width) or ``"time_s"``
    (seconds run, the 1D classic). With ``round_s`` equal-service jobs time-share by quantum.
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True, service: str = "gpu_s") -> None:
        super().__init__(placement, round_s, min_run_s, work_conserving)
        if service not in ("gpu_s", "time_s"):
            raise ValueError(f"LAS: service must be 'gpu_s' or 'time_s', got {service!r}")
        self.service = service

    def served(self, job: Job, running: RunningJob | None, view: ClusterView) -> float:
        a = self.attained_gpu_s(job, running, view)
        return a if self.service == "gpu_s" else a / (job.gpus * job.gpu_milli / FULL_DEVICE_MILLI)

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        return (self.served(job, running, view), job.arrival_s, job.id)


class DiscretizedLAS(LAS):
    """Tiresias's discretized 2D-LAS: a multi-level feedback queue on attained service.

    ``thresholds`` (ascending, in the unit of ``service``; default GPU-seconds) split jobs into
    ``len(thresholds) + 1`` queues: queue ``q`` holds jobs whose service has passed ``q``
    thresholds. Lower queues go first and preempt higher ones; within a queue, FIFO by arrival
    (no time-sharing churn). ``promote_after_s``: a job waiting that long since it last ran
    (or arrived) goes back to the top queue (Tiresias's starvation guard); ``None`` = off.
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True, service: str = "gpu_s",
                 thresholds: Sequence[float] = (3600.0, 36000.0), promote_after_s: float | None = None) -> None:
        super().__init__(placement, round_s, min_run_s, work_conserving, service)
        self.thresholds = sorted(float(t) for t in thresholds)
        self.promote_after_s = promote_after_s

    def queue_index(self, job: Job, running: RunningJob | None, view: ClusterView) -> int:
        if (running is None and self.promote_after_s is not None
                and view.now_s - self.stopped_at_s(job, view) >= self.promote_after_s):
            return 0
        return bisect_right(self.thresholds, self.served(job, running, view))

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        return (self.queue_index(job, running, view), job.arrival_s, job.id)
