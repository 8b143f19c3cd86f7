"""A reference simulator for training jobs on one node, written from the documented semantics.

Independent of the engine: a plain event loop (``heapq`` for the arrivals, the next moment of
any kind taken as a minimum), no SimPy, no engine, view or policy code. It exists to be
compared with ``llmos_sim`` on random workloads (``test_training_oracle.py``).

Scope: one node of ``n_devices`` identical devices of 1 FLOP/s (a job's work is its
device-seconds), rigid whole-device jobs (``gpus`` ≤ ``n_devices``, so every job runs on one
node), no memory model, no preprocess or output step, ``pass_per_event`` off, Pack placement.

Semantics implemented, with where they are stated:

- One pass per instant, after every arrival and completion at that instant
  (docs/architecture.md, "Engine rules": "a pass runs at most once per instant ... so all
  arrivals and completions at time t are in the view"). Passes run at arrivals, completions,
  round ticks and wake-ups, and once more at the same instant after a pass that preempted
  ("Passes come where the engine requests them: after an instant's arrivals, after a finish
  with jobs waiting, on each round, and again at the same instant after a pass that
  preempted").
- Rounds: a pass every ``round_s`` seconds; the ticks are the multiples of ``round_s`` from
  time 0 (the engine's clock starts at 0), and they continue while jobs run or arrivals are
  left ("Rounds stop only when nothing runs and no arrival is left").
- FIFO (``scheduler=fifo``, ``FIFO`` docstring): arrival order (then id), strict head-of-line
  blocking. SJF (``SJF`` docstring): oracle duration (work over the job's devices), then
  arrival, then id; jobs that do not fit are skipped (``blocking=False``). Non-preemptive.
- Preemptive policies (``llmos_sim.policies.scheduling.preemptive`` module docstring, "One
  pass"): rank queued and running jobs by key (lower first); select greedily while the demand
  fits the devices (skipping jobs that do not fit); running jobs not selected are candidate
  victims; the selected queued jobs are placed, in rank order, on the free devices plus the
  candidate victims' devices; only the victims whose devices a start uses are preempted.
  (The work-conserving step can start nothing on one node: every job it could start was
  skipped when at least as many devices were left, so it is not modelled.)
- Pack on one node (``Pack`` docstring): "Devices within a node in ascending index".
- Preemption ("Engine rules"): progress kept, the job requeued, its next segment pays
  ``preempt_overhead_s`` before computing.
- Attained service ("Engine rules", "Service, for LAS-style policies"): compute
  device-seconds only (``service_overhead: false``); a job still in its segment's overhead
  is never preempted and is not ranked (``preempt_in_overhead: false``; its devices are not
  offered to the pass). "In its overhead" is a segment with an overhead ``o > 0`` from its
  start up to and including ``start + o``; a segment without overhead is never protected
  (the docs left both ends open; this is what the engine does, and the docs now say so).
- ``min_run_s`` (``PreemptiveScheduler`` docstring): "a running segment younger than this is
  never preempted": protected like a job in its overhead while ``t - start < min_run_s``
  (the segment's age counts its overhead).
- Keys: SRTF, remaining work over the job's devices, then arrival, then id (``SRTF``
  docstring; ``PreemptiveScheduler.key``: "end with job.arrival_s, job.id"). LAS: attained
  service (``service``: ``gpu_s`` device-seconds or ``time_s`` seconds, ``LAS`` docstring),
  then arrival, then id. 2D-LAS (``DiscretizedLAS`` docstring, FIFO order, arrival
  tie-break): the queue (how many thresholds the service has reached), with
  ``running_first`` running jobs ahead of waiting ones within a queue, then arrival, then
  id, or with ``tie_break="previous_rank"`` the order of entry into the queue (a job entering
  by arrival or demotion goes behind those in it; several in their previous order); a pass
  at the moment a running job's service reaches a threshold (``wake_s``, asked after every
  pass while jobs wait, a job in its overhead gaining service only after it). Each pass's
  answer replaces the last: a moment a later pass no longer names is withdrawn ("Engine
  rules").

Not covered: several nodes (placement beyond ascending devices), fractional, elastic or
memory-holding jobs, preprocess and output steps, per-event passes, 2D-LAS's promotion
and Gittins order, the work-conserving step (see above).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

POLICIES = ("fifo", "sjf", "srtf", "las", "2dlas")


@dataclass
class OJob:
    id: int
    arrival: float
    seconds: float  # run time on its ``gpus`` devices
    gpus: int
    done: float = 0.0  # device-seconds of work finished before the current segment
    service: float = 0.0  # compute device-seconds before the current segment
    seg_start: float | None = None  # None: not running
    overhead: float = 0.0  # the current (or next) segment's restore time
    devices: tuple[int, ...] = ()
    starts: list[float] = field(default_factory=list)
    preempts: list[float] = field(default_factory=list)
    finish: float | None = None

    @property
    def work(self) -> float:
        return self.seconds * self.gpus

    def computed(self, t: float) -> float:
        """Compute seconds of the current segment by ``t``."""
        return max(0.0, t - self.seg_start - self.overhead)

    def restoring(self, t: float) -> bool:
        """Still in the segment's restore overhead at ``t`` (never true without one)."""
        return self.overhead > 0 and t <= self.seg_start + self.overhead

    def done_at(self, t: float) -> float:
        return self.done + (self.gpus * self.computed(t) if self.seg_start is not None else 0.0)

    def service_at(self, t: float) -> float:
        return self.service + (self.gpus * self.computed(t) if self.seg_start is not None else 0.0)

    def end_time(self) -> float:
        return self.seg_start + self.overhead + (self.work - self.done) / self.gpus


def simulate(jobs, n_devices: int, policy: str, *, round_s: float | None = None,
             thresholds: tuple[float, ...] = (), preempt_overhead_s: float = 0.0,
             min_run_s: float = 0.0, service: str = "gpu_s",
             running_first: bool = True, tie_break: str = "arrival") -> dict[int, OJob]:
    """Run ``jobs`` (``(id, arrival, seconds, gpus)`` tuples) and return each job's record."""
    assert policy in POLICIES and service in ("gpu_s", "time_s")
    js = {i: OJob(i, a, s, g) for i, a, s, g in jobs}
    arrivals = [(j.arrival, j.id) for j in js.values()]
    heapq.heapify(arrivals)
    queue: list[OJob] = []  # insertion order: arrivals by id, preempted jobs at the end
    running: dict[int, OJob] = {}
    free = set(range(n_devices))

    def start(j: OJob, devs, t: float) -> None:
        j.seg_start, j.devices = t, tuple(devs)
        j.starts.append(t)
        free.difference_update(devs)
        queue.remove(j)
        running[j.id] = j

    def stop(j: OJob, t: float) -> None:
        j.done, j.service = j.done_at(t), j.service_at(t)
        j.seg_start = None
        free.update(j.devices)
        j.devices = ()
        del running[j.id]

    entry: dict[int, tuple[int, int]] = {}  # previous_rank: job id -> (queue, place in it)
    places = itertools.count()

    def enter_queues(t: float) -> None:
        """``previous_rank``: jobs entering a queue (arrival, demotion) go behind those in it,
        several in their previous order (arrivals: by arrival, then id)."""
        new = []
        for j in list(running.values()) + queue:
            q = sum(1 for th in thresholds if served(j, t) >= th)
            if entry.get(j.id, (None,))[0] != q:
                new.append((entry.get(j.id, (-1, 0)), j.arrival, j.id, q))
        for _, _, i, q in sorted(new):
            entry[i] = (q, next(places))

    def served(j: OJob, t: float) -> float:
        return j.service_at(t) / (j.gpus if service == "time_s" else 1)

    def key(j: OJob, t: float):
        if policy == "srtf":
            return ((j.work - j.done_at(t)) / j.gpus, j.arrival, j.id)
        if policy == "las":
            return (served(j, t), j.arrival, j.id)
        s = served(j, t)
        q = sum(1 for th in thresholds if s >= th)
        runs = j.seg_start is not None and running_first
        if tie_break == "previous_rank":
            return (q, 0 if runs else 1, entry[j.id][1])
        return (q, 0 if runs else 1, j.arrival, j.id)

    def protected(j: OJob, t: float) -> bool:
        return j.restoring(t) or t - j.seg_start < min_run_s

    def fixed_order_pass(t: float) -> bool:
        if policy == "fifo":
            order = sorted(queue, key=lambda j: (j.arrival, j.id))
        else:
            order = sorted(queue, key=lambda j: (j.seconds, j.arrival, j.id))
        for j in order:
            if j.gpus <= len(free):
                start(j, sorted(free)[: j.gpus], t)
            elif policy == "fifo":
                break
        return False

    def preemptive_pass(t: float) -> bool:
        if tie_break == "previous_rank":
            enter_queues(t)
        rankable = [j for j in running.values() if not protected(j, t)]
        cap = n_devices - sum(j.gpus for j in running.values() if protected(j, t))
        ranking = sorted(rankable + queue, key=lambda j: key(j, t))
        selected = []
        for j in ranking:
            if j.gpus <= cap:
                selected.append(j)
                cap -= j.gpus
        victims = [j for j in rankable if j not in selected]
        pool = sorted(free.union(*(v.devices for v in victims)))
        plans = []
        for j in selected:
            if j.seg_start is None:
                devs, pool = pool[: j.gpus], pool[j.gpus:]
                plans.append((j, devs))
        used = {d for _, devs in plans for d in devs}
        preempted = [v for v in victims if used.intersection(v.devices)]
        for v in preempted:
            stop(v, t)
            v.preempts.append(t)
            v.overhead = preempt_overhead_s
            queue.append(v)
        for j, devs in plans:
            start(j, devs, t)
        return bool(preempted)

    def crossing(t: float) -> float | None:
        """2D-LAS's ``wake_s`` after a pass at ``t``: the first moment a running job's service
        reaches its queue's threshold (a job in its overhead gains none before it ends), while
        jobs wait."""
        if not queue:
            return None
        ends = []
        for j in running.values():
            q = sum(1 for th in thresholds if served(j, t) >= th)
            if q < len(thresholds):
                rate = 1 if service == "time_s" else j.gpus
                ends.append(j.seg_start + j.overhead + (thresholds[q] - served(j, j.seg_start)) / rate)
        return min(ends, default=None)

    run_pass = fixed_order_pass if policy in ("fifo", "sjf") else preemptive_pass
    due = None  # the wake the last pass asked for (a later pass's answer replaces it)
    t = 0.0
    while arrivals or running or queue:
        moments = [j.end_time() for j in running.values()] + ([due] if due is not None and due > t else [])
        if arrivals:
            moments.append(arrivals[0][0])
        if not moments:
            break  # nothing runs, nothing arrives: the waiting jobs can never start
        if round_s is not None:
            moments.append((t // round_s + 1) * round_s)
        t = min(moments)
        if due is not None and due <= t:
            due = None
        while arrivals and arrivals[0][0] == t:
            queue.append(js[heapq.heappop(arrivals)[1]])
        for j in [j for j in running.values() if j.end_time() == t]:
            stop(j, t)
            j.finish = t
        while True:
            preempted = run_pass(t)
            if policy == "2dlas":
                w = crossing(t) if running else None
                due = w if w is not None and w > t else None
            if not preempted:
                break
    return js
