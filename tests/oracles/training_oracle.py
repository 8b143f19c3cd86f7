"""A reference simulator for training jobs on a few nodes, written from the documented semantics.

Independent of the engine: a plain event loop (``heapq`` for the arrivals, the next moment of
any kind taken as a minimum), no SimPy, no engine, view or policy code. It exists to be
compared with ``llmos_sim`` on random workloads (``test_training_oracle.py``).

Scope: nodes of given sizes (devices numbered node by node) of devices of 1 FLOP/s (a job's
work is its device-seconds), rigid whole-device jobs of at most all the devices, no memory
model, no preprocess or output step, ``pass_per_event`` off, Pack or consolidated placement
(below, :class:`PackNodes`).

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
  candidate victims' devices (released in rank order: docs/architecture.md, "One pass" of
  the preemptive fast core, which the docs now state); only the victims whose devices a
  start uses are preempted. The work-conserving step (module docstring, step 5, as the
  docs now state it): the queued jobs not selected, in rank order, on the devices that were
  free and that no start took (never a victim's); under Pack it starts nothing, under
  consolidated placement it can.
- Pack (``Pack`` docstring and ``FreeDevices``; :class:`PackNodes`), its choice among nodes
  with as many free devices included, so each start's device set is compared too.
- Consolidated (``Consolidated`` docstring; :meth:`PassPlan.consolidated`): the best-fit
  node, the lower index among equally free ones (the docs did not say; they now do).
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
  at the moment a running job's service reaches a threshold (within a relative 10⁻⁹, as
  ``DiscretizedLAS``'s docstring now says; ``wake_s``, asked after every
  pass while jobs wait, a job in its overhead gaining service only after it). Each pass's
  answer replaces the last: a moment a later pass no longer names is withdrawn ("Engine
  rules").

Not covered: placements other than Pack and consolidated (spread, random, topology),
network or communication cost (the default ``TrainingCost`` factor is exactly 1),
fractional, elastic or memory-holding jobs, preprocess and output steps, per-event passes,
priorities, 2D-LAS's promotion and Gittins order.
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
    placed: list[tuple[int, ...]] = field(default_factory=list)  # each start's devices
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


class PackNodes:
    """Free devices per node and Pack's choice among them.

    Pack (``Pack`` docstring): one node that fits ``n`` with the fewest free devices left over,
    else whole nodes with the most free devices first; devices within a node in ascending
    index. Nodes with as many free devices tie; the order among them is the one
    docs/architecture.md states for the engine's free-device buckets: a node that has held
    its count longest first (at the start, by index), and within a pass the nodes the pass
    has not touched before those it has, which come in the order the pass first touched
    them. A node's count changes (a start, preemption or finish) one job's devices at a
    time, the nodes of one job's devices in ascending order.
    """

    def __init__(self, sizes) -> None:
        firsts = list(itertools.accumulate(sizes, initial=0))
        self.full = [set(range(d, d + size)) for d, size in zip(firsts, sizes)]  # each node's devices
        self.free = [set(f) for f in self.full]
        self.node_of = {d: n for n, f in enumerate(self.full) for d in f}
        self.stamp = list(range(len(sizes)))  # when each node last changed its count
        self.clock = itertools.count(len(sizes))

    def change(self, devs, add: bool) -> None:
        """Free (``add``) or take ``devs`` for good; each node touched goes behind the nodes
        that already have its new count."""
        for n in sorted({self.node_of[d] for d in devs}):
            mine = {d for d in devs if self.node_of[d] == n}
            if add:
                self.free[n] |= mine
            else:
                self.free[n] -= mine
            self.stamp[n] = next(self.clock)

    def node_free(self, d: int) -> set[int]:
        return self.free[self.node_of[d]]

    def overlay(self) -> "PassPlan":
        return PassPlan(self)


class PassPlan:
    """One pass's plans over :class:`PackNodes` (the pass's takes and releases)."""

    def __init__(self, base: PackNodes) -> None:
        self.base = base
        self.free = [set(f) for f in base.free]
        self.touched: dict[int, int] = {}  # node -> order of the pass's first touch

    def touch(self, devs, add: bool) -> None:
        for n in sorted({self.base.node_of[d] for d in devs}):
            mine = {d for d in devs if self.base.node_of[d] == n}
            self.free[n] = self.free[n] | mine if add else self.free[n] - mine
            self.touched.setdefault(n, len(self.touched))

    def order(self, n: int):
        return (1, self.touched[n]) if n in self.touched else (0, self.base.stamp[n])

    def pack(self, k: int):
        """Pack's ``k`` devices, or None; the plan takes them."""
        if sum(map(len, self.free)) < k:
            return None
        fits = [n for n, f in enumerate(self.free) if len(f) >= k]
        if fits:
            n = min(fits, key=lambda n: (len(self.free[n]), self.order(n)))
            devs = sorted(self.free[n])[:k]
        else:
            devs = []
            for n in sorted(range(len(self.free)), key=lambda n: (-len(self.free[n]), self.order(n))):
                devs += sorted(self.free[n])[: k - len(devs)]
                if len(devs) == k:
                    break
        self.touch(devs, add=False)
        return devs

    def consolidated(self, k: int):
        """Consolidated's ``k`` devices (``Consolidated`` docstring), or None; the plan takes
        them. A job that fits a node: the best-fit node (ties: lower index), its lowest free
        devices; a larger one: whole free nodes, the largest first, then lower index, the
        last one's lowest devices; else None."""
        sizes = [len(f) for f in self.base.full]
        if k <= max(sizes):
            fits = [n for n, f in enumerate(self.free) if len(f) >= k]
            if not fits:
                return None
            n = min(fits, key=lambda n: (len(self.free[n]), n))
            devs = sorted(self.free[n])[:k]
        else:
            whole = sorted((n for n, f in enumerate(self.free) if len(f) == sizes[n]),
                           key=lambda n: (-sizes[n], n))
            devs = []
            for n in whole:
                devs += sorted(self.free[n])[: k - len(devs)]
            if len(devs) < k:
                return None
        self.touch(devs, add=False)
        return devs


def simulate(jobs, nodes, policy: str, *, round_s: float | None = None,
             thresholds: tuple[float, ...] = (), preempt_overhead_s: float = 0.0,
             min_run_s: float = 0.0, service: str = "gpu_s",
             running_first: bool = True, tie_break: str = "arrival",
             placement: str = "pack") -> dict[int, OJob]:
    """Run ``jobs`` (``(id, arrival, seconds, gpus)`` tuples) on nodes of sizes ``nodes``
    and return each job's record."""
    assert policy in POLICIES and service in ("gpu_s", "time_s")
    assert placement in ("pack", "consolidated")
    js = {i: OJob(i, a, s, g) for i, a, s, g in jobs}
    arrivals = [(j.arrival, j.id) for j in js.values()]
    heapq.heapify(arrivals)
    queue: list[OJob] = []  # insertion order: arrivals by id, preempted jobs at the end
    running: dict[int, OJob] = {}
    free = PackNodes(nodes)
    n_devices = sum(nodes)

    def start(j: OJob, devs, t: float) -> None:
        j.seg_start, j.devices = t, tuple(devs)
        j.starts.append(t)
        j.placed.append(tuple(sorted(devs)))
        free.change(devs, add=False)
        queue.remove(j)
        running[j.id] = j

    def stop(j: OJob, t: float) -> None:
        j.done, j.service = j.done_at(t), j.service_at(t)
        j.seg_start = None
        free.change(j.devices, add=True)
        j.devices = ()
        del running[j.id]

    entry: dict[int, tuple[int, int]] = {}  # previous_rank: job id -> (queue, place in it)
    places = itertools.count()

    def enter_queues(t: float) -> None:
        """``previous_rank``: jobs entering a queue (arrival, demotion) go behind those in it,
        several in their previous order (arrivals: by arrival, then id)."""
        new = []
        for j in list(running.values()) + queue:
            q = level(served(j, t))
            if entry.get(j.id, (None,))[0] != q:
                new.append((entry.get(j.id, (-1, 0)), j.arrival, j.id, q))
        for _, _, i, q in sorted(new):
            entry[i] = (q, next(places))

    def level(s: float) -> int:
        """2D-LAS's queue for service ``s``: the thresholds reached, each within a relative
        10⁻⁹ (``DiscretizedLAS`` docstring), so a pass at a computed crossing sees it."""
        return sum(1 for th in thresholds if s + 1e-9 * (1.0 + abs(s)) >= th)

    def served(j: OJob, t: float) -> float:
        return j.service_at(t) / (j.gpus if service == "time_s" else 1)

    def key(j: OJob, t: float):
        if policy == "srtf":
            return ((j.work - j.done_at(t)) / j.gpus, j.arrival, j.id)
        if policy == "las":
            return (served(j, t), j.arrival, j.id)
        s = served(j, t)
        q = level(s)
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
        plan = free.overlay()
        starts = []
        for j in order:
            devs = getattr(plan, placement)(j.gpus)
            if devs is not None:
                starts.append((j, devs))
            elif policy == "fifo":
                break
        for j, devs in starts:
            start(j, devs, t)
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
        victims = [j for j in ranking if j.seg_start is not None and j not in selected]
        pool = free.overlay()
        for v in victims:
            pool.touch(v.devices, add=True)
        place = getattr(pool, placement)
        plans = [(j, place(j.gpus)) for j in selected if j.seg_start is None]
        plans = [(j, devs) for j, devs in plans if devs is not None]
        if placement != "pack":
            # work conserving: a selected job may find no place; the queued jobs not selected
            # may start, in rank order, on devices still free (no victim's)
            rest = free.overlay()
            rest.touch([d for _, devs in plans for d in devs if d in free.node_free(d)], add=False)
            place = getattr(rest, placement)
            plans += [(j, devs) for j in ranking if j.seg_start is None and j not in selected
                      for devs in [place(j.gpus)] if devs is not None]
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
            q = level(served(j, t))
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
        while True:  # the follow-up pass after a preempting one sees the jobs it started
            for j in [j for j in running.values() if j.end_time() == t]:  # with no work finished
                stop(j, t)
                j.finish = t
            preempted = run_pass(t)
            if policy == "2dlas":
                w = crossing(t) if running else None
                due = w if w is not None and w > t else None
            if not preempted:
                break
    return js
