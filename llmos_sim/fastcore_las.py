"""The preemptive fast core: LAS's rounds as one loop over job columns.

A LAS run (least attained service, preemptive, time-shared by rounds) under contention is
mostly preemptions: at load 3 on the Philly-derived cluster of ``experiments/train_policies``
about half a million of them, a few per pass. For each, the general engine builds and
throws away a view, a decision with its ``Start``/``Preempt`` objects, a ``Task``, a SimPy
event whose completion is later popped only to be ignored, and a ``RunningJob`` walk per
pass. :func:`run` simulates the same run directly, writing the same log:

- jobs are read once into columns (lists of numbers) in the engine's arrival order; a job's
  progress (FLOPs done, compute device-seconds, its segment's start, overhead and rate) is a
  column too, with the engine's own arithmetic (:meth:`RunningJob.done_at`, ``settle``);
- one heap holds every event the engine would schedule, ``(time, priority, seq, kind, job)``:
  arrival instants, completions, round ticks, passes and the round's follow-up, with the
  engine's priorities (a pass after everything else at its instant; the decision whether
  another round follows after that). ``seq`` counts pushes in the engine's order, so events at
  equal times run in the engine's order. A preempted segment's completion stays on the heap
  and is dropped when popped (its ``seq`` is no longer the job's), so the run ends when the
  engine's does (its clock reaches the last stale completion too: the ``end`` record's time);
- a pass is :meth:`PreemptiveScheduler.decide` for LAS over the columns: the waiting jobs'
  ranks kept sorted (a waiting job's service does not change), the running jobs ranked each
  pass, the same greedy selection, and the same planning on the engine's own
  :class:`~llmos_sim.view.Tentative` overlay: victims' devices released, then the run's real
  placement called through the policy's own ``try_start`` in the same order (so a random
  placement draws the same numbers), victims whose devices no start uses kept, then the work
  conserving starts. Under Pack without device memory the plan runs on :class:`NodeLists`
  instead (each touched node's free devices as a short list; Pack's choices and Tentative's
  node order) and its outcome is written to the free devices a node at a time, as the
  engine's gives and takes leave them. The decision is applied as the engine applies one:
  preemptions first (each asking for another pass at the same instant), then starts;
- every record goes into the engine's :class:`~llmos_sim.events.EventLog` with the same kind,
  subject and data, in the same order; finished jobs go into the engine's ``finished``.

Passes that cannot decide anything are not skipped here (they cost little without a view);
the general engine's quiet-pass skipping never changes the log either.

Equality with the general engine is tested on random workloads, round lengths, protection
knobs, placements, pools and cluster shapes (``tests/core/test_fastcore_las.py``) and on the
load-3 benchmark (``benchmarks/bench_scheduling.py --check``). Eligibility (:func:`why_not`)
is a predicate on the run; ``engine.fast_path: off`` forces the general engine.
"""
from __future__ import annotations

from bisect import insort
from heapq import heapify, heappop, heappush
from itertools import count
from operator import attrgetter
from typing import TYPE_CHECKING, Sequence

from llmos_sim import events as E
from llmos_sim.fastcore import _placements, _plain_jobs
from llmos_sim.kernel import advance_to
from llmos_sim.types import CAPACITY_TOLERANCE, FULL_DEVICE_MILLI, Job, Task
from llmos_sim.view import ClusterView, FreeDevices, Tentative

if TYPE_CHECKING:  # pragma: no cover
    from llmos_sim.engine import Engine

#: event kinds on the core's heap (with the engine's priority beside each)
ARRIVE, DONE, TICK, PASS, NEXT_ROUND = 0, 1, 2, 3, 4
COMPACT_AFTER = 64  #: stale completions tolerated on the heap (and at least half of it) before it is compacted


class NodeLists:
    """One pass's plans over the engine's :class:`~llmos_sim.view.FreeDevices` for Pack's
    whole-device placement: each node a plan touched keeps its free devices after the plans
    (a copy, ascending), in first-touch order. It answers as :class:`~llmos_sim.view.Tentative`
    does (the same node order: untouched nodes in their bucket's order, then the touched ones
    in first-touch order), but a plan is a slice of a short list rather than a device at a
    time through sets, and :meth:`commit` writes the pass's outcome to the free devices a node
    at a time. ``total`` counts the free devices after the plans, ``spare`` those on untouched
    nodes (none: no untouched node can win a best fit).
    """

    __slots__ = ("base", "by_node", "node_of", "buckets", "maxk", "lists", "total", "spare")

    def __init__(self, base: FreeDevices) -> None:
        self.base, self.by_node, self.node_of, self.buckets = base, base.by_node, base.node_of, base.buckets
        self.maxk = base.max_per_node
        self.lists: dict[int, list[int]] = {}  #: touched node -> its free devices after the plans
        self.total = base.total
        self.spare = base.total  #: free devices on the untouched nodes

    def _touch(self, node: int) -> list[int]:
        """Untouched ``node``'s free devices, copied to be planned on."""
        lst = self.lists[node] = self.by_node[node][:]
        self.spare -= len(lst)
        return lst

    def is_free(self, device: int) -> bool:
        node = self.node_of[device]
        return device in self.lists.get(node, self.by_node[node])

    def release(self, devices: Sequence[int]) -> None:
        """Plan to free busy ``devices`` (a victim's)."""
        node_of, lists = self.node_of, self.lists
        for d in devices:
            node = node_of[d]
            lst = lists.get(node)
            if lst is None:
                lst = self._touch(node)
            if not lst or lst[-1] < d:
                lst.append(d)
            else:
                insort(lst, d)
        self.total += len(devices)

    def take(self, devices: Sequence[int]) -> None:
        """Plan to use ``devices`` (each free after the plans)."""
        lists, node_of = self.lists, self.node_of
        for d in devices:
            node = node_of[d]
            (lists[node] if node in lists else self._touch(node)).remove(d)
        self.total -= len(devices)

    def place(self, g: int) -> tuple | None:
        """Pack.place_whole of a ``g``-device job, planned: the first ``g`` devices of the
        best-fit node (Tentative.best_fit_node), else spilled over the nodes with the most
        free first, sorted; None if fewer than ``g`` are free."""
        if self.total < g:
            return None
        lists, buckets, maxk = self.lists, self.buckets, self.maxk
        if g <= maxk:
            top, node = maxk + 1, None  # the touched nodes' best: the fewest free (>= g), the first touched
            for n, lst in lists.items():
                c = len(lst)
                if g <= c < top:
                    top, node = c, n
            if self.spare >= g:  # an untouched node with as few free wins
                for c in range(g, top + 1 if node is not None else top):
                    for n in buckets[c]:
                        if n not in lists:
                            lst = self._touch(n)
                            got = tuple(lst[:g])
                            del lst[:g]
                            self.total -= g
                            return got
            if node is not None:
                lst = lists[node]
                got = tuple(lst[:g])
                del lst[:g]
                self.total -= g
                return got
        chosen: list = []  # spill: the nodes with the most free first
        for c in range(maxk, 0, -1):
            for n in buckets[c]:
                if n not in lists:
                    chosen.extend(self.by_node[n][:g - len(chosen)])
                    if len(chosen) == g:
                        break
            else:
                for n, lst in lists.items():
                    if len(lst) == c:
                        chosen.extend(lst[:g - len(chosen)])
                        if len(chosen) == g:
                            break
            if len(chosen) == g:
                break
        got = tuple(sorted(chosen))
        self.take(got)
        return got

    def commit(self, gave: Sequence[tuple], took: Sequence[tuple]) -> None:
        """Write the pass's outcome to the free devices as FreeDevices.give of each device
        tuple in ``gave`` and then FreeDevices.take of each in ``took`` would (the plans must
        be exactly those): each node those touch gets its planned free devices and moves to
        the end of its count's bucket, in the order of its last touch."""
        node_of, by_node, buckets, lists = self.node_of, self.by_node, self.buckets, self.lists
        order: dict = {}  # the nodes, in the order of their last touch
        last = -1
        for devices in (*gave, *took):
            for d in devices:
                n = node_of[d]
                if n != last:
                    if n in order:
                        del order[n]
                    order[n] = last = n
        for n in order:
            lst = lists[n]
            del buckets[len(by_node[n])][n]
            buckets[len(lst)][n] = None
            by_node[n] = lst
        self.base.total = self.total


def why_not(engine: "Engine", jobs: Sequence[Job], until_s: float | None) -> str | None:
    """Why this run must use the general engine, or ``None``: it is eligible for :func:`run`
    (LAS itself, not a subclass, on compute device-seconds; whole-device rigid jobs without
    output step, pin, demand, service or memory trace; the SimPy cluster model; a built-in
    placement; no horizon, logged passes, event-at-a-time passes, hosts or
    ``on_memory_full=preempt``)."""
    from llmos_sim.backends.simpy_cluster import SimPyCluster
    from llmos_sim.policies.scheduling.preemptive import LAS

    sched = engine.scheduler
    if engine.fast_path == "off":
        return "engine.fast_path is off"
    if until_s is not None:
        return "a horizon (until_s) is set"
    if engine.pass_per_event or engine.log_passes or engine.hosts:
        return "event-at-a-time passes, logged passes or service hosts"
    if engine._heap:
        return "events are already scheduled on the run's environment"
    if type(engine.backend) is not SimPyCluster:
        return "the backend is not the SimPy cluster model"
    if type(sched) is not LAS or not sched.incremental() or "decide" in vars(sched):
        return "the scheduler is not LAS on compute device-seconds"
    if type(sched.placement) not in _placements() or "place" in vars(sched.placement):
        return "the placement is not one the fast core knows reads only free devices and pools"
    if not _plain_jobs(jobs):
        return "a job is fractional, elastic, pinned, has a resource demand, a service or a memory trace"
    if any(map(attrgetter("output_s"), jobs)):
        return "a job has an output step"
    if engine.pools and engine.on_memory_full == "preempt":
        return "on_memory_full=preempt"
    return None


def run(engine: "Engine", jobs: list[Job]) -> str:
    """Simulate ``jobs`` (sorted by arrival, then id; checked by :meth:`Engine.run`) under LAS
    on ``engine``'s state and log; returns the end reason (``drained``/``stalled``)."""
    from llmos_sim.backends.simpy_cluster.cost import TrainingCost
    from llmos_sim.engine import _SHARED_MAX, _shared
    from llmos_sim.policies.scheduling.base import Pack

    log, cluster, sched, free = engine.log, engine.cluster, engine.scheduler, engine.free
    finished, progress, unsatisfiable, emit = engine.finished, engine.progress, engine._unsatisfiable, log.emit
    n = len(jobs)
    arrival = list(map(attrgetter("arrival_s"), jobs))
    gpus = list(map(attrgetter("gpus"), jobs))
    ids = list(map(attrgetter("id"), jobs))
    pre = list(map(attrgetter("preprocess_s"), jobs))
    work = list(map(attrgetter("work_flops"), jobs))
    # each job's progress (RunningJob's fields, as columns)
    comp = [0.0] * n  # compute device-seconds of its finished segments (LAS's service)
    done = [0.0] * n  # FLOPs finished before its current segment
    seg_start = [0.0] * n
    seg_ov = [0.0] * n
    rate = [0.0] * n
    devs: list = [None] * n
    first: list = [None] * n  # first start
    segs = [0] * n  # segments run before the current one (Task.segment)
    cseq = [0] * n  # seq of the current segment's completion on the heap (0: none)
    due = [0.0] * n  # the current segment's completion time
    running: dict = {}  # job index -> (segment start, its overhead, devices held), in start order
    queued: dict = {}  # job index -> None, in the engine's queue order (for a stalled end)
    # (service, index) of the waiting jobs, sorted: their ranks (the index orders as arrival, then id)
    waiting: list = []

    t_app, c_app, s_app, d_app = log.time.append, log.code.append, log.subject.append, log.data.append
    c_arrive, c_start, c_finish = engine._c_arrive, log.code_of(E.START), log.code_of(E.FINISH)
    c_preempt = engine._c_preempt  # interned at the first preemption, as the engine does
    devices_seen, starts_seen = engine._devices_seen, engine._starts_seen
    cost = engine.backend.cost_model
    plain_cost = type(cost) is TrainingCost
    flops = cost.device_flops(cluster)
    start_of: dict = {}  # plain cost: devices -> (start record's data, Σ C_i as a float)
    n_devices = cluster.n_devices
    overhead_s = engine.preempt_overhead_s
    round_s = engine.round_s
    min_run, guard, wc = sched.min_run_s, not sched.preempt_in_overhead, sched.work_conserving
    tol, whole = CAPACITY_TOLERANCE, FULL_DEVICE_MILLI
    least = min(gpus, default=1)  # no job needs fewer: a walk stops once less is free
    try_start = sched.try_start
    # device memory: the engine's own allocation, freeing and records (jobs that need none skip them)
    mem = list(map(attrgetter("mem_bytes_per_device"), jobs)) if engine.pools and any(
        map(attrgetter("mem_bytes_per_device"), jobs)) else None
    lists = type(sched.placement) is Pack and mem is None  # a pass plans on NodeLists, not through the policy
    allocs: list = [None] * n if mem is not None else []
    fit_all = min(engine._largest_fit(c) for _, c in engine._kinds) if mem is not None else 0
    on_full, last_reject = engine.on_memory_full, engine._last_reject
    view = ClusterView(0.0, cluster, (), {}, Tentative(free), dict(engine.available), engine.device_free_milli,
                       engine.pools, finished, under_demand={}, partial=engine.partial, suspended={})

    heap: list = []
    tick = count(1).__next__
    nxt = 0  # next job to arrive
    arrivals_left = n
    pending = False  # a pass is on the heap
    passes = skipped = 0
    changes = 0  # arrivals and completions so far (what changes the state besides a pass)
    quiet: tuple | None = None  # (time, changes): a pass then, with nothing changed, decides nothing
    stale = 0  # stale completions on the heap
    last_stale = float("-inf")  # the latest stale completion (the engine's clock reaches it)

    def place(k: int, tent: Tentative | NodeLists) -> tuple | None:
        """The policy's try_start of job ``k`` in this pass (``view.free`` is ``tent``); for
        Pack without device memory, the same choice planned on :class:`NodeLists`."""
        if lists:
            return tent.place(gpus[k])
        return try_start(jobs[k], view)

    def start(k: int, devices: tuple, t: float) -> bool | None:
        """Engine._start, _launch and _segment of job ``k`` on ``devices``, and the SimPy
        model's completion: True; if its memory did not fit the pools (the engine's own
        allocation and records), False (it waits in the queue) or None (it failed). The
        caller takes the devices from the free devices."""
        if mem is not None and mem[k] > 0:
            got = engine._alloc_memory(jobs[k], devices)  # the clock is at t (see the loop)
            if got is None:
                if on_full == "fail":
                    del queued[k]
                    emit(t, E.FAIL, ids[k], ("memory: does not fit the device pools",))
                else:
                    engine._reject(ids[k], "start: memory does not fit")
                    return False
                return None
            allocs[k] = got
        del queued[k]
        if last_reject:
            last_reject.pop(ids[k], None)
        if first[k] is None:
            first[k] = t
            ov = pre[k]
        else:
            ov = overhead_s
        hit = start_of.get(devices) if plain_cost else None
        left = work[k] - done[k]
        w = left if left > 0.0 else 0.0
        if hit is None:
            dev_types = tuple(map(type, devices))
            devices = _shared(devices_seen, devices, dev_types)
            if plain_cost:
                cap = sum(map(flops.__getitem__, devices))
                factor = 1.0
            else:
                task = Task(jobs[k], devices, w, whole, ov, segs[k], tuple(allocs[k]) if allocs and allocs[k] else ())
                cap = cost.capacity_flops(task, cluster)
                factor = cost.factor(task, cluster)
            total = float(cap)
            if total <= 0:
                raise ValueError("distributed_time_s: the granted devices have no capacity (Σ C_i = 0)")
            data = (devices, whole, cap / factor)
            data = _shared(starts_seen, data, (dev_types, type(data[1]), type(data[2])))
            if plain_cost and len(start_of) < _SHARED_MAX and type(devices[0]) is int:
                start_of[devices] = (data, total)
        else:
            data, total = hit
            factor = 1.0
        devs[k] = d = data[0]
        seg_start[k] = t
        seg_ov[k] = ov
        rate[k] = data[2]
        running[k] = (t, ov, len(d))
        seq = tick()
        cseq[k] = seq
        due[k] = at = t + (ov + w / total * factor)
        heappush(heap, (at, 1, seq, DONE, k))
        t_app(t)
        c_app(c_start)
        s_app(ids[k])
        d_app(data)
        return True

    def preempt(k: int, t: float) -> None:
        """Engine._preempt (with _end_segment and _release) of running job ``k``; the caller
        gives its devices back to the free devices and ranks it among the waiting jobs."""
        nonlocal c_preempt, stale, last_stale
        run_ = t - seg_start[k] - seg_ov[k]
        d = devs[k]
        got = done[k] + (run_ * rate[k] if run_ > 0 else 0.0)
        done[k] = got if got < work[k] else work[k]  # min(work, done_at(now)): work on a tie, as min does
        comp[k] = comp[k] + (run_ * len(d) * whole / 1000 if run_ > 0 else 0.0)
        cseq[k] = 0  # its completion is stale now: dropped when popped, or when the heap is compacted
        stale += 1
        if due[k] > last_stale:
            last_stale = due[k]
        segs[k] += 1
        del running[k]
        if c_preempt is None:
            c_preempt = engine._c_preempt = log.code_of(E.PREEMPT)
        t_app(t)
        c_app(c_preempt)
        s_app(ids[k])
        d_app((d, done[k]))
        if allocs and allocs[k]:
            engine._free_memory(allocs[k])
            allocs[k] = None
        queued[k] = None

    def decide(t: float) -> None:
        """One pass: LAS's decide (PreemptiveScheduler.decide over kept ranks) and the
        engine's apply of its decision."""
        nonlocal pending, quiet
        cap = float(n_devices)
        run: list = []
        append = run.append
        for k, (s, ov, nd) in running.items():
            if (min_run > 0 and t - s < min_run) or (guard and ov > 0 and t <= s + ov):
                cap -= gpus[k]  # protected: counts against the capacity, never a victim
            else:
                run_ = t - s - ov
                append((comp[k] + (run_ * nd * whole / 1000 if run_ > 0 else 0.0), k))
        run.sort()
        # step 2: the greedy selection over the merge of both rankings (_select_merged)
        to_start: list = []
        victims: list = []
        rest: list = []
        n_w, n_r = len(waiting), len(run)
        i = j = 0
        while cap + tol >= least:
            if i < n_w and (j >= n_r or waiting[i] < run[j]):
                e = waiting[i]
                i += 1
                need = gpus[e[1]]
                if need <= cap + tol:
                    cap -= need
                    to_start.append(e)
                else:
                    rest.append(e)
            elif j < n_r:
                e = run[j]
                j += 1
                need = gpus[e[1]]
                if need <= cap + tol:
                    cap -= need
                else:
                    victims.append(e[1])
            else:
                break
        victims.extend(e[1] for e in run[j:])
        more = bool(rest) or i < n_w
        if not to_start and not (wc and more and free.total):
            return
        # steps 3-5 (_plan) on the engine's overlay, victims' devices released
        if lists:
            tent = NodeLists(free)
        else:
            tent = Tentative(free)
            view.now_s, view.free, view.share_taken = t, tent, {}
        if victims:  # ClusterView.release of each (its shares are read by fractional placement only)
            for k in victims:
                tent.release(devs[k])
        starts: list = []
        for e in to_start:
            got = place(e[1], tent)
            if got is not None:
                starts.append((e, got))
        placed_all = len(starts) == len(to_start)
        preempts: list = []
        if victims and tent.total == 0:  # every device released went to a start: each victim yields
            preempts = victims
        elif victims:
            used = {x for _, got in starts for x in got}
            for k in victims:
                d = devs[k]
                if used.intersection(d):
                    preempts.append(k)
                else:  # keeps running: its devices are not free after all
                    keep = [x for x in d if tent.is_free(x)]
                    if keep:
                        tent.take(keep)
        tail: list = []  # positions in waiting of the starts planned from past the walk
        if wc and more:
            for src in (rest, waiting):
                for p in range(0 if src is rest else i, len(src)):
                    if tent.total == 0:
                        break
                    e = src[p]
                    if gpus[e[1]] > tent.total:
                        continue
                    got = place(e[1], tent)
                    if got is not None:
                        starts.append((e, got))
                        if src is waiting:
                            tail.append(p)
                if tent.total == 0:
                    break
        # the engine applies it: preemptions (each asks for a pass), then starts; the free
        # devices change as the engine's gives and takes would, in the same order, after both
        for k in preempts:
            preempt(k, t)
        gave = [devs[k] for k in preempts]
        if preempts and not pending:
            pending = True
            heappush(heap, (t, 2, tick(), PASS, -1))
        took: list = []
        gone: set = set()
        for e, got in starts:
            ok = start(e[1], got, t)
            if ok is not False:  # started, or failed for good: it leaves the ranking
                gone.add(e[1])
            if ok is True:
                took.append(got)
            else:
                placed_all = False
        # the ranking: the jobs that left go (those planned from past the walk by position,
        # then those the walk passed in one sweep), the preempted ones join
        for p in reversed(tail):
            if waiting[p][1] in gone:
                del waiting[p]
        if gone:
            waiting[:i] = [e for e in waiting[:i] if e[1] not in gone]
        for k in preempts:
            insort(waiting, (comp[k], k))
        if lists:
            tent.commit(gave, took)
        else:
            for d in gave:
                free.give(d)
            for d in took:
                free.take(d)
        if placed_all and (free.total == 0 or not wc):
            # the follow-up pass at this instant (the preemptions ask for one) decides nothing
            # unless something happens first: every job this pass selected started, so at the
            # same instant a walk over the same ranking meets no waiting job that fits (the
            # started ones count against the capacity or rank where they did, the preempted
            # ones rank where they did and still do not fit), and no device is free for
            # another start; it would not call the placement either
            quiet = (t, changes)

    if n:
        heappush(heap, (arrival[0], 1, tick(), ARRIVE, -1))
    if round_s:
        heappush(heap, (engine.env.now + round_s, 1, tick(), TICK, -1))
    now = engine.env.now
    env = engine.env
    while heap:
        t, _, seq, kind, k = heappop(heap)
        now = t
        if mem is not None:
            env._now = t  # the engine's memory operations and rejects read its clock
        if kind == DONE:
            if cseq[k] != seq:
                stale -= 1
                continue  # a preempted segment's stale completion
            cseq[k] = 0
            changes += 1
            # Engine._work_done and _finish
            d = devs[k]
            run_ = t - seg_start[k] - seg_ov[k]
            comp[k] = comp[k] + (run_ * len(d) * whole / 1000 if run_ > 0 else 0.0)
            del running[k]
            t_app(t)
            c_app(c_finish)
            s_app(ids[k])
            d_app(())
            if allocs and allocs[k]:
                engine._free_memory(allocs[k])
                allocs[k] = None
            free.give(d)
            finished.add(jobs[k], first[k], t, d, comp[k])
            devs[k] = None
            if progress is not None:
                progress(1)
            if queued and not pending:
                pending = True
                heappush(heap, (t, 2, tick(), PASS, -1))
        elif kind == PASS:
            pending = False
            if quiet is not None and quiet[0] == t and quiet[1] == changes:
                skipped += 1
                continue
            quiet = None
            passes += 1
            if waiting:
                decide(t)
            if stale > COMPACT_AFTER and stale > len(heap) >> 1:  # drop the stale completions: the order of the rest is kept
                heap = [x for x in heap if x[3] != DONE or cseq[x[4]] == x[2]]
                heapify(heap)
                stale = 0
        elif kind == ARRIVE:
            i = nxt
            j = i + 1
            while j < n and arrival[j] == t:
                j += 1
            arrivals_left -= j - i
            nxt = j
            changes += 1
            if j < n:
                heappush(heap, (arrival[j], 1, tick(), ARRIVE, -1))
            for k in range(i, j):
                job = jobs[k]
                t_app(t)
                c_app(c_arrive)
                s_app(ids[k])
                d_app(job)
                if gpus[k] > n_devices or (mem is not None and mem[k] > fit_all):
                    why = unsatisfiable(job)
                    if why:
                        emit(t, E.FAIL, ids[k], (why,))
                        continue
                queued[k] = None
                insort(waiting, (0.0, k))
            if not pending:
                pending = True
                heappush(heap, (t, 2, tick(), PASS, -1))
        elif kind == TICK:
            if not pending:
                pending = True
                heappush(heap, (t, 2, tick(), PASS, -1))
            heappush(heap, (t, 3, tick(), NEXT_ROUND, -1))
        else:  # NEXT_ROUND: another round follows while work remains
            if arrivals_left or running:
                heappush(heap, (t + round_s, 1, tick(), TICK, -1))
    engine.fast_passes, engine.passes_skipped = passes, skipped
    advance_to(engine.env, max(now, last_stale))  # the engine's clock also reaches the stale completions
    if queued:  # nothing left can start them: the engine's stalled end
        engine.queue.update((ids[k], jobs[k]) for k in queued)
        engine._fail_stalled()
        return "stalled"
    return "drained"
