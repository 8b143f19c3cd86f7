"""Preemptive, priority-ordered scheduling: SRTF, LAS and Tiresias's discretized 2D-LAS.

:class:`PreemptiveScheduler` owns the loop; a policy overrides one hook, :meth:`key`
(lower = served first), for queued and running jobs alike.

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

Progress between preemptions: by default a running job that is still in its segment's
restore/preprocess overhead (no compute done since its last (re)start) is never preempted
(``preempt_in_overhead=False``), so every preemption follows some compute and a run always
finishes, whatever the overhead and the round. LAS's attained service counts compute only by
default (``service_overhead=False``): a job restoring after a preemption does not gain rank
merely by restoring.
"""
from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_right
from typing import Iterable, Sequence

import numpy as np

from llmos_sim.policies.scheduling.base import Decision, Placement, Preempt, QueueScheduler, Start
from llmos_sim.types import CAPACITY_TOLERANCE, FULL_DEVICE_MILLI, Job
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
    - ``preempt_in_overhead``: may a job still in its restore/preprocess overhead be preempted?
      ``False`` (default) guarantees compute between any two preemptions of a job
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True, preempt_in_overhead: bool = False) -> None:
        super().__init__(placement, blocking=False, elastic_grow=False)
        self.round_s = round_s
        self.min_run_s = float(min_run_s)
        self.work_conserving = work_conserving
        self.preempt_in_overhead = bool(preempt_in_overhead)

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
        cap = float(view.cluster.n_devices)
        guard = not self.preempt_in_overhead
        min_run = self.min_run_s
        rankable: list[RunningJob] = []
        for r in running.values():
            # protected: younger than min_run_s, or (guard) still in its overhead (RunningJob.in_overhead)
            if (min_run > 0 and now - r.seg_start_s < min_run) or (
                    guard and r.seg_overhead_s > 0 and now <= r.seg_start_s + r.seg_overhead_s):
                cap -= self.need(r.job)
            else:
                rankable.append(r)
        ranked = self.ranked(view, rankable)
        ranked.sort(key=_first)
        to_start: list[Job] = []
        victims: list[RunningJob] = []
        rest: list[Job] = []
        for _, job, r in ranked:
            need = self.need(job) if job.gpu_milli < FULL_DEVICE_MILLI else job.min_devices
            if need <= cap + CAPACITY_TOLERANCE:
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

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """``(key, job, record)`` of every queued job (record ``None``) and of ``running``, unsorted.
        A policy may compute the same keys in bulk (LAS does); the default asks :meth:`key`."""
        key = self.key
        out = [(key(j, None, view), j, None) for j in view.queue]
        out += [(key(r.job, r, view), r.job, r) for r in running]
        return out

    def order(self, view: ClusterView) -> Iterable[Job]:
        return sorted(view.queue, key=lambda j: self.key(j, None, view))


def _first(e: tuple) -> tuple:
    return e[0]


class SRTF(PreemptiveScheduler):
    """Shortest remaining time first (oracle): remaining FLOPs over the job's full demand of
    average devices, in seconds. A shorter arrival preempts a longer running job at once
    (passes run on every arrival)."""

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        rem = job.work_flops - self.done_flops(job, running, view)
        return (rem / (job.gpus * mean_flops(view) * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id)

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """:meth:`key` in one sweep (the same expressions, the cluster's mean capacity computed
        once); a subclass with its own key or progress measure gets the general path."""
        cls = type(self)
        if cls.key is not SRTF.key or cls.done_flops is not PreemptiveScheduler.done_flops:
            return super().ranked(view, running)
        now, sus, m = view.now_s, view.suspended.get, mean_flops(view)
        out = []
        for j in view.queue:
            s = sus(j.id)
            rem = j.work_flops - (s.done_flops if s is not None else 0.0)
            out.append(((rem / (j.gpus * m * j.gpu_milli / FULL_DEVICE_MILLI), j.arrival_s, j.id), j, None))
        for r in running:  # RunningJob.done_at, inlined
            job = r.job
            run = now - r.seg_start_s - r.seg_overhead_s
            rem = job.work_flops - min(job.work_flops, r.done_flops + (run * r.rate_flops_s if run > 0 else 0.0))
            out.append(((rem / (job.gpus * m * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id), job, r))
        return out


class LAS(PreemptiveScheduler):
    """Least attained service first (Tiresias's continuous LAS): jobs that have received the
    least service run first; no job size is needed.

    ``service``: ``"gpu_s"`` (device-seconds, Tiresias's 2D: time × width) or ``"time_s"``
    (seconds run, the 1D classic). With ``round_s`` equal-service jobs time-share by quantum.
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True, service: str = "gpu_s", preempt_in_overhead: bool = False,
                 service_overhead: bool = False) -> None:
        super().__init__(placement, round_s, min_run_s, work_conserving, preempt_in_overhead)
        if service not in ("gpu_s", "time_s"):
            raise ValueError(f"LAS: service must be 'gpu_s' or 'time_s', got {service!r}")
        self.service = service
        self.service_overhead = bool(service_overhead)

    def served_gpu_s(self, job: Job, running: RunningJob | None, view: ClusterView) -> float:
        """Attained device-seconds: compute only, or (``service_overhead``) every device-second
        held, restore/preprocess included."""
        if self.service_overhead:
            return self.attained_gpu_s(job, running, view)
        if running is not None:
            return running.computed_at(view.now_s)
        s = view.suspended.get(job.id)
        return s.compute_gpu_s if s is not None else 0.0

    def served(self, job: Job, running: RunningJob | None, view: ClusterView) -> float:
        a = self.served_gpu_s(job, running, view)
        return a if self.service == "gpu_s" else a / (job.gpus * job.gpu_milli / FULL_DEVICE_MILLI)

    def service_rate(self, r: RunningJob) -> float:
        """Service ``r`` gains per second while computing, in the unit of ``service``."""
        width = len(r.devices) * r.share_milli / FULL_DEVICE_MILLI
        return width if self.service == "gpu_s" else width / (r.job.gpus * r.job.gpu_milli / FULL_DEVICE_MILLI)

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        return (self.served(job, running, view), job.arrival_s, job.id)

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """The keys of :meth:`key` computed in one sweep (a pass ranks the whole queue): the same
        values, without four calls per job. Only for LAS's own key on compute device-seconds;
        a subclass with its own key or service measure gets the general path."""
        cls = type(self)
        if (self.service != "gpu_s" or self.service_overhead or cls.key is not LAS.key
                or cls.served is not LAS.served or cls.served_gpu_s is not LAS.served_gpu_s):
            return super().ranked(view, running)
        now, sus = view.now_s, view.suspended.get
        out = []
        for j in view.queue:
            s = sus(j.id)
            out.append(((s.compute_gpu_s if s is not None else 0.0, j.arrival_s, j.id), j, None))
        for r in running:  # RunningJob.computed_at, inlined
            run = now - r.seg_start_s - r.seg_overhead_s
            served = r.compute_gpu_s + (run * len(r.devices) * r.share_milli / 1000 if run > 0 else 0.0)
            job = r.job
            out.append(((served, job.arrival_s, job.id), job, r))
        return out


class DiscretizedLAS(LAS):
    """Tiresias's discretized 2D-LAS: a multi-level feedback queue on attained service.

    ``thresholds`` (ascending, in the unit of ``service``; default GPU-seconds) split jobs into
    ``len(thresholds) + 1`` queues: queue ``q`` holds jobs whose service has passed ``q``
    thresholds. Lower queues go first and preempt higher ones. A running job is demoted at the
    moment its service crosses a threshold: the policy asks the engine for a pass then
    (:meth:`wake_s`), not only at the next round. ``promote_after_s``: a job waiting that long
    since it last ran (or arrived) goes back to the top queue (Tiresias's starvation guard);
    ``None`` = off (the moment of promotion is also a pass).

    Order within a queue:

    - ``running_first`` (default ``True``): running jobs stay ahead of waiting ones of the same
      queue, so a job is never preempted by one of its own queue (as Tiresias's simulator
      does); ``False`` orders a queue purely by the tie-break, so an earlier-arrived waiting job
      preempts a later running one.
    - ``order``: ``"fifo"`` (default) or ``"gittins"``: by the Gittins index of the job's
      attained service (highest first), for the quantum up to the queue's upper threshold
      (unbounded in the last queue), from the service distribution of the jobs finished so far
      (Tiresias's 2D-Gittins; all indices are 0 until a job finishes).
    - ``tie_break``: ``"arrival"`` (default: earlier arrival, then lower id) or
      ``"previous_rank"``: jobs keep the order they had in the queue; a job entering a queue
      (arrival, demotion, promotion) goes behind those already in it, newcomers of one pass in
      their previous order.
    """

    def __init__(self, placement: Placement | None = None, round_s: float | None = 300.0, min_run_s: float = 0.0,
                 work_conserving: bool = True, service: str = "gpu_s",
                 thresholds: Sequence[float] = (3600.0, 36000.0), promote_after_s: float | None = None,
                 preempt_in_overhead: bool = False, service_overhead: bool = False, running_first: bool = True,
                 order: str = "fifo", tie_break: str = "arrival") -> None:
        super().__init__(placement, round_s, min_run_s, work_conserving, service, preempt_in_overhead,
                         service_overhead)
        self.thresholds = sorted(float(t) for t in thresholds)
        self.promote_after_s = promote_after_s
        self.running_first = bool(running_first)
        if order not in ("fifo", "gittins"):
            raise ValueError(f"DiscretizedLAS: order must be 'fifo' or 'gittins', got {order!r}")
        if tie_break not in ("arrival", "previous_rank"):
            raise ValueError(f"DiscretizedLAS: tie_break must be 'arrival' or 'previous_rank', got {tie_break!r}")
        self.order_by = order
        self.tie_break = tie_break
        self._entry: dict[int, tuple[int, tuple]] = {}  # job id -> (queue, its place in that queue)
        self._pass_no = 0
        self._dist_n = 0  # finished jobs in the Gittins distribution
        self._vals: list[float] = []  # their service, in finishing order
        self._dist = np.zeros(0)  # the same, ascending
        self._prefix = np.zeros(1)  # prefix sums of _dist

    @staticmethod
    def _crossed(service: float) -> float:
        """``service`` with a relative tolerance, so a pass at the computed crossing moment sees
        the threshold as crossed despite rounding."""
        return service + 1e-9 * (1.0 + abs(service))

    def queue_index(self, job: Job, running: RunningJob | None, view: ClusterView) -> int:
        if (running is None and self.promote_after_s is not None
                and view.now_s - self.stopped_at_s(job, view) >= self.promote_after_s):
            return 0
        return bisect_right(self.thresholds, self._crossed(self.served(job, running, view)))

    def decide(self, view: ClusterView) -> Decision:
        self._pass_no += 1
        if self.tie_break == "previous_rank" and self._entry:
            live = set(j.id for j in view.queue)
            live.update(view.running)
            if len(live) < len(self._entry):
                self._entry = {i: e for i, e in self._entry.items() if i in live}
        return super().decide(view)

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        q = self.queue_index(job, running, view)
        k: tuple = (q,)
        if self.running_first:
            k += (0 if running is not None else 1,)
        if self.order_by == "gittins":
            k += (-self.gittins_index(self.served(job, running, view), q, view),)
        if self.tie_break == "previous_rank":
            e = self._entry.get(job.id)
            if e is None or e[0] != q:  # entering queue q now: behind those already there
                e = self._entry[job.id] = (q, (self._pass_no, e[1] if e is not None else ()))
            k += (e[1],)
        return k + (job.arrival_s, job.id)

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """:meth:`key` in one sweep for the common configuration (FIFO order within a queue,
        arrival tie-break, service in compute device-seconds): the same values; any other
        configuration or an overriding subclass gets the general path."""
        cls = type(self)
        if (self.order_by != "fifo" or self.tie_break != "arrival" or self.service != "gpu_s" or self.service_overhead
                or cls.key is not DiscretizedLAS.key or cls.queue_index is not DiscretizedLAS.queue_index
                or cls.served is not LAS.served or cls.served_gpu_s is not LAS.served_gpu_s
                or cls.stopped_at_s is not PreemptiveScheduler.stopped_at_s):
            return super().ranked(view, running)
        now, sus, thr, promote = view.now_s, view.suspended.get, self.thresholds, self.promote_after_s
        waiting = (1,) if self.running_first else ()
        busy = (0,) if self.running_first else ()
        out = []
        for j in view.queue:
            s = sus(j.id)
            if promote is not None:  # stopped_at_s, inlined
                stopped = s.stopped_s if s is not None and s.stopped_s is not None else j.arrival_s
                if now - stopped >= promote:
                    out.append(((0, *waiting, j.arrival_s, j.id), j, None))
                    continue
            a = s.compute_gpu_s if s is not None else 0.0
            q = bisect_right(thr, a + 1e-9 * (1.0 + abs(a)))  # _crossed, inlined
            out.append(((q, *waiting, j.arrival_s, j.id), j, None))
        for r in running:  # RunningJob.computed_at, inlined
            run = now - r.seg_start_s - r.seg_overhead_s
            a = r.compute_gpu_s + (run * len(r.devices) * r.share_milli / 1000 if run > 0 else 0.0)
            q = bisect_right(thr, a + 1e-9 * (1.0 + abs(a)))
            job = r.job
            out.append(((q, *busy, job.arrival_s, job.id), job, r))
        return out

    # -- Gittins index ------------------------------------------------------------------------
    def _distribution(self, view: ClusterView) -> None:
        """The finished jobs' service, sorted, with prefix sums (extended as jobs finish)."""
        fin = view.finished
        if len(fin) == self._dist_n:
            return
        if len(fin) < self._dist_n:  # another run's view: start over
            self._vals, self._dist_n = [], 0
        new = fin[self._dist_n:]
        if self.service == "gpu_s":
            self._vals.extend(f.service_gpu_s for f in new)
        else:
            self._vals.extend(f.service_gpu_s / (f.job.gpus * f.job.gpu_milli / FULL_DEVICE_MILLI) for f in new)
        xs = np.sort(np.asarray(self._vals, dtype=float))
        self._dist, self._prefix, self._dist_n = xs, np.concatenate(([0.0], np.cumsum(xs))), len(fin)

    def gittins_index(self, attained: float, q: int, view: ClusterView) -> float:
        """``P(S - a <= Δ | S > a) / E[min(S - a, Δ) | S > a]`` over the finished jobs' service
        ``S``, with ``a`` the attained service and ``Δ`` the quantum up to queue ``q``'s upper
        threshold (unbounded in the last queue); 0 when no finished job served more than ``a``."""
        self._distribution(view)
        xs, pre = self._dist, self._prefix
        n = len(xs)
        i = int(np.searchsorted(xs, attained, side="right"))
        if i >= n:
            return 0.0
        if q < len(self.thresholds):
            delta = max(0.0, self.thresholds[q] - attained)
            j = int(np.searchsorted(xs, attained + delta, side="right"))
        else:
            delta, j = 0.0, n
        done = j - i  # finish within the quantum
        expected = float(pre[j] - pre[i]) - done * attained + (n - j) * delta  # × (n - i)
        return done / expected if expected > 0 else float("inf")

    # -- the moments the ranking changes -----------------------------------------------------
    def wake_s(self, view: ClusterView) -> float | None:
        """The next moment a running job crosses its queue's threshold, or a waiting job is
        due for promotion (only while jobs wait: otherwise nothing would change)."""
        if not view.queue:
            return None
        now, best = view.now_s, None
        thr = self.thresholds
        for r in view.running.values():
            a = self.served(r.job, r, view)
            q = bisect_right(thr, self._crossed(a))
            rate = self.service_rate(r)
            if q >= len(thr) or rate <= 0:
                continue
            t = now + (thr[q] - a) / rate
            if not self.service_overhead and r.in_overhead(now):
                t += r.seg_start_s + r.seg_overhead_s - now
            if best is None or t < best:
                best = t
        if self.promote_after_s is not None:
            for j in view.queue:
                t = self.stopped_at_s(j, view) + self.promote_after_s
                if t > now and (best is None or t < best):
                    best = t
        return best
