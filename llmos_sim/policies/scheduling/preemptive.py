"""Preemptive, priority-ordered scheduling: SRTF, LAS and Tiresias's discretized 2D-LAS.

:class:`PreemptiveScheduler` owns the loop; a policy overrides one hook, :meth:`key`
(lower = served first), for queued and running jobs alike.

One pass:

1. rank every queued and running job by :meth:`key`;
2. walk the ranking and *select* jobs greedily while their device demand fits the cluster
   (jobs that do not fit are skipped, so smaller ones further down may still be selected);
3. running jobs not selected are *candidate victims*; selected queued jobs are placed, in rank
   order, on the free devices plus the candidate victims' devices (released in rank order, so
   the placement's order among equally free nodes follows it; a pass-local copy of the free
   set, :func:`released_view`: a fork of the view's overlay; the engine's state is untouched);
4. only the candidate victims whose devices a start actually uses are preempted, so no job is
   stopped for nothing. The engine applies preempts before starts, so a start planned on a
   victim's devices finds them free.
5. (work conserving) queued jobs that were not selected may still start, in rank order, on
   devices left free: free before the pass and taken by no start of it (a candidate victim's
   devices are not offered, so this step preempts nothing). Under Pack it starts nothing (a
   job skipped in step 2 found fewer devices than it needs then, and no more are left now);
   under a placement that can refuse a selected job (consolidated) it can.

A preempted job's progress, attained service and stop time come from the engine's record of
it (``view.suspended``), so these policies keep no state of their own beyond a cache: where a
waiting job's rank cannot change while it waits (SRTF, LAS, 2D-LAS with FIFO queues and no
promotion, :meth:`PreemptiveScheduler.incremental`), the waiting jobs' ranking is kept sorted
across passes and brought up to date in O(changes) (``_Ranks``); a pass then ranks only the
running jobs and walks the merge of both only as far as a job can still fit. Same decisions as
ranking everything afresh. After a pass that decided nothing, LAS and 2D-LAS also say until
when passes stay quiet (:meth:`PreemptiveScheduler.settled_until_s`: the next moment a running
job's growing service can change the order), so the engine skips the rounds before it.

``round_s`` sets the engine's periodic pass (the time quantum); passes also run on every
arrival and completion. ``min_run_s`` protects a job for that long after its segment started
(a knob against thrashing when preemption has a checkpoint/restore cost).

Progress between preemptions: by default a running job that is still in its segment's
restore/preprocess overhead (no compute done since its last (re)start: up to and including
the instant the overhead ends, :meth:`RunningJob.in_overhead`) is never preempted
(``preempt_in_overhead=False``), so every preemption after a restore follows some compute and
a run always finishes, whatever the overhead and the round. A segment without overhead is not
protected (a job may be preempted at the instant it started; that costs nothing). LAS's
attained service counts compute only by default (``service_overhead=False``): a job restoring
after a preemption does not gain rank merely by restoring.
"""
from __future__ import annotations

from abc import abstractmethod
from bisect import bisect_left, bisect_right, insort
from itertools import chain, islice
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
        self._ranks: _Ranks | None = None  # the waiting jobs' kept ranking (one run at a time)

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
        ranks = self._synced(view)
        now = view.now_s
        if not view.queue:
            if ranks is not None:
                ranks.quiet = ((), ())
            return Decision()
        cap = float(view.cluster.n_devices)
        guard = not self.preempt_in_overhead
        min_run = self.min_run_s
        rankable: list[RunningJob] = []
        protected: list[RunningJob] = []
        for r in view.running.values():
            # protected: younger than min_run_s, or (guard) still in its overhead (RunningJob.in_overhead)
            if (min_run > 0 and now - r.seg_start_s < min_run) or (
                    guard and r.seg_overhead_s > 0 and now <= r.seg_start_s + r.seg_overhead_s):
                cap -= self.need(r.job)
                protected.append(r)
            else:
                rankable.append(r)
        if ranks is None:  # the general path: rank everything now
            return self._plan(view, *self._select_all(view, rankable, cap))
        run = self.running_keys(view, rankable)
        run.sort(key=_first)
        to_start, victims, rest, tail = self._select_merged(ranks, run, cap)
        decision = self._plan(view, to_start, victims, rest, tail)
        ranks.started = [s.job_id for s in decision.starts]
        ranks.quiet = None if decision else (run, protected)  # settled_until_s works from these
        return decision

    def _select_all(self, view: ClusterView, rankable: list[RunningJob], cap: float
                    ) -> tuple[list[Job], list[RunningJob], list[Job], Iterable[Job]]:
        """Step 2 over a ranking of the whole queue and ``rankable`` built now (any key)."""
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
        return to_start, victims, rest, ()

    def _select_merged(self, ranks: "_Ranks", run: list, cap: float
                       ) -> tuple[list[Job], list[RunningJob], list[Job], Iterable[Job]]:
        """Step 2 over the kept ranking of the waiting jobs merged with ``run`` (the running
        jobs' entries, sorted): the same walk as :meth:`_select_all`, stopped as soon as no job
        can fit any more (``cap`` below the smallest need of any job), so it reads a prefix of
        the queue. The rest of the queue is returned as ``tail`` (in rank order, lazily)."""
        waiting, n_w, n_r = ranks.entries, len(ranks.entries), len(run)
        least, tol, whole = ranks.min_need, CAPACITY_TOLERANCE, FULL_DEVICE_MILLI
        need_of = self.need
        to_start: list[Job] = []
        victims: list[RunningJob] = []
        rest: list[Job] = []
        i = k = 0
        while cap + tol >= least:
            if i < n_w and (k >= n_r or waiting[i][0] < run[k][0]):
                job, r = waiting[i][1], None
                i += 1
            elif k < n_r:
                _, job, r = run[k]
                k += 1
            else:
                break
            need = need_of(job) if job.gpu_milli < whole else job.min_devices
            if need <= cap + tol:
                cap -= need
                if r is None:
                    to_start.append(job)
            elif r is not None:
                victims.append(r)
            else:
                rest.append(job)
        victims.extend(e[2] for e in run[k:])
        tail = (waiting[x][1] for x in range(i, n_w)) if i < n_w else ()
        return to_start, victims, rest, tail

    def _plan(self, view: ClusterView, to_start: list[Job], victims: list[RunningJob], rest: list[Job],
              tail: Iterable[Job]) -> Decision:
        """Steps 3-5: place the selected jobs (on free devices and the candidate victims'),
        preempt the victims whose devices a start uses, then (work conserving) start the
        unselected waiting jobs, ``rest`` then ``tail``, on devices still free."""
        more = bool(rest) or bool(tail)
        if not to_start and not (self.work_conserving and more and view.free.total):
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
        if self.work_conserving and more:
            # a whole-device job wanting more devices than are free cannot start (try_start would
            # say None): skipped without asking, so a long queue costs one test per job
            plain = type(self).try_start is QueueScheduler.try_start
            free = v.free
            for job in chain(rest, tail):
                full = job.gpu_milli == FULL_DEVICE_MILLI
                if full and free.total == 0:
                    break
                if plain and full and job.min_devices > free.total:
                    continue
                devs = self.try_start(job, v)
                if devs is not None:
                    starts.append(Start(job.id, devs))
        return Decision(starts=tuple(starts), preempts=tuple(preempts))

    # -- kept ranks (the incremental path) -----------------------------------------------------
    def incremental(self) -> bool:
        """Does a waiting job's rank stay fixed while it waits (so the ranking of the waiting
        jobs can be kept across passes, :meth:`wait_key`)? ``False``: every pass ranks the
        whole queue (the general path)."""
        return False

    def wait_key(self, job: Job, suspended: RunningJob | None) -> tuple:
        """The rank of a waiting job from its preempted record (``None``: it never ran), when
        :meth:`incremental`. Must equal :meth:`key` for that job."""
        raise NotImplementedError

    def running_keys(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob]]:
        """``(key, job, record)`` of ``running`` (unsorted): :meth:`ranked`'s running part."""
        return [(self.key(r.job, r, view), r.job, r) for r in running]

    def settles(self) -> bool:
        """Can this policy say how long a quiet pass stays quiet (:meth:`settled_until_s`)?"""
        return False

    def _synced(self, view: ClusterView) -> "_Ranks | None":
        """The waiting jobs' ranks, sorted, brought up to date with ``view`` in O(changes):
        the jobs the last pass started leave; the queue entries not ranked yet (arrivals and
        preempted jobs, with their service so far) are its newest, as many as the count
        differs (the engine's queue keeps insertion order, and only starts remove from it).
        A check failing (a newest entry already ranked, counts that disagree) or a new run
        rebuilds from the whole queue. ``None``: the policy's ranks are not fixed while
        waiting, or the view is hand-built (a list): every pass ranks afresh."""
        if not self.incremental():
            return None
        queue = view.queue
        qmap = getattr(queue, "mapping", None)
        if qmap is None:  # a hand-built view (a list): rank afresh every pass
            return None
        rk = self._ranks
        if rk is None or rk.running is not view.running or view.now_s < rk.now_s:
            rk = self._ranks = _Ranks(view.running)
            rk.rebuild(self, queue, view)
        else:
            keys = rk.keys
            for jid in rk.started:  # left the queue (if one is back already, it is new again)
                if jid in keys:
                    rk.remove(jid)
            # only starts remove jobs from the queue, and every insertion goes to its end, so
            # the jobs not ranked yet (arrivals, preempted jobs) are its newest entries
            fresh = len(qmap) - len(keys)
            if fresh > 0:
                sus = view.suspended
                for job in islice(reversed(queue), fresh):
                    if job.id in keys:
                        break
                    rk.add(self.wait_key(job, sus.get(job.id)), job)
            if len(keys) != len(qmap):
                rk.rebuild(self, queue, view)
        rk.now_s = view.now_s
        rk.started = []
        return rk

    def settled_until_s(self, view: ClusterView) -> float | None:
        """After a pass that decided nothing: until when every pass would decide nothing as
        long as nothing else happens (no arrival, completion, start, preemption: the engine
        checks that), because no rank can change before then. ``None``: unknown (every pass
        runs). Exact rounds are kept: the engine skips only passes that provably change nothing."""
        rk = self._ranks
        if rk is None or rk.now_s != view.now_s or rk.running is not view.running or rk.quiet is None:
            return None
        run, protected = rk.quiet
        return self._horizon(view, rk, list(run), view.now_s, protected)

    def _horizon(self, view: ClusterView, ranks: "_Ranks", run: list, now: float,
                 protected: Sequence[RunningJob] = ()) -> float | None:
        """The earliest moment the ranking may change with nothing else happening (see
        :meth:`settled_until_s`), shortened by a safety margin; ``None`` = unknown."""
        return None

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


def _need(job: Job) -> float:
    """The devices a pass counts for ``job`` against the capacity (its share if fractional,
    else its minimum grant)."""
    return job.gpus * job.gpu_milli / FULL_DEVICE_MILLI if job.gpu_milli < FULL_DEVICE_MILLI else job.min_devices


def _protection_ends(policy: PreemptiveScheduler, protected: Sequence[RunningJob], now: float) -> float:
    """The earliest moment a protected running job (in its overhead, or younger than
    ``min_run_s``) becomes a candidate for the ranking; infinity if none."""
    best = float("inf")
    guard, min_run = not policy.preempt_in_overhead, policy.min_run_s
    for r in protected:
        if guard and r.seg_overhead_s > 0 and now <= r.seg_start_s + r.seg_overhead_s:
            best = min(best, r.seg_start_s + r.seg_overhead_s)
        if min_run > 0 and now - r.seg_start_s < min_run:
            best = min(best, r.seg_start_s + min_run)
    return best


def _shortened(t: float, now: float) -> float:
    """``t`` moved earlier by a relative margin (a pass near a computed crossing runs: rounding
    must never let a pass be skipped that would have seen the change)."""
    return max(now, t - 1e-6 * (1.0 + abs(t)))


class _Ranks:
    """A policy's kept ranking of the waiting jobs in one run: ``entries`` sorted by rank
    (``(key, job)``; keys are unique, ending with the job id), ``keys`` job id -> key; what the
    last pass started (to bring it up to date, see ``PreemptiveScheduler._synced``); the smallest device need of any job seen (a walk over
    the ranking stops once the free capacity is below it); and, after a pass that decided
    nothing, what its quiet moment is computed from (``quiet``, asked only if the engine has a
    pass to skip)."""

    __slots__ = ("running", "entries", "keys", "started", "min_need", "now_s", "quiet")

    def __init__(self, running) -> None:
        self.running = running  # the engine's running dict: identifies the run
        self.entries: list[tuple[tuple, Job]] = []
        self.keys: dict[int, tuple] = {}
        self.started: list[int] = []
        self.min_need = float("inf")
        self.now_s = float("-inf")
        self.quiet: tuple | None = None  # after a pass that decided nothing: its ranked running jobs and protected ones

    def rebuild(self, policy: "PreemptiveScheduler", queue, view: ClusterView) -> None:
        sus = view.suspended
        self.entries = sorted(((policy.wait_key(j, sus.get(j.id)), j) for j in queue), key=_first)
        self.keys = {j.id: k for k, j in self.entries}
        # every job a walk may meet: waiting now, or running (those joined the queue before,
        # except in a run whose ranking is rebuilt midway)
        needs = [_need(j) for _, j in self.entries] + [_need(r.job) for r in view.running.values()]
        self.min_need = min(needs, default=float("inf"))

    def add(self, key: tuple, job: Job) -> None:
        self.keys[job.id] = key
        insort(self.entries, (key, job))
        need = _need(job)
        if need < self.min_need:
            self.min_need = need

    def remove(self, job_id: int) -> None:
        key = self.keys.pop(job_id)
        entries = self.entries
        del entries[bisect_left(entries, (key,))]


class SRTF(PreemptiveScheduler):
    """Shortest remaining time first (oracle): remaining FLOPs over the job's full demand of
    average devices, in seconds. A shorter arrival preempts a longer running job at once
    (passes run on every arrival)."""

    def key(self, job: Job, running: RunningJob | None, view: ClusterView) -> tuple:
        rem = job.work_flops - self.done_flops(job, running, view)
        return (rem / (job.gpus * mean_flops(view) * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id)

    def incremental(self) -> bool:
        """A waiting job's remaining work is fixed: kept ranks, unless a subclass changes the
        key or the progress measure."""
        cls = type(self)
        return cls.key is SRTF.key and cls.done_flops is PreemptiveScheduler.done_flops

    def wait_key(self, job: Job, suspended: RunningJob | None) -> tuple:
        rem = job.work_flops - (suspended.done_flops if suspended is not None else 0.0)
        return (rem / (job.gpus * self._mean * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id)

    def running_keys(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob]]:
        """:meth:`key` of ``running`` in one sweep (RunningJob.done_at inlined)."""
        if not self.incremental():
            return super().running_keys(view, running)
        now, m = view.now_s, mean_flops(view)
        out = []
        for r in running:
            job = r.job
            run = now - r.seg_start_s - r.seg_overhead_s
            rem = job.work_flops - min(job.work_flops, r.done_flops + (run * r.rate_flops_s if run > 0 else 0.0))
            out.append(((rem / (job.gpus * m * job.gpu_milli / FULL_DEVICE_MILLI), job.arrival_s, job.id), job, r))
        return out

    def _synced(self, view: ClusterView) -> "_Ranks | None":
        self._mean = mean_flops(view)
        return super()._synced(view)

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """:meth:`key` in one sweep (the same expressions, the cluster's mean capacity computed
        once); a subclass with its own key or progress measure gets the general path."""
        if not self.incremental():
            return super().ranked(view, running)
        self._mean, sus = mean_flops(view), view.suspended.get
        out: list = [(self.wait_key(j, sus(j.id)), j, None) for j in view.queue]
        return out + self.running_keys(view, running)


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

    def incremental(self) -> bool:
        """LAS's own key on compute device-seconds: a waiting job's service is fixed, so the
        waiting jobs' ranks are kept across passes; any other service measure or an overriding
        subclass gets the general path."""
        cls = type(self)
        return (self.service == "gpu_s" and not self.service_overhead and cls.key is LAS.key
                and cls.served is LAS.served and cls.served_gpu_s is LAS.served_gpu_s)

    def wait_key(self, job: Job, suspended: RunningJob | None) -> tuple:
        return (suspended.compute_gpu_s if suspended is not None else 0.0, job.arrival_s, job.id)

    def running_keys(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob]]:
        """:meth:`key` of ``running`` in one sweep (RunningJob.computed_at inlined)."""
        if not self.incremental():
            return super().running_keys(view, running)
        now = view.now_s
        out = []
        for r in running:
            run = now - r.seg_start_s - r.seg_overhead_s
            served = r.compute_gpu_s + (run * len(r.devices) * r.share_milli / 1000 if run > 0 else 0.0)
            job = r.job
            out.append(((served, job.arrival_s, job.id), job, r))
        return out

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """The keys of :meth:`key` computed in one sweep: the same values, without four calls
        per job (only where :meth:`incremental`; otherwise the general path)."""
        if not self.incremental():
            return super().ranked(view, running)
        sus, wait_key = view.suspended.get, self.wait_key
        out: list = [(wait_key(j, sus(j.id)), j, None) for j in view.queue]
        return out + self.running_keys(view, running)

    def settles(self) -> bool:
        return self.incremental()

    def _horizon(self, view: ClusterView, ranks: "_Ranks", run: list, now: float,
                 protected: Sequence[RunningJob] = ()) -> float | None:
        """Ranks change only as running jobs gain service: each rankable running job's service
        grows linearly (by its width per second, from the end of its overhead), the waiting
        jobs' stays put. In a sorted order whose keys move linearly, the first change of order
        is a swap of two neighbours, so it is enough to ask, for each running job, when it
        overtakes the next waiting job and the next running job; a protected job joins the
        ranking when its protection ends, and a rankable job in its overhead starts gaining
        service then: both are moments too. O(running × log queue)."""
        if not self.incremental():
            return None
        best = _protection_ends(self, protected, now)
        waiting = ranks.entries
        prev = None
        for key, _, r in run:
            start = r.seg_start_s + r.seg_overhead_s
            rate = len(r.devices) * r.share_milli / 1000
            if start > now:  # in its overhead (may be preempted there): gains service from then
                best = min(best, start)
            elif rate > 0:
                a = key[0]
                i = bisect_left(waiting, (key,))
                if i < len(waiting):  # the next waiting job: overtaken when a reaches its service
                    best = min(best, now + (waiting[i][0][0] - a) / rate)
            if prev is not None:  # the previous running job: overtakes this one if it gains faster
                pa, prate, pstart = prev
                if pstart <= now and prate > (rate if start <= now else 0.0):
                    best = min(best, now + (key[0] - pa) / (prate - (rate if start <= now else 0.0)))
            prev = (key[0], rate, start)
        return _shortened(best, now)


class DiscretizedLAS(LAS):
    """Tiresias's discretized 2D-LAS: a multi-level feedback queue on attained service.

    ``thresholds`` (ascending, in the unit of ``service``; default GPU-seconds) split jobs into
    ``len(thresholds) + 1`` queues: queue ``q`` holds jobs whose service has passed ``q``
    thresholds (a threshold counts as passed once the service ``s`` is within a relative
    10⁻⁹ of it, ``s + 1e-9·(1 + |s|) >= threshold``, so a pass at the computed crossing moment
    sees it crossed despite rounding). Lower queues go first and preempt higher ones. A
    running job is demoted at the moment its service crosses a threshold: the policy asks the
    engine for a pass then (:meth:`wake_s`), not only at the next round. ``promote_after_s``: a
    job waiting that long since it last ran (or arrived) goes back to the top queue
    (Tiresias's starvation guard); ``None`` = off (the moment of promotion is also a pass).

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

    def incremental(self) -> bool:
        """The common configuration (FIFO order within a queue, arrival tie-break, service in
        compute device-seconds, no promotion): a waiting job's queue is fixed while it waits, so
        ranks are kept across passes; any other configuration or an overriding subclass gets
        the general path."""
        return self.promote_after_s is None and self._sweeps()

    def _sweeps(self) -> bool:
        """Can the keys be computed in one sweep with :meth:`key`'s expressions inlined (FIFO
        within a queue, arrival tie-break, compute device-seconds, no overriding subclass)?"""
        cls = type(self)
        return (self.order_by == "fifo" and self.tie_break == "arrival" and self.service == "gpu_s"
                and not self.service_overhead and cls.key is DiscretizedLAS.key
                and cls.queue_index is DiscretizedLAS.queue_index
                and cls.served is LAS.served and cls.served_gpu_s is LAS.served_gpu_s)

    def wait_key(self, job: Job, suspended: RunningJob | None) -> tuple:
        a = suspended.compute_gpu_s if suspended is not None else 0.0
        q = bisect_right(self.thresholds, a + 1e-9 * (1.0 + abs(a)))  # _crossed, inlined
        return (q, 1, job.arrival_s, job.id) if self.running_first else (q, job.arrival_s, job.id)

    def running_keys(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob]]:
        """:meth:`key` of ``running`` in one sweep (RunningJob.computed_at inlined)."""
        if not self._sweeps():
            return PreemptiveScheduler.running_keys(self, view, running)
        now, thr, busy = view.now_s, self.thresholds, (0,) if self.running_first else ()
        out = []
        for r in running:
            run = now - r.seg_start_s - r.seg_overhead_s
            a = r.compute_gpu_s + (run * len(r.devices) * r.share_milli / 1000 if run > 0 else 0.0)
            q = bisect_right(thr, a + 1e-9 * (1.0 + abs(a)))
            job = r.job
            out.append(((q, *busy, job.arrival_s, job.id), job, r))
        return out

    def ranked(self, view: ClusterView, running: Sequence[RunningJob]) -> list[tuple[tuple, Job, RunningJob | None]]:
        """:meth:`key` in one sweep where :meth:`incremental` (the same values); any other
        configuration or an overriding subclass gets the general path."""
        if self.incremental():
            sus, wait_key = view.suspended.get, self.wait_key
            out: list = [(wait_key(j, sus(j.id)), j, None) for j in view.queue]
            return out + self.running_keys(view, running)
        if not self._sweeps() or type(self).stopped_at_s is not PreemptiveScheduler.stopped_at_s:
            return PreemptiveScheduler.ranked(self, view, running)
        # with promotion: a waiting job's queue depends on how long it has waited
        now, sus, thr, promote = view.now_s, view.suspended.get, self.thresholds, self.promote_after_s
        waiting = (1,) if self.running_first else ()
        out = []
        for j in view.queue:
            s = sus(j.id)
            stopped = s.stopped_s if s is not None and s.stopped_s is not None else j.arrival_s  # stopped_at_s
            if now - stopped >= promote:
                out.append(((0, *waiting, j.arrival_s, j.id), j, None))
                continue
            a = s.compute_gpu_s if s is not None else 0.0
            q = bisect_right(thr, a + 1e-9 * (1.0 + abs(a)))  # _crossed, inlined
            out.append(((q, *waiting, j.arrival_s, j.id), j, None))
        return out + self.running_keys(view, running)

    def _horizon(self, view: ClusterView, ranks: "_Ranks", run: list, now: float,
                 protected: Sequence[RunningJob] = ()) -> float | None:
        """Ranks change only when a running job's service crosses its queue's threshold (the
        order within a queue is fixed), or a protected job joins the ranking."""
        if not self.incremental():
            return None
        best = _protection_ends(self, protected, now)
        thr = self.thresholds
        for key, _, r in run:
            q, rate = key[0], len(r.devices) * r.share_milli / 1000
            if q >= len(thr) or rate <= 0:
                continue
            start = max(now, r.seg_start_s + r.seg_overhead_s)
            a = r.computed_at(now)
            best = min(best, start + (thr[q] - 2e-9 * (1.0 + thr[q]) - a) / rate)
        return _shortened(best, now)

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
