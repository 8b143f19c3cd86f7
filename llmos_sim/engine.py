"""The engine: the control plane, and the only place that mutates cluster state.

It is small on purpose. It turns arrivals and completions into scheduling
passes, asks the :class:`~llmos_sim.policies.scheduling.base.ClusterScheduler` for a
decision, applies it under the seed's grant rule ``R_i* = min(R_i, R_i^d)`` and through the
per-device memory pools (``M_u* = min(M, M_u + M_d)`` for the ideal one), hands work to the
:class:`~llmos_sim.backend.Backend`, and appends every fact to the :class:`EventLog`.

Speed: everything runs as SimPy event callbacks, not one process per job. Arrivals are one
chain of events (one per distinct arrival time); a pass is one event per instant, scheduled
at a lower priority than everything else at that instant, so all arrivals and completions at
time t are seen by a single pass at t (``pass_per_event=True``: one pass after each of them).
Ties in time break by SimPy's insertion counter, which belongs to the run's environment (no
class-level counters): same inputs, same log.
"""
from __future__ import annotations

import logging
import math
from operator import attrgetter
from typing import Callable, Sequence

import numpy as np
import simpy

from llmos_sim import events as E
from llmos_sim.backend import Backend
from llmos_sim.kernel import Instant, events_pending, nothing_due_at, outcome, push_at, queue_of, sparse_gc  # noqa: F401  (sparse_gc: re-exported)
from llmos_sim.events import EventLog
from llmos_sim.policies.memory.base import MemoryPool
from llmos_sim.policies.scheduling.base import ClusterScheduler, Decision
from llmos_sim.types import ARRIVE_FIELDS, CAPACITY_TOLERANCE, FULL_DEVICE_MILLI, GPU, Cluster, Job, JobTable, Task
from llmos_sim.view import ClusterView, FinishedJobs, FreeDevices, RunningJob, Tentative

log = logging.getLogger(__name__)

PASS_PRIORITY = 2  #: after SimPy's NORMAL (1): a pass sees everything else at its instant

MEMORY_FULL_ACTIONS = ("wait", "fail", "preempt")


_SHARED_MAX = 1 << 16  #: distinct values kept for sharing, per kind (beyond it, values are kept as given)


def _shared(seen: dict, value: tuple, types: tuple) -> tuple:
    """``value``, or the equal tuple seen before whose elements have the same exact ``types``
    (so a million records of a few hundred distinct device sets hold a few hundred tuples)."""
    key = (value, types)
    got = seen.get(key)
    if got is not None:
        return got
    if len(seen) < _SHARED_MAX:
        seen[key] = value
    return value


def _run_order(table: JobTable) -> JobTable | None:
    """``table``'s rows in the order a run serves them (by arrival, then id; :meth:`Engine.run`),
    checked as :meth:`Engine.run` checks jobs, over whole columns; None when a check fails or a
    column is not numbers (then the jobs are read one by one, and the failing one is named)."""
    ids, arrival, work = table.array("id"), table.array("arrival_s"), table.array("work_flops")
    if ids is None or arrival is None or work is None or not (np.isfinite(arrival).all() and np.isfinite(work).all()):
        return None
    rising = np.diff(ids) > 0
    if not rising.all() and len(np.unique(ids)) != len(ids):  # ids that rise are distinct (no sort)
        return None
    later = np.diff(arrival)
    if ((later > 0) | ((later == 0) & rising)).all():  # already in order (a generator's own)
        return table
    return table.take(np.lexsort((ids, arrival)))


class Engine:
    """Runs one workload on one cluster under one scheduler, pool policy and backend.

    Parameters
    ----------
    pool_factory:
        ``capacity_bytes -> MemoryPool``, called once per device; ``None`` = no memory model.
    round_s:
        Period of extra scheduling passes; defaults to the scheduler's ``round_s``.
    on_memory_full:
        What happens when a start's memory does not fit: ``"wait"`` (stay queued, a
        ``reject`` event is logged), ``"fail"`` (the job is rejected for good: it fails) or
        ``"preempt"`` (preempt jobs holding memory on the full devices — lower priority first,
        then the latest arrival — until it fits; only jobs that rank below the starting one,
        so preemption can never cycle; if it still does not fit, the job waits).
    preempt_overhead_s, resize_overhead_s:
        Checkpoint/restore time added before a preempted job's next segment, or a resized one's.
    log_memory:
        Record every memory operation with the pool's levels (the ``memory`` table).
    log_passes:
        Record a ``schedule`` event per pass (off by default: a pass is not a fact of the run).
    hosts:
        Service name → host for jobs with ``Job.service`` set: when the scheduler starts such a
        job, ``host.start(job, devices, env, log)`` launches the service on the granted devices
        and returns an event that fires when the service is done (its stream has ended). Such
        jobs are not preemptible or resizable (those decisions are rejected).
    pass_per_event:
        ``False`` (default): one pass per instant sees every arrival and completion at that
        instant. ``True``: a pass runs after each arrival and each completion, one event at a
        time (jobs arriving together join the queue one by one, by id), as event-at-a-time
        simulators do.
    """

    def __init__(
        self,
        cluster: Cluster,
        scheduler: ClusterScheduler,
        backend: Backend | None = None,
        pool_factory: Callable[[int], MemoryPool] | None = None,
        *,
        round_s: float | None = None,
        on_memory_full: str = "wait",
        preempt_overhead_s: float = 0.0,
        resize_overhead_s: float = 0.0,
        log_memory: bool = True,
        log_passes: bool = False,
        progress: Callable[[int], None] | None = None,
        hosts: dict | None = None,
        pass_per_event: bool = False,
        fast_path: str = "auto",
    ) -> None:
        from llmos_sim.fastcore import FAST_PATH_MODES

        if fast_path not in FAST_PATH_MODES:
            raise ValueError(f"fast_path must be one of {FAST_PATH_MODES}, got {fast_path!r}")
        self.fast_path = fast_path
        if on_memory_full not in MEMORY_FULL_ACTIONS:
            raise ValueError(f"on_memory_full must be one of {MEMORY_FULL_ACTIONS}, got {on_memory_full!r}")
        if backend is None:
            from llmos_sim.backends.simpy_cluster import SimPyCluster

            backend = SimPyCluster()
        self.cluster = cluster
        self.scheduler = scheduler
        self.backend = backend
        self.env: simpy.Environment = backend.environment()
        backend.bind(self.env, cluster)
        self._queue = queue_of(self.env)
        self._heap = self._queue[0]
        self.log = EventLog()
        log_ = self.log  # the hot kinds' records are appended to the log's columns directly
        # an arrival's data are the job's fields: the record keeps the (immutable) job
        self._c_arrive = log_.derive(E.ARRIVE, attrgetter(*ARRIVE_FIELDS))
        self._c_start, self._c_finish = log_.code_of(E.START), log_.code_of(E.FINISH)
        self._c_preempt: int | None = None  # interned at the first preemption (kinds keep first-use order)
        self._log_time, self._log_code = log_.time.append, log_.code.append
        self._log_subject, self._log_data = log_.subject.append, log_.data.append
        # memory records' data (owner, offset, sizes, the pool's levels: 8 ints) kept as int64 rows
        self._mem_data = (log_.int_rows((E.MEM_ALLOC, E.MEM_FREE), 8).store if log_memory and pool_factory
                          else tuple)
        self.round_s = round_s if round_s is not None else scheduler.round_s
        self.on_memory_full = on_memory_full
        self.preempt_overhead_s = float(preempt_overhead_s)
        self.resize_overhead_s = float(resize_overhead_s)
        self.log_memory = log_memory
        self.log_passes = log_passes
        self.progress = progress
        self.hosts = dict(hosts or {})
        self.pass_per_event = bool(pass_per_event)
        self._pool_factory = pool_factory
        self._max_fit: dict[int, int] = {}  # capacity -> the largest request an empty pool holds
        self._fit_everywhere = -1  # the largest request every device's empty pool holds (-1: not yet known)
        self._wake_s: float | None = None  # the pass the scheduler last asked for (None: none pending)
        # only a scheduler that overrides wake_s is asked after each pass
        self._wants_wake = getattr(type(scheduler), "wake_s", ClusterScheduler.wake_s) is not ClusterScheduler.wake_s
        # quiet passes: a scheduler that can say until when its passes stay empty (settled_until_s)
        # lets the engine skip passes until then while nothing has been logged since the last one
        settles = getattr(scheduler, "settles", None)
        self._settles = bool(callable(settles) and settles()) and not log_passes
        self._quiet_until: float | None = -math.inf  # passes before this time decide nothing ...
        self._quiet_mark = -1  # ... while the log still has this many records
        self._quiet_view: ClusterView | None = None  # the last empty pass's view (None: asked)
        self.passes_skipped = 0  #: passes not run because they provably decide nothing
        self._last_reject: dict[int, str] = {}  # job id -> why its last start was rejected
        # equal device sets and start records are stored once (most jobs repeat a few of each)
        self._devices_seen: dict[tuple, tuple] = {}
        self._starts_seen: dict[tuple, tuple] = {}

        self.pools: list[MemoryPool] = (
            [pool_factory(d.spec.mem_bytes) for d in cluster.devices] if pool_factory else []
        )
        backend.attach(self.log, self.pools)
        self.queue: dict[int, Job] = {}  # insertion order = arrival order (preempted rejoin at the end)
        self.running: dict[int, RunningJob] = {}
        self.suspended: dict[int, RunningJob] = {}  # preempted jobs' progress, keyed by id
        self.finished = FinishedJobs()  # columns; a FinishedJob is built when read
        self.free = FreeDevices(cluster)
        self.device_free_milli = [FULL_DEVICE_MILLI] * cluster.n_devices
        self.partial: dict[int, None] = {}  # devices shared by fractional jobs, with room left
        totals = cluster.totals()
        self.totals = totals
        self.available = {k: v for k, v in totals.items() if k != GPU}
        self._queue_view = self.queue.values()
        self._pass_pending = False
        self._in_pass = False  # a pass requested while one runs is deferred to an event
        self._arrivals_left = 0
        self.under_demand: dict[int, RunningJob] = {}  # running elastic jobs below their demand
        self._type_counts: dict[str, int] = {}
        self._type_mem: dict[str, int] = {}
        self._kinds: dict[tuple[str, int], int] = {}  # (device type, memory) -> devices
        for d in cluster.devices:
            k = (d.spec.name, d.spec.mem_bytes)
            self._kinds[k] = self._kinds.get(k, 0) + 1
        for d in cluster.devices:
            self._type_counts[d.spec.name] = self._type_counts.get(d.spec.name, 0) + 1
            self._type_mem[d.spec.name] = max(self._type_mem.get(d.spec.name, 0), d.spec.mem_bytes)

    # -- running ------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job], until_s: float | None = None) -> EventLog:
        """Simulate ``jobs`` (any order; served by arrival, ties by id) to the end or ``until_s``."""
        table = _run_order(jobs) if isinstance(jobs, JobTable) else None
        if table is None and isinstance(jobs, JobTable):
            jobs = list(jobs)  # read as jobs: the checks below name the offending job
        isfinite = math.isfinite
        if table is not None:
            jobs = table
        elif len(set(map(attrgetter("id"), jobs))) != len(jobs) or not all(map(isfinite, map(attrgetter("arrival_s"), jobs))) \
                or not all(map(isfinite, map(attrgetter("work_flops"), jobs))):  # NaN would never arrive
            seen: set = set()
            for j in jobs:  # name the first offender
                if j.id in seen:
                    raise ValueError(f"duplicate job id {j.id}")
                seen.add(j.id)
                if not (isfinite(j.arrival_s) and isfinite(j.work_flops)):
                    raise ValueError(f"job {j.id}: arrival_s and work_flops must be finite numbers, "
                                     f"got {j.arrival_s} and {j.work_flops}")
        if table is None:
            jobs = sorted(jobs, key=attrgetter("arrival_s", "id"))
        self._ids: set | None = None  # every job id of the run, for :meth:`submit` (made at its first call)
        self._jobs = jobs
        self._next = 0
        self._arrivals_left = len(jobs)
        from llmos_sim import fastcore, fastcore_las

        # a fast core, where the run is one (the same records, without SimPy's loop): the
        # key-order core (llmos_sim.fastcore, which reads a job table's columns), else the
        # preemptive LAS core (llmos_sim.fastcore_las, given the jobs)
        core = fastcore if fastcore.why_not(self, jobs, until_s) is None else None
        if table is not None and core is None:
            self._jobs = jobs = list(table)  # the other paths keep the jobs (built once here)
        if core is None and fastcore_las.why_not(self, jobs, until_s) is None:
            core = fastcore_las
        self.fast_path_used = core is not None
        if self._settles and self.pools and not self.log_memory and not self.fast_path_used \
                and any(j.mem_trace for j in jobs):
            self._settles = False  # memory traces change the pools without a record: never skip
        if jobs and not self.fast_path_used:
            self._at(jobs[0].arrival_s, self._arrive_batch)
        if self.round_s and not self.fast_path_used:
            self._at(self.env.now + self.round_s, self._round_tick)
        with sparse_gc():
            if core is not None:  # the same records, without SimPy's loop
                reason = core.run(self, jobs)
            elif until_s is None:
                self.env.run()
                reason = "drained"
            else:
                self.env.run(until=until_s)
                # only SimPy's own stop marker (priority < 0) left: the run ended before the horizon
                reason = "until" if events_pending(self._heap) else "drained"
        if self.queue and reason == "drained":
            reason = "stalled"  # jobs wait that no future event can start
            self._fail_stalled()
        self.log.emit(self.env.now, E.END, None, (reason,))
        self.backend_facts = self.backend.close()
        return self.log

    def _fail_stalled(self) -> None:
        """The run drained with jobs still queued: nothing left can start them (no arrival,
        completion or round will come). Each fails with the reason, and the run says so."""
        now, emit = self.env.now, self.log.emit
        ids = list(self.queue)
        for jid in ids:
            last = self._last_reject.get(jid)
            why = "stalled: nothing running and no event left that could start it"
            emit(now, E.FAIL, jid, (why + (f" (last rejected: {last})" if last else " (never placed)"),))
            self.suspended.pop(jid, None)
        self.queue.clear()
        log.warning("the run stalled at t=%g s: %d queued job(s) could never start and were failed "
                    "(first: job %s)", now, len(ids), ids[0])

    def _at(self, time_s: float, callback: Callable, priority: int = 1) -> None:
        """Call ``callback(event)`` at absolute ``time_s`` (an engine-internal event)."""
        push_at(self._queue, time_s, Instant(callback), priority)

    def _arrive_batch(self, _ev: simpy.Event) -> None:
        """Every job arriving at this instant joins the queue, then one pass is requested
        (``pass_per_event``: a pass after each job, in id order). The next arrival instant is
        scheduled first either way, so both rules see the same order of events."""
        jobs, i, n = self._jobs, self._next, len(self._jobs)
        t = jobs[i].arrival_s
        j = i + 1
        while j < n and jobs[j].arrival_s == t:
            j += 1
        self._arrivals_left -= j - i
        self._next = j
        if j < n:
            self._at(jobs[j].arrival_s, self._arrive_batch)
        now, queue, emit = self.env.now, self.queue, self.log.emit
        t_app, c_app, s_app, d_app = self._log_time, self._log_code, self._log_subject, self._log_data
        arrive = self._c_arrive
        per_event = self.pass_per_event
        for k in range(i, j):
            job = jobs[k]
            t_app(now)  # EventLog.emit, inlined
            c_app(arrive)
            s_app(job.id)
            d_app(job)  # derived: (job.gpus, job.work_flops, job.gpu_milli, job.tenant)
            why = self._unsatisfiable(job)
            if why:
                emit(now, E.FAIL, job.id, (why,))
            else:
                queue[job.id] = job
                if per_event:
                    self.request_pass()
        if not per_event:
            self.request_pass()

    def submit(self, job: Job) -> None:
        """A job submitted during the run (by a service host asking for one more replica): it
        arrives now, exactly as a job of the workload would (an ``arrive`` record; a job that
        can never start fails at once; else it joins the queue and a pass is requested). Call
        it from inside the simulation (an event callback or process). Its ``id`` must differ
        from every other job's; its arrival is logged at the current time (give it that
        ``arrival_s`` too, so the job and its records agree)."""
        if self._ids is None:
            self._ids = set(map(attrgetter("id"), self._jobs))
        if job.id in self._ids:
            raise ValueError(f"duplicate job id {job.id}")
        self._ids.add(job.id)
        now, emit = self.env.now, self.log.emit
        emit(now, E.ARRIVE, job.id, job)  # a derived kind: the job is the record's data (see __init__)
        why = self._unsatisfiable(job)
        if why:
            emit(now, E.FAIL, job.id, (why,))
            return
        self.queue[job.id] = job
        self.request_pass()

    def _unsatisfiable(self, job: Job) -> str | None:
        """Why ``job`` could never start on this cluster, or ``None``."""
        if job.service is not None and job.service not in self.hosts:
            return f"no host for service {job.service!r}"
        if job.device_type is None and not job.demand and job.min_devices <= self.cluster.n_devices:
            nbytes = job.mem_bytes_per_device
            if not self.pools or nbytes <= 0:
                return None  # the common case, in one test
            if self._fit_everywhere < 0:
                self._fit_everywhere = min(self._largest_fit(cap) for _, cap in self._kinds)
            if nbytes <= self._fit_everywhere:
                return None  # fits every device's empty pool
        n_dev = self._type_counts.get(job.device_type, 0) if job.device_type else self.cluster.n_devices
        if job.min_devices > n_dev:
            kind = f" {job.device_type}" if job.device_type else ""
            return f"needs {job.min_devices}{kind} devices, the cluster has {n_dev}"
        if self.pools and job.mem_bytes_per_device:
            cap = self._type_mem.get(job.device_type, 0) if job.device_type else max(self._type_mem.values())
            if job.mem_bytes_per_device > cap:
                return f"needs {job.mem_bytes_per_device} B per device, the largest device has {cap} B"
            n_fit = self._devices_ever_fitting(job)
            if job.min_devices > n_fit:
                return (f"needs {job.min_devices} devices whose memory pool can hold {job.mem_bytes_per_device} B "
                        f"(asked of an empty pool: the pool's rounding or layout never fits it), "
                        f"the cluster has {n_fit}")
        for k, v in job.demand.items():
            if v * job.min_devices / job.gpus > self.totals.get(k, 0.0):
                return f"needs {v} {k}, the cluster has {self.totals.get(k, 0.0)}"
        return None

    def _devices_ever_fitting(self, job: Job) -> int:
        """Devices (of the job's pinned type, if any) whose memory pool, empty, could hold the
        job's ``M_d``: the pool is asked, so its rounding and layout count (a buddy pool rounds
        to a power of two; a segment-based one to its segments)."""
        nbytes = job.mem_bytes_per_device
        return sum(count for (name, cap), count in self._kinds.items()
                   if (job.device_type is None or name == job.device_type) and nbytes <= self._largest_fit(cap))

    def _largest_fit(self, cap: int) -> int:
        """The largest request an empty pool of ``cap`` bytes holds: a binary search over
        ``fits`` on a fresh pool from the pool factory (once per capacity; an empty pool that
        holds n bytes holds any fewer)."""
        best = self._max_fit.get(cap)
        if best is None:
            pool = self._pool_factory(cap)
            lo, hi = 0, cap  # fits(lo) holds (or lo == 0); the answer is in [lo, hi]
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if pool.fits(mid):
                    lo = mid
                else:
                    hi = mid - 1
            best = self._max_fit[cap] = lo
        return best

    def _round_tick(self, _ev: simpy.Event) -> None:
        """A periodic pass (preemptive/time-sliced policies); whether another round follows is
        decided after this instant's pass (:meth:`_round_next`), so a completion at the same
        instant that leaves nothing running does not end the rounds while the pass starts more."""
        self.request_pass()
        self._at(self.env.now, self._round_next, PASS_PRIORITY + 1)

    def _round_next(self, _ev: simpy.Event) -> None:
        if self._arrivals_left or self.running:
            self._at(self.env.now + self.round_s, self._round_tick)
        # else: nothing runs and nothing will arrive; the rounds (and the run) end here

    def _wake(self, _ev: simpy.Event) -> None:
        """A pass the scheduler asked for (a moment its ranking changes), unless a later pass
        withdrew or moved it."""
        if self._wake_s != self.env.now:
            return
        self._wake_s = None
        self.request_pass()

    # -- scheduling passes ----------------------------------------------------------------
    def request_pass(self) -> None:
        """Ask for one scheduling pass at the current instant (at most one is pending).

        The pass must see everything that happens at this instant, so it is normally an event
        after all others at ``now``. When nothing else is due at ``now`` (the heap's next event
        is later) and no pass is running, it runs right away instead: the same order, one
        event fewer per arrival and completion.
        """
        if self.pass_per_event and not self._in_pass:
            self._pass(None)  # event at a time: this event's pass, now
            return
        if self._pass_pending:
            return
        if not self._in_pass and nothing_due_at(self._heap, self.env.now):
            self._pass(None)
        else:
            self._pass_pending = True
            self._at(self.env.now, self._pass, PASS_PRIORITY)

    def view(self) -> ClusterView:
        """The read-only view a policy gets now."""
        return ClusterView(self.env.now, self.cluster, self._queue_view, self.running, Tentative(self.free),
                           dict(self.available), self.device_free_milli, self.pools, self.finished,
                           under_demand=self.under_demand, partial=self.partial, suspended=self.suspended)

    def _pass(self, _ev: simpy.Event | None) -> None:
        self._pass_pending = False
        if not self.queue and not self.under_demand and not self.round_s:
            return
        if self.log_passes:
            self.log.emit(self.env.now, E.SCHEDULE, None, (len(self.queue), len(self.running)))
        self._in_pass = True
        try:
            view = self.view()
            if self._settles and len(self.log) == self._quiet_mark and self.env.now < self._quiet():
                self.passes_skipped += 1  # nothing happened since a pass that decided nothing
            else:
                decision = self.scheduler.decide(view)
                if decision:
                    self.apply(decision)
                elif self._settles:  # how long it stays quiet is asked only if a pass comes first
                    self._quiet_mark, self._quiet_view, self._quiet_until = len(self.log), view, None
            if self._wants_wake:
                self._ask_wake(view)
        finally:
            self._in_pass = False

    def _quiet(self) -> float:
        """Until when passes decide nothing, per the scheduler, asked once after the last pass
        that decided nothing (with that pass's view; nothing has been logged since)."""
        if self._quiet_until is None:
            until = self.scheduler.settled_until_s(self._quiet_view)  # type: ignore[attr-defined]
            self._quiet_until = -math.inf if until is None else until
            self._quiet_view = None
        return self._quiet_until

    def _ask_wake(self, view: ClusterView) -> None:
        """Schedule a pass at the moment the scheduler says its ranking next changes (e.g. a
        running job crossing a queue threshold). Each pass's answer replaces the last one: a
        moment no longer named (the job that was to cross finished or was preempted since, or
        nothing runs) is withdrawn, so a pass runs only at a moment the latest ranking names."""
        w = self.scheduler.wake_s(view) if self.running else None
        if w is None or w <= self.env.now:
            self._wake_s = None
        elif w != self._wake_s:
            self._wake_s = w
            self._at(w, self._wake)

    def apply(self, d: Decision) -> None:
        """Apply a decision: preempts, then resizes, then starts. What no longer holds is
        rejected with a ``reject`` event and changes nothing."""
        for p in d.preempts:
            r = self.running.get(p.job_id)
            if r is None:
                self._reject(p.job_id, "preempt: not running")
            elif r.job.service is not None:
                self._reject(p.job_id, "preempt: a service is not preemptible")
            else:
                self._preempt(r)
        for z in d.resizes:
            r = self.running.get(z.job_id)
            if r is None:
                self._reject(z.job_id, "resize: not running")
            elif r.job.service is not None:
                self._reject(z.job_id, "resize: a service is not resizable")
            else:
                self._resize(r, tuple(z.devices))
        for s in d.starts:
            job = self.queue.get(s.job_id)
            if job is None:
                self._reject(s.job_id, "start: not queued")
            else:
                self._start(job, tuple(s.devices))

    def _reject(self, job_id: int, reason: str) -> None:
        self._last_reject[job_id] = reason
        self.log.emit(self.env.now, E.REJECT, job_id, (reason,))

    # -- grants -----------------------------------------------------------------------------
    def _whole_free(self, job: Job, devices: tuple[int, ...]) -> bool:
        """The common case of :meth:`_check_devices`, in one sweep: as many devices as the job
        takes, distinct, existing and wholly free (the job's share and pin are checked by the caller)."""
        milli, n = self.device_free_milli, len(devices)
        if not ((job.gpus if job.min_gpus is None else job.min_gpus) <= n <= job.gpus and len(set(devices)) == n):
            return False
        n_dev = len(milli)
        for dv in devices:
            if not (0 <= dv < n_dev and milli[dv] == FULL_DEVICE_MILLI):
                return False
        return True

    def _check_devices(self, job: Job, devices: tuple[int, ...], held: tuple[int, ...] = ()) -> str | None:
        """Why ``job`` cannot run on ``devices`` now (``held``: devices it already has), or ``None``."""
        n = len(devices)
        if not held and job.gpu_milli == FULL_DEVICE_MILLI and job.device_type is None and self._whole_free(job, devices):
            return None  # the common case
        if len(set(devices)) != n:
            return "devices repeat"
        if job.gpu_milli < FULL_DEVICE_MILLI:
            if n != job.gpus:
                return f"fractional job needs exactly {job.gpus} devices, got {n}"
        elif not (job.min_devices <= n <= job.gpus):
            return f"granted {n} devices, job needs {job.min_devices}..{job.gpus}"
        milli = self.device_free_milli
        for dv in devices:
            if not 0 <= dv < self.cluster.n_devices:
                return f"device {dv} does not exist"
            if dv in held:
                continue
            if job.gpu_milli < FULL_DEVICE_MILLI:
                if milli[dv] < job.gpu_milli:
                    return f"device {dv} has {milli[dv]} milli free, job needs {job.gpu_milli}"
            elif milli[dv] != FULL_DEVICE_MILLI:
                return f"device {dv} is busy"
            if job.device_type is not None and self.cluster.devices[dv].spec.name != job.device_type:
                return f"device {dv} is not a {job.device_type}"
        return None

    def _grant_resources(self, job: Job, n: int, held: dict[str, float] | None = None) -> dict[str, float] | None:
        """``R* = min(R, R^d)`` for each non-gpu type, scaled to ``n`` devices; a start needs the
        full (scaled) demand, so ``None`` if any type falls short."""
        if not job.demand:
            return {}
        scale = n / job.gpus
        out = {}
        for k, v in job.demand.items():
            want = v * scale
            have = self.available.get(k, 0.0) + (held or {}).get(k, 0.0)
            got = min(have, want)  # the seed's R_i* = min(R_i, R_i^d)
            if got + CAPACITY_TOLERANCE < want:
                return None
            out[k] = got
        return out

    def _take(self, job: Job, devices: tuple[int, ...], resources: dict[str, float]) -> None:
        milli = self.device_free_milli
        share = job.gpu_milli
        if share == FULL_DEVICE_MILLI and not resources:  # the common case
            self.free.take(devices)
            for dv in devices:
                milli[dv] = 0
            return
        whole = [dv for dv in devices if milli[dv] == FULL_DEVICE_MILLI]
        if whole:
            self.free.take(whole)
        partial = self.partial
        for dv in devices:
            milli[dv] -= share
            if 0 < milli[dv] < FULL_DEVICE_MILLI:
                partial[dv] = None
            else:
                partial.pop(dv, None)
        for k, v in resources.items():
            self.available[k] -= v

    def _give(self, job: Job, devices: tuple[int, ...], resources: dict[str, float]) -> None:
        milli = self.device_free_milli
        share = job.gpu_milli
        if share == FULL_DEVICE_MILLI and not resources:  # the common case
            for dv in devices:
                milli[dv] = FULL_DEVICE_MILLI
            self.free.give(devices)
            return
        partial = self.partial
        for dv in devices:
            milli[dv] += share
            if 0 < milli[dv] < FULL_DEVICE_MILLI:
                partial[dv] = None
            else:
                partial.pop(dv, None)
        whole = [dv for dv in devices if milli[dv] == FULL_DEVICE_MILLI]
        if whole:
            self.free.give(whole)
        for k, v in resources.items():
            self.available[k] += v

    # -- memory -----------------------------------------------------------------------------
    def _alloc_memory(self, job: Job, devices: Sequence[int], nbytes: int | None = None) -> list[tuple[int, object]] | None:
        """Allocate ``nbytes`` (default ``M_d``) on every device, all or nothing."""
        nbytes = job.mem_bytes_per_device if nbytes is None else nbytes
        if not self.pools or nbytes <= 0:
            return []
        got = []
        now, emit, pools = self.env.now, self.log.emit, self.pools
        for dv in devices:
            a = pools[dv].allocate(nbytes, job.id)
            if a is None:
                if self.log_memory:
                    emit(now, E.MEM_FAIL, dv, (job.id, nbytes, *pools[dv].levels()))
                self._free_memory(got)
                return None
            if self.log_memory:
                emit(now, E.MEM_ALLOC, dv, self._mem_data((job.id, a.offset, a.nbytes, a.requested, *pools[dv].levels())))
            got.append((dv, a))
        return got

    def _evict_for(self, job: Job, devices: Sequence[int]) -> bool:
        """Preempt lower-ranked jobs holding memory on ``devices`` until ``job``'s ``M_d`` fits on
        each; True if it now fits everywhere. Rank: (priority, earlier arrival, lower id)."""
        def rank(j: Job) -> tuple:
            return (-j.priority, j.arrival_s, j.id)

        mine, need = rank(job), job.mem_bytes_per_device
        for dv in devices:
            pool = self.pools[dv]
            victims = sorted((r for r in self.running.values()
                              if rank(r.job) > mine and any(d == dv for d, _ in r.allocations)),
                             key=lambda r: rank(r.job), reverse=True)
            for r in victims:
                if pool.fits(need):
                    break
                self._preempt(r)
            if not pool.fits(need):
                return False
        return True

    def _free_memory(self, allocations: list) -> None:
        if not allocations:
            return
        now, emit, pools = self.env.now, self.log.emit, self.pools
        for dv, a in allocations:
            pools[dv].free(a)
            if self.log_memory:
                emit(now, E.MEM_FREE, dv, self._mem_data((a.tag, a.offset, a.nbytes, a.requested, *pools[dv].levels())))

    # -- job life cycle -------------------------------------------------------------------
    def _start(self, job: Job, devices: tuple[int, ...]) -> None:
        if job.gpu_milli == FULL_DEVICE_MILLI and job.device_type is None and not job.demand and not self.pools:
            # the common case (whole devices, no pin, no other resource, no memory model):
            # _take's grant inlined; anything else takes the general path below, which also
            # names what is wrong
            if self._whole_free(job, devices):
                self.free.take(devices)
                milli = self.device_free_milli
                for dv in devices:
                    milli[dv] = 0
                return self._launch(job, devices, [], {})
        why = self._check_devices(job, devices)
        resources = None if why else (self._grant_resources(job, len(devices)) if job.demand else {})
        if why is None and resources is None:
            why = "resources: the seed's min(R, R^d) falls short of the demand"
        if why:
            return self._reject(job.id, "start: " + why)
        allocs = self._alloc_memory(job, devices) if self.pools else []
        if allocs is None and self.on_memory_full == "preempt" and self._evict_for(job, devices):
            allocs = self._alloc_memory(job, devices)
        if allocs is None:
            if self.on_memory_full == "fail":
                del self.queue[job.id]
                self.log.emit(self.env.now, E.FAIL, job.id, ("memory: does not fit the device pools",))
            else:
                self._reject(job.id, "start: memory does not fit")
            return
        self._take(job, devices, resources)
        self._launch(job, devices, allocs, resources)

    def _launch(self, job: Job, devices: tuple[int, ...], allocs: list, resources: dict[str, float]) -> None:
        """The granted ``job`` (devices, memory and resources taken) leaves the queue and runs:
        a new record, or its suspended one resumed."""
        del self.queue[job.id]
        self._last_reject.pop(job.id, None)
        r = self.suspended.pop(job.id, None)
        if r is None:
            r = RunningJob(job)
            r.first_start_s = self.env.now
            overhead = job.preprocess_s
        else:
            overhead = self.preempt_overhead_s
        r.allocations = allocs
        r.resources = resources
        self.running[job.id] = r
        self._segment(r, devices, overhead)

    def _segment(self, r: RunningJob, devices: tuple[int, ...], overhead_s: float, emit: bool = True) -> None:
        """Start a run segment of ``r`` on ``devices`` after ``overhead_s`` (``emit``: log a
        ``start``; a resize logs its own ``resize`` record instead)."""
        job, now = r.job, self.env.now
        dev_types = tuple(map(type, devices))
        key = (devices, dev_types)  # _shared, inlined: equal device sets are stored once
        got = self._devices_seen.get(key)
        if got is not None:
            devices = got
        elif len(self._devices_seen) < _SHARED_MAX:
            self._devices_seen[key] = devices
        r.devices = devices
        r.share_milli = job.gpu_milli
        r.seg_start_s = now
        r.seg_overhead_s = overhead_s
        if job.min_gpus is not None and job.min_gpus < job.gpus and len(devices) < job.gpus:  # job.elastic, inlined
            self.under_demand[job.id] = r
        left = job.work_flops - r.done_flops
        task = Task(job, devices, left if left > 0.0 else 0.0, job.gpu_milli, overhead_s,
                    r.n_preempt + r.n_resize, tuple(r.allocations) if r.allocations else ())
        r.task = task
        if job.service is not None:  # a service runs until its stream ends, on its host
            done, r.rate_flops_s = self.hosts[job.service].start(job, devices, self.env, self.log), 0.0
        else:
            done, r.rate_flops_s = self.backend.start(task)
        if emit:  # EventLog.emit, inlined
            self._log_time(now)
            self._log_code(self._c_start)
            self._log_subject(job.id)
            data = (devices, job.gpu_milli, r.rate_flops_s)
            self._log_data(_shared(self._starts_seen, data, (dev_types, type(data[1]), type(data[2]))))
        epoch = r.epoch
        done.callbacks.append(lambda ev: self._work_done(r, epoch, ev))
        if job.mem_trace and self.pools:
            self.env.process(self._replay_memory(r, epoch))

    def _end_segment(self, r: RunningJob) -> None:
        """Cut the current segment short: keep its progress, ignore its completion event."""
        now = self.env.now
        measured = self.backend.done_flops(r.task)  # a real backend knows; the model estimates
        r.done_flops = min(r.job.work_flops, r.done_at(now) if measured is None else r.done_flops + measured)
        r.settle(now)
        r.epoch += 1
        if self.under_demand:
            self.under_demand.pop(r.job.id, None)
        self.backend.cancel(r.task)
        if r.transient:
            self._free_transient(r)  # the next segment replays the memory trace from its start

    def _replay_memory(self, r: RunningJob, epoch: int):
        """Replay the job's memory trace on each of its devices during this segment (a SimPy
        process; stops when the segment ends). A failed allocation fails the job, as a real
        out-of-memory error does."""
        env, job = self.env, r.job
        t0 = env.now + r.seg_overhead_s
        for t, op, key, nbytes in job.mem_trace:
            at = t0 + float(t)
            if at > env.now:
                yield env.timeout(at - env.now)
            if r.epoch != epoch or job.id not in self.running:
                return  # the segment ended (finished, preempted, failed)
            if op == "alloc":
                got = self._alloc_memory(job, r.devices, int(nbytes))
                if got is None:
                    self.fail_running(r, f"out of memory: a {int(nbytes)} B allocation of its memory trace "
                                         f"(key {key}) did not fit")
                    return
                r.transient[key] = got
            else:
                self._free_memory(r.transient.pop(key, []))

    def _work_done(self, r: RunningJob, epoch: int, ev: simpy.Event) -> None:
        ok, value = outcome(ev)
        if not ok:  # the backend failed the task (e.g. a real out-of-memory error)
            ev.defused = True
            if epoch == r.epoch:
                self.fail_running(r, f"{type(value).__name__}: {value}")
            return
        if epoch != r.epoch:
            return  # a preempted or resized segment's stale completion
        r.done_flops = r.job.work_flops
        if r.job.output_s > 0:  # seed step 5: output (devices stay held)
            r.epoch += 1
            e = r.epoch
            self._at(self.env.now + r.job.output_s, lambda _e: e == r.epoch and self._finish(r))
        else:
            self._finish(r)

    def _finish(self, r: RunningJob) -> None:
        job, now = r.job, self.env.now
        r.settle(now)
        self.under_demand.pop(job.id, None)
        del self.running[job.id]
        self._log_time(now)  # EventLog.emit, inlined
        self._log_code(self._c_finish)
        self._log_subject(job.id)
        self._log_data(())
        self._release(r)
        self.finished.add(job, r.first_start_s, now, r.devices, r.compute_gpu_s)
        if self.progress is not None:
            self.progress(1)
        if self.queue or self.under_demand:
            self.request_pass()

    def fail_running(self, r: RunningJob, reason: str) -> None:
        """A running job failed (its backend raised): it alone ends; its grant is released."""
        job, now = r.job, self.env.now
        r.settle(now)
        r.epoch += 1
        self.under_demand.pop(job.id, None)
        del self.running[job.id]
        self.log.emit(now, E.FAIL, job.id, (reason,))
        self._release(r)
        if self.queue or self.under_demand:
            self.request_pass()

    def _free_transient(self, r: RunningJob) -> None:
        """Free the live allocations of the job's memory trace (its segment ended)."""
        if r.transient:
            for allocs in r.transient.values():
                self._free_memory(allocs)
            r.transient = {}

    def _release(self, r: RunningJob) -> None:
        if r.transient:
            self._free_transient(r)
        if r.allocations:
            self._free_memory(r.allocations)
            r.allocations = []
        if r.job.gpu_milli == FULL_DEVICE_MILLI and not r.resources:  # _give's common case, inlined
            milli = self.device_free_milli
            for dv in r.devices:
                milli[dv] = FULL_DEVICE_MILLI
            self.free.give(r.devices)
            return
        self._give(r.job, r.devices, r.resources)
        if r.resources:
            r.resources = {}

    def _preempt(self, r: RunningJob) -> None:
        job, now = r.job, self.env.now
        self._end_segment(r)
        del self.running[job.id]
        r.n_preempt += 1
        r.stopped_s = now
        c = self._c_preempt
        if c is None:
            c = self._c_preempt = self.log.code_of(E.PREEMPT)
        self._log_time(now)  # EventLog.emit, inlined
        self._log_code(c)
        self._log_subject(job.id)
        self._log_data((r.devices, r.done_flops))
        self._release(r)
        self.suspended[job.id] = r
        self.queue[job.id] = job
        self.request_pass()

    def _resize(self, r: RunningJob, devices: tuple[int, ...]) -> None:
        job = r.job
        why = self._check_devices(job, devices, held=r.devices)
        resources = None if why else self._grant_resources(job, len(devices), held=r.resources)
        if why is None and resources is None:
            why = "resources: the seed's min(R, R^d) falls short of the demand"
        if why:
            return self._reject(job.id, "resize: " + why)
        old = r.devices
        keep = [a for a in r.allocations if a[0] in devices]
        drop = [a for a in r.allocations if a[0] not in devices]
        added = tuple(dv for dv in devices if dv not in old)
        new_allocs = self._alloc_memory(job, added)
        if new_allocs is None:
            return self._reject(job.id, "resize: memory does not fit")
        self._end_segment(r)
        self._free_memory(drop)
        self._give(job, tuple(dv for dv in old if dv not in devices), {})
        for k, v in r.resources.items():
            self.available[k] += v
        self._take(job, added, resources)
        r.resources = resources
        r.allocations = keep + new_allocs
        r.n_resize += 1
        self.log.emit(self.env.now, E.RESIZE, job.id, (old, devices))
        self._segment(r, devices, self.resize_overhead_s, emit=False)
        self.request_pass()
