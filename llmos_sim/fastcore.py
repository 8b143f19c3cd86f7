"""The key-order fast core: the engine's common case as one loop over job columns.

Most runs are a queue policy that serves waiting jobs in an order it can state as a *key*
(FIFO: arrival; SJF: oracle duration; strict priority: priority), whole-device rigid jobs,
the SimPy cluster model and at most a memory pool per device. For such a run the general
engine's machinery — a SimPy event per arrival instant and per completion, a view, a
decision and a ``Start`` per pass, a ``Task`` and a ``RunningJob`` per job — computes
nothing the run needs. :func:`run` simulates the same run directly:

- jobs are read once into columns (lists of numbers), in the engine's arrival order;
- arrivals are a pointer into that order (one batch per distinct arrival time), merged with
  a heap of completions ``(time, seq, job)``; ``seq`` is handed out exactly where the engine
  hands out SimPy's insertion counter (when the next arrival instant is scheduled, when a
  completion is pushed), so events at equal times run in the engine's order;
- the queue is a sorted list of ``(key, job)``: the policy's :meth:`order_key`, fixed while
  the job waits, is its position;
- one pass per instant, after every arrival and completion at that instant, exactly when the
  engine runs one; it plans starts on the engine's own :class:`~llmos_sim.view.Tentative`
  overlay with the run's real :class:`~llmos_sim.policies.scheduling.base.Placement` (so
  every placement decision is the placement's own code), then applies them in order through
  the run's real memory pools;
- every record goes into the engine's :class:`~llmos_sim.events.EventLog` with the same kind,
  subject and data, in the same order, as the general engine writes it (the log is the
  single source of truth, so the tables are the same); finished jobs go into the engine's
  :class:`~llmos_sim.view.FinishedJobs`.

Equality with the general path is tested on random workloads for every policy that declares
a key, on several cluster shapes, placements and memory pools (``tests/core/test_fastcore.py``),
and on every shipped config by the table digest.

Eligibility (:func:`why_not`) is a predicate on the run; anything else runs through the
general engine unchanged. ``engine.fast_path: off`` forces the general engine.
"""
from __future__ import annotations

from bisect import insort
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Sequence

from llmos_sim import events as E
from llmos_sim.kernel import advance_to
from llmos_sim.types import FULL_DEVICE_MILLI, Job, Task
from llmos_sim.view import ClusterView, Tentative

if TYPE_CHECKING:  # pragma: no cover
    from llmos_sim.engine import Engine

FAST_PATH_MODES = ("auto", "off")


def _owner(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO that defines ``name``."""
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def key_order(scheduler) -> bool:
    """Does ``scheduler`` run as a key order? It is a :class:`QueueScheduler` whose pass is the
    base class's own (``decide``, ``try_start``, ``grow``), with no rounds and no wake-ups, and
    whose :meth:`~QueueScheduler.order` comes from the class that declares its
    :meth:`~QueueScheduler.order_key` (a subclass that changes the order without restating the
    key is not one)."""
    from llmos_sim.policies.scheduling.base import ClusterScheduler, QueueScheduler

    cls = type(scheduler)
    if not isinstance(scheduler, QueueScheduler) or scheduler.round_s is not None:
        return False
    if any(_owner(cls, m) is not QueueScheduler for m in ("decide", "try_start", "grow")):
        return False
    if _owner(cls, "wake_s") is not ClusterScheduler:
        return False
    return _owner(cls, "order") is _owner(cls, "order_key")


def _placements() -> tuple[type, ...]:
    """Placements the fast core may call: each reads only the view's free devices, pools and
    cluster (never the queue or the running jobs, which the fast core does not keep)."""
    from llmos_sim.policies.scheduling.base import FirstFree, Pack
    from llmos_sim.policies.scheduling.placement import Consolidated, RandomPlacement, Spread, TopologyAware

    return (Pack, FirstFree, Spread, RandomPlacement, TopologyAware, Consolidated)


def _plain_job(j: Job) -> bool:
    """A whole-device, rigid job with no other demand, pin, service or memory trace."""
    return (j.gpu_milli == FULL_DEVICE_MILLI and (j.min_gpus is None or j.min_gpus == j.gpus) and not j.demand
            and j.device_type is None and j.service is None and not j.mem_trace)


def why_not(engine: "Engine", jobs: Sequence[Job], until_s: float | None) -> str | None:
    """Why this run must use the general engine, or ``None``: it is eligible for :func:`run`."""
    from llmos_sim.backends.simpy_cluster import SimPyCluster

    if engine.fast_path == "off":
        return "engine.fast_path is off"
    if until_s is not None:
        return "a horizon (until_s) is set"
    if engine.pass_per_event or engine.log_passes or engine.round_s or engine.hosts:
        return "event-at-a-time passes, logged passes, rounds or service hosts"
    if type(engine.backend) is not SimPyCluster:
        return "the backend is not the SimPy cluster model"
    if not key_order(engine.scheduler):
        return "the scheduler does not run as a key order"
    if type(engine.scheduler.placement) not in _placements():
        return "the placement is not one the fast core knows reads only free devices and pools"
    if engine.pools and engine.on_memory_full == "preempt":
        return "on_memory_full=preempt"
    if not all(map(_plain_job, jobs)):
        return "a job is fractional, elastic, pinned, has a resource demand, a service or a memory trace"
    return None


def run(engine: "Engine", jobs: list[Job]) -> str:
    """Simulate ``jobs`` (sorted by arrival, then id; checked by :meth:`Engine.run`) on
    ``engine``'s state, log and pools; returns the end reason (``drained``/``stalled``)."""
    from llmos_sim.backends.simpy_cluster.cost import TrainingCost
    from llmos_sim.engine import _shared

    log, cluster, sched = engine.log, engine.cluster, engine.scheduler
    free, pools, finished = engine.free, engine.pools, engine.finished
    place, blocking = sched.placement.place, sched.blocking
    n = len(jobs)
    # the columns the loop reads (one pass over the jobs)
    arrival = [j.arrival_s for j in jobs]
    gpus = [j.gpus for j in jobs]
    ids = [j.id for j in jobs]
    start_s = [0.0] * n  # first (only) start of each job
    devs: list = [None] * n
    allocs: list = [None] * n

    t_app, c_app, s_app, d_app = log.time.append, log.code.append, log.subject.append, log.data.append
    c_arrive, c_start, c_finish = engine._c_arrive, log.code_of(E.START), log.code_of(E.FINISH)
    mem_data, log_memory = engine._mem_data, engine.log_memory
    c_alloc = log.code_of(E.MEM_ALLOC) if pools and log_memory else -1
    c_free = log.code_of(E.MEM_FREE) if pools and log_memory else -1
    devices_seen, starts_seen, last_reject = engine._devices_seen, engine._starts_seen, engine._last_reject
    unsatisfiable, progress, emit = engine._unsatisfiable, engine.progress, log.emit
    on_full = engine.on_memory_full
    backend = engine.backend
    cost = backend.cost_model
    plain_cost = type(cost) is TrainingCost  # capacity = Σ C_i, factor exactly 1.0
    flops = cost.device_flops(cluster)
    mem = [j.mem_bytes_per_device for j in jobs] if pools else None

    view = ClusterView(0.0, cluster, (), {}, Tentative(free), engine.available, engine.device_free_milli, pools,
                       finished, under_demand={}, partial=engine.partial, suspended={})
    order_key = sched.order_key
    queue: list = []  # (key, job index), in the policy's order

    heap: list = []  # completions: (time, seq, job index); index + n: the job's output step ended
    seq = 1  # the engine's insertion counter, relatively: the first arrival instant took 0
    nxt = 0  # next job to arrive
    arr_seq = 0  # seq of the pending arrival instant
    now = 0.0
    full = FULL_DEVICE_MILLI
    while nxt < n or heap:
        # the next instant: the earlier of the next arrival batch and the next completion
        if nxt < n and (not heap or (arrival[nxt], arr_seq) < heap[0][:2]):
            t = arrival[nxt]
        else:
            t = heap[0][0]
        now = t
        # every event at t, in (time, seq) order
        while True:
            if nxt < n and arrival[nxt] == t and (not heap or heap[0][0] != t or arr_seq < heap[0][1]):
                i = nxt
                j = i + 1
                while j < n and arrival[j] == t:
                    j += 1
                nxt = j
                if j < n:
                    arr_seq, seq = seq, seq + 1
                for k in range(i, j):
                    job = jobs[k]
                    t_app(t)
                    c_app(c_arrive)
                    s_app(ids[k])
                    d_app(job)
                    why = unsatisfiable(job)
                    if why:
                        emit(t, E.FAIL, ids[k], (why,))
                    else:
                        entry = (order_key(job, view), k)
                        if not queue or queue[-1] < entry:
                            queue.append(entry)
                        else:
                            insort(queue, entry)
            elif heap and heap[0][0] == t:
                _, _, k = heappop(heap)
                if k < n:  # its work is done
                    job = jobs[k]
                    if job.output_s > 0:  # seed step 5: output, devices stay held
                        heappush(heap, (t + job.output_s, seq, k + n))
                        seq += 1
                        continue
                else:
                    k -= n
                # finish (Engine._finish)
                d = devs[k]
                run_s = t - start_s[k] - jobs[k].preprocess_s
                compute = 0.0 + (run_s * len(d) * full / 1000 if run_s > 0 else 0.0)
                t_app(t)
                c_app(c_finish)
                s_app(ids[k])
                d_app(())
                got = allocs[k]
                if got:
                    for dv, a in got:
                        pool = pools[dv]
                        pool.free(a)
                        if log_memory:
                            t_app(t)
                            c_app(c_free)
                            s_app(dv)
                            d_app(mem_data((a.tag, a.offset, a.nbytes, a.requested, *pool.levels())))
                    allocs[k] = None
                free.give(d)
                finished.add(jobs[k], start_s[k], t, d, compute)
                devs[k] = None
                if progress is not None:
                    progress(1)
            else:
                break
        if not queue or free.total == 0:
            continue
        # the pass (QueueScheduler.decide on the key order; every job whole-device and rigid)
        tent = Tentative(free)
        view.free = tent
        view.now_s = t
        plans = []
        for pos, (_, k) in enumerate(queue):
            g = gpus[k]
            if tent.total < g:
                if blocking or tent.total == 0:
                    break
                continue
            devices = place(jobs[k], g, view)
            if devices is None:
                if blocking:
                    break
                continue
            tent.take(devices)
            plans.append((pos, k, devices))
        # apply the plans in order (Engine._start)
        done = []
        for pos, k, devices in plans:
            job = jobs[k]
            got = None
            if pools and mem[k] > 0:
                nbytes, jid = mem[k], ids[k]
                got = []
                for dv in devices:
                    pool = pools[dv]
                    a = pool.allocate(nbytes, jid)
                    if a is None:
                        if log_memory:
                            emit(t, E.MEM_FAIL, dv, (jid, nbytes, *pool.levels()))
                        for dv2, a2 in got:
                            p2 = pools[dv2]
                            p2.free(a2)
                            if log_memory:
                                emit(t, E.MEM_FREE, dv2, mem_data((a2.tag, a2.offset, a2.nbytes, a2.requested,
                                                                    *p2.levels())))
                        got = None
                        break
                    if log_memory:
                        t_app(t)
                        c_app(c_alloc)
                        s_app(dv)
                        d_app(mem_data((jid, a.offset, a.nbytes, a.requested, *pool.levels())))
                    got.append((dv, a))
                if got is None:
                    if on_full == "fail":
                        done.append(pos)
                        emit(t, E.FAIL, jid, ("memory: does not fit the device pools",))
                    else:
                        last_reject[jid] = reason = "start: memory does not fit"
                        emit(t, E.REJECT, jid, (reason,))
                    continue
            done.append(pos)
            if last_reject:
                last_reject.pop(ids[k], None)
            free.take(devices)
            dev_types = tuple(map(type, devices))
            devices = _shared(devices_seen, devices, dev_types)
            overhead = job.preprocess_s
            work = max(0.0, job.work_flops - 0.0)
            if plain_cost:
                cap = sum(map(flops.__getitem__, devices))
                factor = 1.0
            else:
                task = Task(job, devices, work, full, overhead, 0, tuple(got or ()))
                cap = cost.capacity_flops(task, cluster)
                factor = cost.factor(task, cluster)
            total = float(cap)
            if total <= 0:
                raise ValueError("distributed_time_s: the granted devices have no capacity (Σ C_i = 0)")
            heappush(heap, (t + (overhead + work / total * factor), seq, k))
            seq += 1
            rate = cap / factor
            start_s[k] = t
            devs[k] = devices
            allocs[k] = got
            t_app(t)
            c_app(c_start)
            s_app(ids[k])
            data = (devices, job.gpu_milli, rate)
            d_app(_shared(starts_seen, data, (dev_types, type(data[1]), type(data[2]))))
        if done:
            if len(done) == done[-1] + 1:  # a prefix (always so under blocking)
                del queue[:len(done)]
            else:
                for pos in reversed(done):
                    del queue[pos]
    advance_to(engine.env, now)
    if queue:  # nothing left can start them: the engine's stalled end
        engine.queue.update((ids[k], jobs[k]) for k in sorted(k for _, k in queue))
        engine._fail_stalled()
        return "stalled"
    return "drained"
