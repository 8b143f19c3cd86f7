"""The key-order fast core: the engine's common case as one loop over job columns.

Most runs are a queue policy that serves waiting jobs in an order it can state as a *key*
(FIFO: arrival; SJF: oracle duration; strict priority: priority), whole-device rigid jobs,
the SimPy cluster model and at most a memory pool per device. For such a run the general
engine's machinery — a SimPy event per arrival instant and per completion, a view, a
decision and a ``Start`` per pass, a ``Task`` and a ``RunningJob`` per job — computes
nothing the run needs. :func:`run` simulates the same run directly:

- jobs are columns, in the engine's arrival order: a :class:`~llmos_sim.types.JobTable`'s
  own (no :class:`Job` is built), or read once from a list of jobs;
- arrivals are a pointer into that order (one batch per distinct arrival time), merged with
  a heap of completions ``(time, seq, job)``; ``seq`` is handed out exactly where the engine
  hands out SimPy's insertion counter (when the next arrival instant is scheduled, when a
  completion is pushed), so events at equal times run in the engine's order;
- the queue is a list of job indices in the policy's order: the policy's :meth:`order_key`,
  fixed while the job waits, is its position (arrival order is the index order);
- one pass per instant, after the arrivals and finishes at that instant, exactly when the
  engine runs one. Each start is applied as soon as it is placed; a placement sees the
  engine's own :class:`~llmos_sim.view.Tentative` overlay rebuilt to be exactly the general
  pass's at that point, and calls the run's real
  :class:`~llmos_sim.policies.scheduling.base.Placement` (Pack's node search, and the ideal
  pool's counters, are inlined: the same arithmetic on the same state); memory goes through
  the run's real pools;
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

import functools
from array import array
from bisect import bisect
from heapq import heappop, heappush
from itertools import chain, count
from operator import attrgetter
from typing import TYPE_CHECKING, Sequence

from llmos_sim import events as E
from llmos_sim.events import ROW
from llmos_sim.kernel import advance_to
from llmos_sim.types import FULL_DEVICE_MILLI, Arrivals, Constant, Job, JobRows, JobTable, Task
from llmos_sim.view import ClusterView, Tentative

if TYPE_CHECKING:  # pragma: no cover
    from llmos_sim.engine import Engine

FAST_PATH_MODES = ("auto", "off")
STARTED, FAILED, WAITS = 0, 1, 2  #: a start's outcomes (its memory did not fit: failed, or waits)


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


def _plain_jobs(jobs: "Sequence[Job] | JobTable") -> bool:
    """Every job is whole-device and rigid, with no other demand, pin, service or memory trace
    (checked field by field over all jobs, without a Python step per job; a table's columns
    are read as they are)."""
    if not len(jobs):
        return True
    if isinstance(jobs, JobTable):
        values, column = jobs.distinct, jobs.column
    else:
        def values(name: str) -> set:
            return set(map(attrgetter(name), jobs))

        def column(name: str):
            return list(map(attrgetter(name), jobs))

    def some(name: str) -> bool:
        c = column(name)
        return bool(c.value) if isinstance(c, Constant) else any(c)

    if values("gpu_milli") != {FULL_DEVICE_MILLI} or values("device_type") != {None} or values("service") != {None}:
        return False
    if some("demand") or some("mem_trace"):
        return False
    if values("min_gpus") == {None}:
        return True
    return all(m is None or m == g for m, g in zip(column("min_gpus"), column("gpus")))


def why_not(engine: "Engine", jobs: Sequence[Job], until_s: float | None) -> str | None:
    """Why this run must use the general engine, or ``None``: it is eligible for :func:`run`."""
    from llmos_sim.backends.simpy_cluster import SimPyCluster

    if engine.fast_path == "off":
        return "engine.fast_path is off"
    if until_s is not None:
        return "a horizon (until_s) is set"
    if engine.pass_per_event or engine.log_passes or engine.round_s or engine.hosts:
        return "event-at-a-time passes, logged passes, rounds or service hosts"
    if engine._heap:
        return "events are already scheduled on the run's environment"
    if type(engine.backend) is not SimPyCluster:
        return "the backend is not the SimPy cluster model"
    if not key_order(engine.scheduler):
        return "the scheduler does not run as a key order"
    if type(engine.scheduler.placement) not in _placements():
        return "the placement is not one the fast core knows reads only free devices and pools"
    if engine.pools and engine.on_memory_full == "preempt":
        return "on_memory_full=preempt"
    if not _plain_jobs(jobs):
        return "a job is fractional, elastic, pinned, has a resource demand, a service or a memory trace"
    return None


#: finishes per call of the engine's ``progress`` (a progress bar's update)
PROGRESS_STEP = 1024


def run(engine: "Engine", jobs: "list[Job] | JobTable") -> str:
    """Simulate ``jobs`` (sorted by arrival, then id; checked by :meth:`Engine.run`) on
    ``engine``'s state, log and pools; returns the end reason (``drained``/``stalled``).

    ``jobs`` a :class:`~llmos_sim.types.JobTable`: its columns are read as they are and no
    :class:`Job` is built (but for a placement other than Pack, a key other than arrival, or
    an arrival that may never fit, which are handed the job); an ``arrive`` record keeps the
    job's row number, the log derives its data from the table."""
    from llmos_sim.backends.simpy_cluster.cost import TrainingCost
    from llmos_sim.engine import _SHARED_MAX, _shared
    from llmos_sim.policies.scheduling.base import Pack, QueueScheduler

    log, cluster, sched = engine.log, engine.cluster, engine.scheduler
    free, pools, finished = engine.free, engine.pools, engine.finished
    place, blocking = sched.placement.place, sched.blocking
    n = len(jobs)
    table = jobs if isinstance(jobs, JobTable) else None
    if table is not None and engine._c_arrive in log.code:  # the log's arrivals already hold jobs
        table = None
    if table is not None:  # arrivals keep their row number: (gpus, work, milli, tenant) derived from it
        log.derived[engine._c_arrive] = Arrivals(table)

    def column(name: str, hot: bool = False):
        """The jobs' ``name``s, indexable by job (a table's own column: no copy; ``hot``: read
        at every start, so a column of one value becomes a list of references to it)."""
        if table is None:
            return list(map(attrgetter(name), jobs))
        c = table.column(name)
        return [c.value] * n if hot and isinstance(c, Constant) else c

    # the columns the loop reads (ids and gpus as lists: their int objects are shared by the records)
    arrival = column("arrival_s")
    gpus = table.values("gpus") if table is not None else column("gpus")
    ids = table.values("id") if table is not None else column("id")
    pre = column("preprocess_s", hot=True)
    milli = column("gpu_milli")
    outs = column("output_s")
    # Task.work_flops of a first segment; float columns without a float object per job
    # (max(0.0, w - 0.0) of the engine: w itself, as a double, since work_flops >= 0)
    work = column("work_flops")
    if not (isinstance(work, array) and work.typecode == "d"):
        work = array("d", work)
    outputs = bool(outs.value) if isinstance(outs, Constant) else any(outs)
    # an arrival record's row number: the id's own int object when ids are the row numbers
    # (a generator's): no int object per record
    rows = ids if table is not None and _ids_are_rows(table) else range(n)
    start_s = array("d", bytes(8 * n))  # each job's (only) start
    devs: list = [None] * n
    dnode = array("i", [-1]) * n  # the one node a running job's devices are on (-1: several)
    allocs: list = [None] * n if pools else []
    mem = column("mem_bytes_per_device", hot=True) if pools else None
    # an arrival passes Engine._unsatisfiable's common-case test when it needs no more devices
    # than there are and its memory fits every device's empty pool; the rest ask the engine
    n_devices = cluster.n_devices
    fit_all = min(engine._largest_fit(cap) for _, cap in engine._kinds) if pools else 0

    t_app, c_app, s_app, d_app = log.time.append, log.code.append, log.subject.append, log.data.append
    c_arrive, c_start, c_finish = engine._c_arrive, log.code_of(E.START), log.code_of(E.FINISH)
    mem_data, log_memory = engine._mem_data, engine.log_memory
    # the ideal pool's records hold ints only (job ids that are ints, offsets, sizes, levels):
    # their rows are appended to the memory records' int64 rows directly (IntRows.store's result)
    from llmos_sim.policies.memory.ideal import IdealPool

    int_rows = (pools and set(map(type, ids)) <= {int} and len(jobs) and max(map(abs, ids)) < 2**62
                and all(type(p) is IdealPool and p.capacity_bytes < 2**62 for p in pools))
    # (without memory logging there are no records: the ideal pools' counters alone are kept)
    mvals = mem_data.__self__.appendable() if int_rows and log_memory else None
    # ... and the ideal pool's allocate/free are its counters, updated in place: a run's
    # allocations are all freed by its end, so the pools end as the general engine leaves them
    # (no live allocation; the same counts and next id), and mid-run every placement reads
    # only fits() (free bytes), which the counters keep exact
    ideal = bool(int_rows) and set(map(type, mem)) <= {int}
    # ... and with Pack (which asks no pool: it is inlined here) on pools that start empty, a
    # free device's pool is always empty: only the job holding a device allocates on it, and
    # frees it all before giving the device back. So when every job's memory fits every empty
    # pool (<= fit_all), a job is placed as one without memory and its memory records are
    # known without the pools: ``(job, 0, M_d, M_d, M_d, M_d, M_d, capacity − M_d)`` on each
    # of its devices at its start, the same with the pool empty again at its finish. The run
    # notes only the job (``mem_jobs``), its devices and where its records go in the log; the
    # records, their rows and the pools' counters are filled in at the end
    # (:func:`_fill_memory`): nothing reads the log, a busy device's pool or the rows before then
    batched = (ideal and type(sched.placement) is Pack and max(mem, default=0) <= fit_all
               and not any(p._allocated or p._requested or p._live for p in pools))
    place_max = fit_all if batched else 0  # the most memory a job placed as one without may have
    mem_jobs = array("q")  # per batched start: the job; per finish: the job + n
    first_rec, first_row = len(log), len(mvals) >> 3 if mvals is not None else 0
    c_alloc = log.code_of(E.MEM_ALLOC) if pools and log_memory else -1
    c_free = log.code_of(E.MEM_FREE) if pools and log_memory else -1
    devices_seen, starts_seen, last_reject = engine._devices_seen, engine._starts_seen, engine._last_reject
    unsatisfiable, progress, emit = engine._unsatisfiable, engine.progress, log.emit
    # finished jobs: a run whose key is arrival order hands no policy code a view, so nothing
    # reads them before the end: each finish notes its job and time, the columns are filled
    # at the end in one step (:func:`_fill_finished`); else they are filled as jobs finish
    by_arrival = _owner(type(sched), "order_key") is QueueScheduler
    defer = by_arrival and len(finished) == 0
    fin_order, fin_time = (order := array("q")).append, (times := array("d")).append
    if table is not None and not defer:
        if len(finished):
            raise ValueError("fast core: the engine has finished jobs before its run")
        finished.jobs = JobRows(table, array("q"))
        fin_job = finished.jobs.rows.append
    else:
        fin_job = finished.jobs.append
    fin_start = finished.start_s.append
    fin_finish, fin_dev, fin_service = finished.finish_s.append, finished.devices.append, finished.service_gpu_s.append
    on_full = engine.on_memory_full
    cost = engine.backend.cost_model
    plain_cost = type(cost) is TrainingCost  # capacity = Σ C_i, factor exactly 1.0
    flops = cost.device_flops(cluster)
    start_of: dict = {}  # plain cost: devices -> (the start record's data, Σ C_i as a float, its one node or -1)
    node_of = free.node_of
    span_of: dict = {}  # first device * span_key + g -> start_of's entry for that one range of devices
    span_key = free.max_per_node + 1
    # each node's devices are one ascending range, nodes in order (every cluster built from
    # groups): sorted devices group by node in node order
    nodes_ascend = all(a <= b for a, b in zip(node_of, node_of[1:]))

    tent = Tentative(free)  # one overlay, reset before each pass that plans
    placement = sched.placement
    pack_simple = type(placement) is Pack  # Pack's fast path for jobs without memory, inlined below
    buckets, by_node, maxk = free.buckets, free.by_node, free.max_per_node
    view = ClusterView(0.0, cluster, (), {}, tent, engine.available, engine.device_free_milli, pools,
                       finished, under_demand={}, partial=engine.partial, suspended={})
    # the queue: job indices in the policy's order; a key order other than arrival keeps the
    # sorted keys beside it (arrival order is the index order: jobs come sorted)
    order_key = sched.order_key
    queue: list = []
    keys: list = []  # (key, index), sorted; parallel to queue (key orders only)

    mem_app = mem_jobs.append
    mem_devices: list = []  # per batched start or finish: its devices (the subjects of its records)
    mem_dev = mem_devices.append
    mem_at = array("q")  # per batched start or finish: where its records go in the time and code columns
    at_app, n_timed = mem_at.append, log.time.__len__
    s_ext, d_ext = log.subject.extend, log.data.extend

    def logged_records(devices: tuple, event: int) -> None:
        """A batched job's ``mem_alloc`` records (``event``: the job; called just before its
        start record) or ``mem_free`` records (the job + n; just after its finish record) on
        its ``devices`` (see ``batched``): their subjects and data (``ROW``: their rows are
        known by their positions, made on demand after the run) are appended, their times
        and codes put into those columns at the end, all at once (:func:`_fill_memory`):
        written here, they would cost a tuple and a conversion per value."""
        at_app(n_timed())
        s_ext(devices)
        d_ext((ROW,) * len(devices))
        mem_app(event)
        mem_dev(devices)

    def counted(devices: tuple, event: int) -> None:
        """Memory not logged: a batched job's start (``event``: the job) notes its
        ``devices``, whose pools' allocations are counted after the run
        (:func:`_count_allocations`); its finish (the job + n) nothing."""
        if event < n:
            mem_dev(devices)

    mem_records = logged_records if mvals is not None else counted

    def ideal_record(t: float, code: int, dv: int, jid: int, offset: int, nbytes: int, held: int, pool) -> None:
        """An ideal pool's ``mem_alloc``/``mem_free`` record of ``nbytes`` at ``offset``, the
        pool holding ``held`` bytes after it: its row appended to the int64 rows directly."""
        t_app(t)
        c_app(code)
        s_app(dv)
        d_app(len(mvals) >> 3)
        mvals.extend((jid, offset, nbytes, nbytes, held, held, pool._requested, pool.capacity_bytes - held))

    def log_mem(t: float, code: int, dv: int, owner, a, pool) -> None:
        """A ``mem_alloc``/``mem_free`` record (Engine._alloc_memory / _free_memory)."""
        t_app(t)
        c_app(code)
        s_app(dv)
        d_app(mem_data((owner, a.offset, a.nbytes, a.requested, *pool.levels())))

    def start(t: float, k: int, devices: tuple, taken: bool = False, node: int | None = None) -> int:
        """Engine._start of job ``k`` on ``devices`` (placed by the pass): STARTED, or, when
        its memory did not fit the pools, FAILED (``on_memory_full: fail``) or WAITS.
        ``taken``: the caller has taken the devices from the free ones (a job without memory);
        ``node``: the caller knows the devices' one node (-1: several)."""
        got = None
        if pools and mem[k] > 0 and mem[k] <= place_max:
            mem_records(devices, k)
        elif pools and mem[k] > 0:
            nbytes, jid = mem[k], ids[k]
            got = []
            if ideal:  # IdealPool.allocate and the mem_alloc record, inlined (see `ideal` above)
                for dv in devices:
                    pool = pools[dv]
                    used = pool._allocated
                    after = min(pool.capacity_bytes, used + nbytes)
                    if after - used < nbytes:  # never: every placement asked fits() of each device
                        raise RuntimeError(f"fast core: device {dv}'s ideal pool refused {nbytes} B it said fit")
                    pool._allocated = pool._reserved = after
                    pool._requested += nbytes
                    pool._next_id += 1
                    pool._n_alloc += 1
                    if mvals is not None:
                        ideal_record(t, c_alloc, dv, jid, used, nbytes, after, pool)
                    got.append((dv, used))
            else:
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
                        log_mem(t, c_alloc, dv, jid, a, pool)
                    got.append((dv, a))
            if got is None:
                if on_full == "fail":
                    emit(t, E.FAIL, jid, ("memory: does not fit the device pools",))
                    return FAILED
                last_reject[jid] = reason = "start: memory does not fit"
                emit(t, E.REJECT, jid, (reason,))
                return WAITS
        if last_reject:
            last_reject.pop(ids[k], None)
        if not taken:
            free.take(devices)
        overhead, w = pre[k], work[k]
        hit = start_of.get(devices) if plain_cost else None
        if hit is None:  # Engine._segment and SimPyCluster.start
            # sharing equal tuples saves memory only (the values are the same either way): once
            # the shared ones are as many as kept (spills at 64 GPUs), skip the look-up
            share = len(starts_seen) < _SHARED_MAX
            if share:
                dev_types = tuple(map(type, devices))
                devices = _shared(devices_seen, devices, dev_types)
            if plain_cost:
                cap = sum(map(flops.__getitem__, devices))
                factor = 1.0
            else:
                task = Task(jobs[k], devices, w, full, overhead, 0, tuple(got or ()))
                cap = cost.capacity_flops(task, cluster)
                factor = cost.factor(task, cluster)
            total = float(cap)
            if total <= 0:
                raise ValueError("distributed_time_s: the granted devices have no capacity (Σ C_i = 0)")
            data = (devices, milli[k], cap / factor)
            if share:
                data = _shared(starts_seen, data, (dev_types, type(data[1]), type(data[2])))
            if node is None:
                on = {node_of[d] for d in devices}
                node = on.pop() if len(on) == 1 else -1
            if plain_cost and len(start_of) < _SHARED_MAX and type(devices[0]) is int:
                start_of[devices] = (data, total, node)
        else:
            data, total, node = hit
            devices, factor = data[0], 1.0
        heappush(heap, (t + (overhead + w / total * factor), tick(), k))
        start_s[k] = t
        devs[k] = devices
        dnode[k] = node
        if got:
            allocs[k] = got
        t_app(t)
        c_app(c_start)
        s_app(ids[k])
        d_app(data)
        return STARTED

    def nodes_with(c: int, touched: dict):
        """Tentative.nodes_with(c) of the pass-start overlay plus the pass's plans, read off the
        free devices after those plans started: untouched nodes in their bucket's order, then
        the touched ones with c free, in first-touch order."""
        for nd in buckets[c]:
            if nd not in touched:
                yield nd
        for nd in touched:
            if len(by_node[nd]) == c:
                yield nd

    def pack_fitting(g: int, need: int) -> tuple | None:
        """Pack.place_whole's path for a job whose memory must fit (``eligible``: the device's
        ideal pool has ``need`` bytes free), on the free devices, with the pass's node order
        (:func:`nodes_with`; ``touched`` is the pass's)."""
        def fitting(nd: int) -> list:
            return [d for d in by_node[nd] if need <= pools[d].capacity_bytes - pools[d]._allocated]

        if g <= maxk:
            for c in range(g, maxk + 1):
                for nd in nodes_with(c, touched):
                    ids_ = fitting(nd)
                    if len(ids_) >= g:
                        return tuple(ids_[:g])
        chosen: list = []
        for c in range(maxk, 0, -1):
            for nd in nodes_with(c, touched):
                chosen.extend(fitting(nd)[:g - len(chosen)])
                if len(chosen) == g:
                    return tuple(sorted(chosen))
        return None

    heap: list = []  # completions: (time, seq, job index); index + n: the job's output step ended
    tick = count(1).__next__  # the engine's insertion counter, relatively: the first arrival instant took 0
    nxt = 0  # next job to arrive
    arr_seq = 0  # seq of the pending arrival instant
    now = 0.0
    full = FULL_DEVICE_MILLI
    unreported = 0  # finishes not yet told to ``progress``
    while nxt < n or heap:
        # the next instant: the earlier of the next arrival and the next completion (which of
        # two at the same time comes first is the instant's business, below)
        t = arrival[nxt] if nxt < n else heap[0][0]
        if heap and heap[0][0] < t:
            t = heap[0][0]
        now = t
        want_pass = False  # an arrival or a finish asks for a pass (an output step's start does not)
        # every event at t, in (time, seq) order
        while True:
            if nxt < n and arrival[nxt] == t and (not heap or heap[0][0] != t or arr_seq < heap[0][1]):
                i = nxt
                j = i + 1
                while j < n and arrival[j] == t:
                    j += 1
                nxt = j
                want_pass = True
                if j < n:
                    arr_seq = tick()
                for k in range(i, j):
                    t_app(t)
                    c_app(c_arrive)
                    s_app(ids[k])
                    d_app(rows[k] if table is not None else jobs[k])
                    if gpus[k] > n_devices or (pools and mem[k] > fit_all):
                        why = unsatisfiable(jobs[k])
                        if why:
                            emit(t, E.FAIL, ids[k], (why,))
                            continue
                    if by_arrival:
                        queue.append(k)
                    else:
                        entry = (order_key(jobs[k], view), k)
                        if not keys or keys[-1] < entry:
                            keys.append(entry)
                            queue.append(k)
                        else:
                            p = bisect(keys, entry)
                            keys.insert(p, entry)
                            queue.insert(p, k)
            elif heap and heap[0][0] == t:
                _, _, k = heappop(heap)
                if k >= n:
                    k -= n
                elif outputs and outs[k] > 0:  # its work is done; seed step 5: output,
                    heappush(heap, (t + outs[k], tick(), k + n))  # devices stay held
                    continue
                # Engine._finish
                want_pass = True
                d = devs[k]
                t_app(t)
                c_app(c_finish)
                s_app(ids[k])
                d_app(())
                got = allocs[k] if pools else None
                if batched and mem[k] > 0:
                    mem_records(d, k + n)
                elif got and ideal:  # IdealPool.free and the mem_free record, inlined
                    nbytes, jid = mem[k], ids[k]
                    for dv, used in got:
                        pool = pools[dv]
                        pool._requested -= nbytes
                        pool._n_free += 1
                        pool._allocated = pool._reserved = left = pool._allocated - nbytes
                        if mvals is not None:
                            ideal_record(t, c_free, dv, jid, used, nbytes, left, pool)
                    allocs[k] = None
                elif got:
                    for dv, a in got:
                        pool = pools[dv]
                        pool.free(a)
                        if log_memory:
                            log_mem(t, c_free, dv, a.tag, a, pool)
                    allocs[k] = None
                node = dnode[k]
                if node >= 0:  # FreeDevices.give, for devices on one node
                    lst = by_node[node]
                    k0 = len(lst)
                    if not lst or lst[-1] < d[0]:
                        lst.extend(d)
                    else:
                        lst.extend(d)
                        lst.sort()
                    del buckets[k0][node]
                    buckets[len(lst)][node] = None
                    free.total += len(d)
                elif nodes_ascend:  # FreeDevices.give, inlined: the devices' nodes come in runs
                    i0, nd_ = 0, len(d)
                    while i0 < nd_:
                        node = node_of[d[i0]]
                        j0 = i0 + 1
                        while j0 < nd_ and node_of[d[j0]] == node:
                            j0 += 1
                        lst = by_node[node]
                        k0 = len(lst)
                        back = not lst or lst[-1] < d[i0]
                        lst.extend(d[i0:j0])
                        if not back:
                            lst.sort()
                        del buckets[k0][node]
                        buckets[len(lst)][node] = None
                        i0 = j0
                    free.total += nd_
                else:
                    free.give(d)
                if defer:  # the finished columns are filled at the end, from these
                    fin_order(k)
                    fin_time(t)
                    fin_dev(d)
                else:
                    fin_job(k if table is not None else jobs[k])
                    fin_start(start_s[k])
                    fin_finish(t)
                    fin_dev(d)
                    run_s = t - start_s[k] - pre[k]
                    fin_service(0.0 + (run_s * len(d) * full / 1000 if run_s > 0 else 0.0))
                    devs[k] = None
                if progress is not None:  # told in steps: a call per finish costs more than a bar needs
                    unreported += 1
                    if unreported == PROGRESS_STEP:
                        progress(unreported)
                        unreported = 0
            else:
                break
        if not want_pass or not queue or free.total < (gpus[queue[0]] if blocking else 1):
            continue  # the pass would start nothing
        # the pass: QueueScheduler.decide over the key order (every job whole-device and rigid).
        # Each start is applied as soon as it is placed, and the overlay a placement sees is
        # rebuilt to be exactly the one the general engine's pass would have at that point:
        # the pass's start state plus its plans so far. After starts are applied the free
        # devices hold the same devices per node; an overlay over them whose delta lists the
        # nodes the pass has touched (in first-touch order, with nothing taken) yields nodes in
        # the order the pass-start overlay would (untouched nodes in their bucket order, then
        # the touched ones). A start whose memory did not fit keeps its devices planned (taken
        # in the overlay, never in the free devices); a start reads and writes only its own
        # devices' pools, which later placements in the pass never read.
        done = []
        touched: dict = {}  # nodes the pass's plans took devices from, in first-touch order
        planned: list = []  # devices of plans whose memory did not fit
        for pos, k in enumerate(queue):
            g = gpus[k]
            avail = free.total - len(planned)
            if avail < g:
                if blocking or avail == 0:
                    break
                continue
            if pack_simple and not planned and (mem is None or mem[k] <= place_max):
                node = None
                for c in range(g, maxk + 1):  # Pack.place_whole's fast path (first_node_with)
                    for nd in buckets[c]:  # its first untouched node with exactly c free
                        if nd not in touched:
                            node = nd
                            break
                    else:
                        for nd in touched:  # else the first touched one
                            if len(by_node[nd]) == c:
                                node = nd
                                break
                    if node is not None:
                        break
                if node is not None:
                    lst = by_node[node]
                    # the node's first g free devices; when they are one range, its start is
                    # known by (first device, g) without building the tuple
                    first = lst[0]
                    span = lst[g - 1] - first == g - 1
                    hit = span_of.get(first * span_key + g) if span else None
                    if hit is None:
                        devices = tuple(lst[:g])
                        hit = start_of.get(devices)
                        if span and hit is not None:
                            span_of[first * span_key + g] = hit
                    c = len(lst)
                    del lst[:g]  # FreeDevices.take of the node's first g devices
                    del buckets[c][node]
                    buckets[c - g][node] = None
                    free.total -= g
                    touched[node] = None
                    done.append(pos)
                    if last_reject:
                        last_reject.pop(ids[k], None)
                    if hit is None:
                        start(t, k, devices, taken=True)
                    else:  # start(), inlined for a job on known devices (memory: batched)
                        data = hit[0]
                        if pools and mem[k] > 0:
                            mem_records(data[0], k)
                        heappush(heap, (t + (pre[k] + work[k] / hit[1] * 1.0), tick(), k))
                        start_s[k] = t
                        devs[k] = data[0]
                        dnode[k] = hit[2]
                        t_app(t)
                        c_app(c_start)
                        s_app(ids[k])
                        d_app(data)
                    continue
                # no one node holds it: Pack spills across nodes, those with the most free first
                # (each node's first free devices), the devices sorted
                picks: list = []  # (node, how many of its free devices)
                need = g
                for c in range(maxk, 0, -1):
                    for nd in nodes_with(c, touched):
                        picks.append((nd, c if c < need else need))
                        need -= c
                        if need <= 0:
                            break
                    if need <= 0:
                        break
                if nodes_ascend:  # sorted devices = the picks in node order; FreeDevices.take, inlined
                    picks.sort()
                    chosen = []
                    for nd, m in picks:
                        lst = by_node[nd]
                        c = len(lst)
                        chosen += lst[:m]
                        del lst[:m]
                        del buckets[c][nd]
                        buckets[c - m][nd] = None
                        touched.setdefault(nd, None)
                    free.total -= g
                    start(t, k, tuple(chosen), taken=True, node=-1)
                else:
                    devices = tuple(sorted(chain.from_iterable(by_node[nd][:m] for nd, m in picks)))
                    for d in devices:
                        touched.setdefault(node_of[d], None)
                    start(t, k, devices)
                done.append(pos)
                continue
            if pack_simple and ideal and not planned:  # Pack.place_whole for a job with memory
                devices = pack_fitting(g, mem[k])
                if devices is None:
                    if blocking:
                        break
                    continue
                for d in devices:
                    touched.setdefault(node_of[d], None)
                start(t, k, devices)  # the ideal pool grants what fits: it starts
                done.append(pos)
                continue
            # the placement itself, on the overlay rebuilt for this point of the pass
            tent.taken = set(planned)
            delta = dict.fromkeys(touched, 0)
            for d in planned:
                delta[node_of[d]] -= 1
            tent.delta_on = delta
            tent.total = avail
            view.now_s = t
            devices = place(jobs[k], g, view)
            if devices is None:
                if blocking:
                    break
                continue
            for d in devices:
                touched.setdefault(node_of[d], None)
            got = start(t, k, devices)
            if got != WAITS:
                done.append(pos)
            if got != STARTED:  # its devices stay planned for the rest of the pass
                planned.extend(devices)
        if done:
            if len(done) == done[-1] + 1:  # a prefix (always so under blocking)
                del queue[:len(done)]
                if keys:
                    del keys[:len(done)]
            else:
                for pos in reversed(done):
                    del queue[pos]
                    if keys:
                        del keys[pos]
    if unreported:
        progress(unreported)
    if mvals is None and mem_devices:
        import numpy as np

        _count_allocations(pools, np.fromiter(chain.from_iterable(mem_devices), dtype=np.int64))
    if mem_jobs:
        _fill_memory(log, mvals, pools, mem_jobs, mem_devices, mem_at, first_rec, first_row, (c_alloc, c_free), ids,
                     mem, gpus, n)
    if defer:
        _fill_finished(finished, order, times, start_s, pre, gpus, table if table is not None else jobs)
    advance_to(engine.env, now)
    if queue:  # nothing left can start them: the engine's stalled end
        engine.queue.update((ids[k], jobs[k]) for k in sorted(queue))
        engine._fail_stalled()
        return "stalled"
    return "drained"


def _fill_memory(log, mvals: array, pools: list, mem_jobs: array, mem_devices: list, mem_at: array, first_rec: int,
                 first_row: int, codes: tuple, ids: list, mem, gpus: list, n: int) -> None:
    """A batched run's memory records completed, their rows (made on demand by the log's
    :class:`~llmos_sim.events.IntRows` from each row's job, whether it is a free, and its
    device: :func:`_memory_rows`; 9 bytes a row instead of 64) and its ideal pools' counters
    (see ``batched`` in :func:`run`). ``mem_jobs``: per start the job, per finish the job +
    ``n``, in log order, and ``mem_devices`` its devices: one record per device of the job (its
    ``gpus``), the device its subject, ``ROW`` its data (both in the log already), rows
    ``first_row`` on; ``mem_at``: where its records go in the time and code columns as the run
    built them (from ``first_rec`` on): a start's ``mem_alloc`` records just before its start
    record, at its time, a finish's ``mem_free`` records just after its finish record, at its
    time. A start's row on device d is ``(id, 0, M_d, M_d, M_d, M_d, M_d, capacity_d − M_d)``, a
    finish's ``(id, 0, M_d, M_d, 0, 0, 0, capacity_d)``: what ``IdealPool`` gives on an empty
    pool. Each allocation counts one allocation id, allocation and free on its device, as
    ``allocate`` and ``free`` count them (all are freed by the end)."""
    import numpy as np

    devices = np.fromiter(chain.from_iterable(mem_devices), dtype=np.int64)
    ev = np.frombuffer(mem_jobs, dtype=np.int64)
    freed = ev >= n
    job = np.where(freed, ev - n, ev)
    g = np.asarray(gpus, dtype=np.int64)[job]
    rows = log.derived[codes[0]]
    at = np.frombuffer(mem_at, dtype=np.int64)
    if int(g.sum()) != len(devices) or len(mvals) != 8 * first_row or rows.values is not mvals \
            or len(log.subject) != len(log.time) + len(devices):
        raise RuntimeError("fast core: the batched memory records do not match their jobs")
    # a record's time is its start's (the record at its place) or its finish's (the one before)
    time_s = np.frombuffer(log.time, dtype=np.float64)[at - freed]
    pos = _insert_timed(log, first_rec, np.repeat(at, g), np.repeat(time_s, g),
                        np.repeat(np.where(freed, codes[1], codes[0]).astype(np.uint16), g))
    del time_s
    small = np.int32 if max(n, len(pools)) < 2**31 else np.int64  # a row's job and device, 4 bytes each
    job, freed, devices = np.repeat(job.astype(small), g), np.repeat(freed, g), devices.astype(small)
    rows.extend_made(len(job), functools.partial(_memory_rows, job, freed, devices, np.asarray(ids, dtype=np.int64),
                                                 np.asarray(mem, dtype=np.int64),
                                                 np.array([p.capacity_bytes for p in pools], dtype=np.int64)), pos)
    _count_allocations(pools, devices[~freed])


def _count_allocations(pools: list, devices) -> None:
    """The ideal pools' counters after a batched run: each allocation (one per entry of
    ``devices``, the device it was on) counts one allocation id, allocation and free on its
    device, as ``allocate`` and ``free`` count them (all are freed by the end)."""
    import numpy as np

    per = np.bincount(devices, minlength=len(pools))
    for dv in np.flatnonzero(per).tolist():
        pool, c = pools[dv], int(per[dv])
        pool._next_id += c
        pool._n_alloc += c
        pool._n_free += c


def _insert_timed(log, first: int, before, time_s, code):
    """Put the times and codes of records whose subjects and data the log holds already into
    its time and code columns, in place (the columns stay the same objects): the ``i``-th
    goes just before the entry at ``before[i]`` of the columns as they are (ascending; equal
    places keep their order; ``len(log)``: at the end), with ``time_s[i]`` and ``code[i]``.
    Only entries from ``first`` on move. Returns the records' positions."""
    import numpy as np

    pos = before + np.arange(len(before), dtype=np.int64)
    tail = len(log.time) - first + len(before)
    old = np.ones(tail, dtype=bool)
    old[pos - first] = False
    for column, new, dtype in ((log.time, time_s, np.float64), (log.code, code, np.uint16)):
        merged = np.empty(tail, dtype=dtype)
        merged[old] = np.frombuffer(column, dtype=dtype)[first:]  # no view of the column is kept: it is resized
        merged[~old] = new
        del column[first:]
        column.frombytes(memoryview(merged).cast("B"))
    return pos


def _memory_rows(job, freed, devices, ids, mem, cap, rel):
    """Rows ``rel`` of a batched run's memory records (see :func:`_fill_memory`), from each
    row's job, whether it is a free, and its device: ``(id, 0, M_d, M_d, held, held, held,
    capacity_d − held)`` with ``held`` = ``M_d``, or 0 for a free."""
    import numpy as np

    k = job[rel]
    nbytes = mem[k]
    held = np.where(freed[rel], 0, nbytes)
    rows = np.empty((len(rel), 8), dtype=np.int64)
    rows[:, 0] = ids[k]
    rows[:, 1] = 0
    rows[:, 2] = rows[:, 3] = nbytes
    rows[:, 4] = rows[:, 5] = rows[:, 6] = held
    rows[:, 7] = cap[devices[rel]] - held
    return rows


def _ids_are_rows(table: JobTable) -> bool:
    """Is each job's id its row number?"""
    import numpy as np

    ids = table.array("id")
    return ids is not None and bool(np.array_equal(ids, np.arange(len(table))))


def _fill_finished(finished, order: array, times: array, start_s: array, pre, gpus, jobs) -> None:
    """The engine's finished columns, in finish order, from each finish's job ``order`` and
    time ``times`` (its devices already appended): the same values the engine appends one
    finish at a time (service ``run_s × devices × 1000 / 1000`` with ``run_s = finish - start
    - preprocess``, 0 when ``run_s <= 0``: the same float operations, element by element; a
    job here holds exactly its ``gpus`` devices, as the built-in placements grant)."""
    import numpy as np

    if not order:
        return
    # in place, a few arrays at a time: this runs when the log is at its largest
    o = np.frombuffer(order, dtype=np.int64)
    run_s = np.frombuffer(start_s, dtype=np.float64)[o]
    finished.start_s.frombytes(memoryview(run_s).cast("B"))
    np.subtract(np.frombuffer(times, dtype=np.float64), run_s, out=run_s)
    pre = jobs.column("preprocess_s") if isinstance(jobs, JobTable) else pre
    if isinstance(pre, Constant):
        run_s -= pre.value
    else:
        run_s -= np.asarray(pre, dtype=np.float64)[o]
    ran = run_s > 0
    run_s *= (jobs.array("gpus") if isinstance(jobs, JobTable) else np.asarray(gpus, dtype=np.int64))[o]
    run_s *= FULL_DEVICE_MILLI
    run_s /= 1000
    run_s[~ran] = 0.0
    if isinstance(jobs, JobTable):
        finished.jobs = JobRows(jobs, order)
    else:
        finished.jobs.extend(map(jobs.__getitem__, order))
    if len(finished.finish_s):
        finished.finish_s.extend(times)
    else:
        finished.finish_s = times
    finished.service_gpu_s.frombytes(memoryview(run_s).cast("B"))
