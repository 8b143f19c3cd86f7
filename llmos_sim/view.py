"""What a scheduling policy sees: a read-only view of the cluster at one instant.

The engine owns the state; a :class:`ClusterView` hands policies references to it (no copies,
so a pass over a long queue costs nothing to set up) plus a pass-local :class:`Tentative`
overlay in which a policy plans several starts without touching the engine. Policies must not
mutate anything reachable from the view except through ``view.free.take``/``view.take_resources``
(the overlay). Unit tests build views by hand with :meth:`ClusterView.build`.
"""
from __future__ import annotations

from array import array
from bisect import insort
from collections.abc import Sequence as _Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from llmos_sim.types import CAPACITY_TOLERANCE, FULL_DEVICE_MILLI, GPU, Cluster, Job

if TYPE_CHECKING:  # pragma: no cover
    from llmos_sim.policies.memory.base import Allocation, MemoryPool


class RunningJob:
    """The engine's record of a running job (read-only to policies).

    Progress is piecewise linear: ``done_flops`` were finished before the current segment,
    which started at ``seg_start_s``, spends ``seg_overhead_s`` on restore/preprocess and then
    progresses at ``rate_flops_s``.

    Two measures of service: ``attained_at`` counts every device-second the job has held
    (restore/preprocess overhead included); ``computed_at`` counts only the device-seconds past
    each segment's overhead (time spent computing). LAS-style policies choose which one is
    their "attained service".
    """

    __slots__ = ("job", "devices", "share_milli", "first_start_s", "seg_start_s", "seg_overhead_s",
                 "rate_flops_s", "done_flops", "attained_gpu_s", "compute_gpu_s", "n_preempt", "n_resize", "epoch",
                 "allocations", "resources", "task", "transient", "stopped_s")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.devices: tuple[int, ...] = ()
        self.share_milli = FULL_DEVICE_MILLI
        self.first_start_s: float | None = None
        self.seg_start_s = 0.0
        self.seg_overhead_s = 0.0
        self.rate_flops_s = 0.0
        self.done_flops = 0.0
        self.attained_gpu_s = 0.0  #: device-seconds held in finished segments (overhead included)
        self.compute_gpu_s = 0.0  #: device-seconds computing in finished segments (overhead excluded)
        self.n_preempt = 0
        self.n_resize = 0
        self.epoch = 0  #: bumped when a segment is cut short, so its completion is ignored
        self.allocations: list[tuple[int, "Allocation"]] = []
        self.resources: dict[str, float] = {}
        self.task = None
        self.transient: dict = {}  #: live allocations of the job's memory trace: key -> [(device, Allocation)]
        self.stopped_s: float | None = None  #: when it was last preempted (None: never)

    def done_at(self, now_s: float) -> float:
        """FLOPs finished by ``now_s``."""
        run = now_s - self.seg_start_s - self.seg_overhead_s
        return self.done_flops + (run * self.rate_flops_s if run > 0 else 0.0)

    def remaining_flops(self, now_s: float) -> float:
        return max(0.0, self.job.work_flops - self.done_at(now_s))

    def attained_at(self, now_s: float) -> float:
        """Device-seconds of service so far (finished segments + the current one)."""
        return self.attained_gpu_s + (now_s - self.seg_start_s) * len(self.devices) * self.share_milli / 1000

    def computed_at(self, now_s: float) -> float:
        """Device-seconds spent computing so far: like :meth:`attained_at` without the time
        each segment spent on its restore/preprocess overhead."""
        run = now_s - self.seg_start_s - self.seg_overhead_s
        return self.compute_gpu_s + (run * len(self.devices) * self.share_milli / 1000 if run > 0 else 0.0)

    def in_overhead(self, now_s: float) -> bool:
        """Is the current segment still restoring/preprocessing (no compute done in it yet)?"""
        return now_s <= self.seg_start_s + self.seg_overhead_s and self.seg_overhead_s > 0

    def settle(self, now_s: float) -> None:
        """Fold the current segment's service into the totals (its end, at ``now_s``)."""
        n, share = len(self.devices), self.share_milli  # computed_at and attained_at, inlined
        run = now_s - self.seg_start_s - self.seg_overhead_s
        self.compute_gpu_s = self.compute_gpu_s + (run * n * share / 1000 if run > 0 else 0.0)
        self.attained_gpu_s = self.attained_gpu_s + (now_s - self.seg_start_s) * n * share / 1000


@dataclass(frozen=True, slots=True)
class FinishedJob:
    """A completed job, as the feedback step (seed step 5) reports it to predictors."""

    job: Job
    start_s: float
    finish_s: float
    devices: tuple[int, ...]
    service_gpu_s: float = 0.0  #: device-seconds it computed (restore/preprocess overhead excluded)

    @property
    def jct_s(self) -> float:
        return self.finish_s - self.job.arrival_s


class FinishedJobs(_Sequence):
    """The engine's completed jobs, oldest first, stored as columns (a job reference and three
    float arrays, a device tuple reference): a :class:`FinishedJob` is built only when a
    policy reads one (``finished[i]``, slices, iteration), so a million-job run keeps no
    object per finished job besides the job itself."""

    __slots__ = ("jobs", "start_s", "finish_s", "devices", "service_gpu_s")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.start_s, self.finish_s, self.service_gpu_s = array("d"), array("d"), array("d")
        self.devices: list[tuple[int, ...]] = []

    def add(self, job: Job, start_s: float, finish_s: float, devices: tuple[int, ...], service_gpu_s: float) -> None:
        self.jobs.append(job)
        self.start_s.append(start_s)
        self.finish_s.append(finish_s)
        self.devices.append(devices)
        self.service_gpu_s.append(service_gpu_s)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(map(FinishedJob, self.jobs[i], self.start_s[i], self.finish_s[i], self.devices[i],
                            self.service_gpu_s[i]))
        return FinishedJob(self.jobs[i], self.start_s[i], self.finish_s[i], self.devices[i], self.service_gpu_s[i])

    def __iter__(self) -> Iterator[FinishedJob]:
        return map(FinishedJob, self.jobs, self.start_s, self.finish_s, self.devices, self.service_gpu_s)


class FreeDevices:
    """Whole free devices, per node, kept by the engine.

    ``by_node[n]`` lists node n's free devices in ascending order; ``buckets[k]`` is the
    ordered set (a dict) of nodes with exactly k free devices, so "a node with at least k
    free" is found without scanning every node. Invariant: ``total == Σ len(by_node[n])``.
    """

    __slots__ = ("by_node", "buckets", "total", "node_of", "max_per_node")

    def __init__(self, cluster: Cluster, free: Sequence[int] | None = None) -> None:
        self.node_of = [d.node for d in cluster.devices]
        self.max_per_node = max(len(n.devices) for n in cluster.nodes)
        self.by_node: list[list[int]] = [[] for _ in cluster.nodes]
        for d in sorted(range(cluster.n_devices) if free is None else free):
            self.by_node[self.node_of[d]].append(d)
        self.buckets: list[dict[int, None]] = [{} for _ in range(self.max_per_node + 1)]
        for n, devs in enumerate(self.by_node):
            self.buckets[len(devs)][n] = None
        self.total = sum(len(x) for x in self.by_node)

    def take(self, devices: Sequence[int]) -> None:
        """Mark ``devices`` busy (engine only). Devices of one node are moved between buckets
        once per node, not once per device (a job's devices usually share a node)."""
        by_node, buckets, node_of = self.by_node, self.buckets, self.node_of
        i, n = 0, len(devices)
        while i < n:
            node = node_of[devices[i]]
            lst = by_node[node]
            k0 = len(lst)
            while i < n and node_of[devices[i]] == node:
                lst.remove(devices[i])  # ValueError here means a device was taken twice: an engine bug
                i += 1
            del buckets[k0][node]
            buckets[len(lst)][node] = None
        self.total -= n

    def give(self, devices: Sequence[int]) -> None:
        """Mark ``devices`` free again (engine only); each node's list stays ascending."""
        by_node, buckets, node_of = self.by_node, self.buckets, self.node_of
        i, n = 0, len(devices)
        while i < n:
            node = node_of[devices[i]]
            lst = by_node[node]
            k0 = len(lst)
            while i < n and node_of[devices[i]] == node:
                d = devices[i]
                if not lst or lst[-1] < d:
                    lst.append(d)
                else:
                    insort(lst, d)
                i += 1
            del buckets[k0][node]
            buckets[len(lst)][node] = None
        self.total += n


class Tentative:
    """One scheduling pass's scratch on top of :class:`FreeDevices`.

    A policy that plans several starts in one pass calls :meth:`take` for each, so later
    placements in the same pass see the devices as used; a policy that plans to preempt calls
    :meth:`release` for the victim's devices, so starts in the same decision can use them (the
    engine applies preempts before starts). :meth:`fork` copies only the overlay, so trying a
    plan and dropping it is cheap. The engine discards the overlay after the pass.

    Invariant: ``count(n) == len(base.by_node[n]) + delta_on.get(n, 0)`` and
    ``total == base.total + Σ delta_on``.
    """

    __slots__ = ("base", "taken", "released", "released_on", "delta_on", "total", "_firsts")

    def __init__(self, base: FreeDevices) -> None:
        self.base = base
        self.taken: set[int] = set()
        self.released: set[int] = set()
        self.released_on: dict[int, list[int]] = {}
        self.delta_on: dict[int, int] = {}
        self.total = base.total
        #: free count -> the first node in ``delta_on`` with that many free devices (built when
        #: asked, dropped by take/release): placement asks for several counts between two plans
        self._firsts: dict[int, int] | None = None

    def fork(self) -> "Tentative":
        """An independent copy of this overlay over the same engine state (O(overlay))."""
        t = Tentative.__new__(Tentative)
        t.base, t.total = self.base, self.total
        t.taken, t.released = set(self.taken), set(self.released)
        t.released_on = {n: list(v) for n, v in self.released_on.items()}
        t.delta_on = dict(self.delta_on)
        t._firsts = None
        return t

    def count(self, node: int) -> int:
        """Free devices on ``node`` after this pass's plans."""
        return len(self.base.by_node[node]) + self.delta_on.get(node, 0)

    def ids(self, node: int) -> list[int]:
        """Free devices on ``node`` (ascending) after this pass's plans."""
        lst = self.base.by_node[node]
        if node not in self.delta_on:
            return lst
        taken = self.taken
        extra = self.released_on.get(node)
        if extra:
            return sorted(d for d in (*lst, *extra) if d not in taken)
        return [d for d in lst if d not in taken]

    def first_node_with(self, k: int) -> int | None:
        """The first node (in :meth:`nodes_with` order) with exactly ``k`` free devices, or None."""
        delta_on, buckets = self.delta_on, self.base.buckets
        bucket = buckets[k] if k < len(buckets) else None
        if not delta_on:  # no plans yet this pass: the engine's buckets are exact
            return next(iter(bucket), None) if bucket else None
        if bucket:  # nodes_with's order, without a generator (placement asks this per size)
            for n in bucket:
                if n not in delta_on:
                    return n
        firsts = self._firsts
        if firsts is None:
            firsts, by_node = {}, self.base.by_node
            for n, dlt in delta_on.items():
                firsts.setdefault(len(by_node[n]) + dlt, n)
            self._firsts = firsts
        return firsts.get(k)

    def best_fit_node(self, k0: int) -> int | None:
        """The first node (in :meth:`nodes_with` order) among those with the fewest free
        devices that are still at least ``k0``, or None: :meth:`first_node_with` asked for
        ``k0``, ``k0 + 1``, ... until one answers, in one call (placement's best-fit node)."""
        delta_on, buckets = self.delta_on, self.base.buckets
        if not delta_on:  # no plans yet this pass: the engine's buckets are exact
            for k in range(k0, len(buckets)):
                bucket = buckets[k]
                if bucket:
                    return next(iter(bucket))
            return None
        # the planned-on nodes' best: the fewest free (>= k0), the first in delta_on's order
        by_node, top, best = self.base.by_node, len(buckets), None
        for n, dlt in delta_on.items():
            c = len(by_node[n]) + dlt
            if k0 <= c < top:
                top, best = c, n
        # an unplanned node with as few free comes first (nodes_with's order), fewer wins
        for k in range(k0, top + 1 if best is not None else top):
            bucket = buckets[k]
            if bucket:
                for n in bucket:
                    if n not in delta_on:
                        return n
        return best

    def nodes_with(self, k: int) -> Iterator[int]:
        """Nodes with exactly ``k`` free devices after this pass's plans, in a fixed order."""
        delta_on, by_node = self.delta_on, self.base.by_node
        for n in self.base.buckets[k] if k < len(self.base.buckets) else ():
            if n not in delta_on:
                yield n
        for n, dlt in delta_on.items():
            if len(by_node[n]) + dlt == k:
                yield n

    def take(self, devices: Sequence[int]) -> None:
        """Plan to use ``devices`` (each must be free after this pass's plans)."""
        node_of, delta_on = self.base.node_of, self.delta_on
        self._firsts = None
        for d in devices:
            if d in self.taken:
                raise ValueError(f"device {d} planned twice in one pass")
            self.taken.add(d)
            n = node_of[d]
            delta_on[n] = delta_on.get(n, 0) - 1
        self.total -= len(devices)

    def release(self, devices: Sequence[int]) -> None:
        """Plan to free busy ``devices`` (a preemption or shrink in the same decision)."""
        node_of, delta_on = self.base.node_of, self.delta_on
        self._firsts = None
        for d in devices:
            n = node_of[d]
            if d in self.taken:  # planned earlier in this pass: the plan is dropped
                self.taken.remove(d)
            elif self.is_free(d):
                raise ValueError(f"device {d} is already free")
            else:
                self.released.add(d)
                self.released_on.setdefault(n, []).append(d)
            delta_on[n] = delta_on.get(n, 0) + 1
        self.total += len(devices)

    def is_free(self, device: int) -> bool:
        if device in self.taken:
            return False
        b = self.base
        return device in self.released or device in b.by_node[b.node_of[device]]


class ClusterView:
    """Read-only snapshot handed to :meth:`ClusterScheduler.decide`.

    - ``now_s``: the current time
    - ``queue``: waiting jobs in arrival order (preempted jobs rejoin at the end)
    - ``running``: job id → :class:`RunningJob`
    - ``free``: whole free devices with this pass's plans (:class:`Tentative`)
    - ``available``: free amount per non-gpu resource type (cpu, host_mem_bytes), this pass's
      plans deducted
    - ``device_free_milli``: per device, the unshared fraction ×1000 (fractional GPUs)
    - ``pools``: per-device memory pools (ask ``fits``; never allocate)
    - ``finished``: completed jobs, oldest first (feedback for predictors)
    - ``under_demand``: running elastic jobs holding fewer devices than they demand
    - ``share_taken``: fractional shares planned in this pass, per device
    - ``partial``: devices partly used by fractional jobs (an index kept by the engine)
    - ``suspended``: job id → the engine's record of a preempted job now waiting (its progress
      ``done_flops``, attained service ``attained_gpu_s``, ``stopped_s``)

    A plain slotted class, not a dataclass: one is built per pass, so construction is kept cheap.
    """

    __slots__ = ("now_s", "cluster", "queue", "running", "free", "available", "device_free_milli", "pools",
                 "finished", "under_demand", "share_taken", "partial", "suspended")

    def __init__(self, now_s: float, cluster: Cluster, queue: Sequence[Job], running: Mapping[int, RunningJob],
                 free: Tentative, available: dict[str, float] | None = None, device_free_milli: Sequence[int] = (),
                 pools: Sequence["MemoryPool"] = (), finished: Sequence[FinishedJob] = (),
                 under_demand: Mapping[int, RunningJob] | None = None,
                 partial: Mapping[int, None] | None = None,
                 suspended: Mapping[int, RunningJob] | None = None) -> None:
        self.now_s = now_s
        self.cluster = cluster
        self.queue = queue
        self.running = running
        self.free = free
        self.available = available if available is not None else {}
        self.device_free_milli = device_free_milli
        self.pools = pools
        self.finished = finished
        self.under_demand = under_demand if under_demand is not None else {}
        self.share_taken: dict[int, int] = {}
        #: devices partly used by fractional jobs (0 < free milli < 1000), kept by the engine;
        #: None (hand-built views) = derive from ``device_free_milli`` when needed
        self.partial = partial
        self.suspended = suspended if suspended is not None else {}

    @staticmethod
    def build(cluster: Cluster, queue: Sequence[Job] = (), running: Mapping[int, RunningJob] | None = None,
              free: Sequence[int] | None = None, now_s: float = 0.0, available: Mapping[str, float] | None = None,
              pools: Sequence["MemoryPool"] = (), finished: Sequence[FinishedJob] = (),
              suspended: Mapping[int, RunningJob] | None = None) -> "ClusterView":
        """A hand-built view for tests and notebooks: ``free`` lists the free devices
        (default: all not held by ``running``); ``suspended`` holds preempted jobs' records."""
        running = dict(running or {})
        if free is None:
            busy = {d for r in running.values() for d in r.devices}
            free = [d for d in range(cluster.n_devices) if d not in busy]
        milli = [0] * cluster.n_devices
        for d in free:
            milli[d] = FULL_DEVICE_MILLI
        totals = cluster.totals()
        avail = dict(available) if available is not None else {k: v for k, v in totals.items() if k != GPU}
        under = {i: r for i, r in running.items() if r.job.elastic and len(r.devices) < r.job.gpus}
        return ClusterView(now_s, cluster, list(queue), running, Tentative(FreeDevices(cluster, free)),
                           avail, milli, list(pools), list(finished), under_demand=under, suspended=suspended)

    def free_share(self, device: int) -> int:
        """Unshared thousandths of ``device`` after this pass's plans."""
        shared = self.share_taken.get(device)
        if shared is None:
            return 0 if device in self.free.taken else self.device_free_milli[device]
        return self.device_free_milli[device] - shared

    def plan(self, job: Job, devices: Sequence[int]) -> None:
        """Record a planned start (or growth) of ``job`` on ``devices`` in this pass's scratch,
        so later placements in the same pass see them as used."""
        if job.gpu_milli < FULL_DEVICE_MILLI:
            st = self.share_taken
            for d in devices:
                st[d] = st.get(d, 0) + job.gpu_milli
            whole = [d for d in devices if self.free.is_free(d)]
            if whole:
                self.free.take(whole)
        else:
            self.free.take(devices)
            st = self.share_taken
            for d in devices:
                if d in st:  # a device released in this pass: now planned whole again
                    st[d] += FULL_DEVICE_MILLI
        self.take_resources(job, len(devices))

    def release(self, r: RunningJob, devices: Sequence[int] | None = None) -> None:
        """Plan to free ``devices`` (default: all) of running job ``r`` in this pass — its
        share of each device, and its non-gpu resources when all its devices go — so starts
        planned after this can use them. The decision must then preempt (or shrink) ``r``."""
        devices = r.devices if devices is None else devices
        share, st, milli = r.job.gpu_milli, self.share_taken, self.device_free_milli
        whole = []
        for d in devices:
            st[d] = st.get(d, 0) - share
            if milli[d] - st[d] == FULL_DEVICE_MILLI:
                whole.append(d)
        if whole:
            self.free.release(whole)
        if len(devices) == len(r.devices):
            for k, v in r.resources.items():
                self.available[k] = self.available.get(k, 0.0) + v

    def fork(self) -> "ClusterView":
        """A copy whose pass-local plans are independent of this one's (cheap: the engine's
        state is shared, only the overlays are copied)."""
        v = ClusterView(self.now_s, self.cluster, self.queue, self.running, self.free.fork(), dict(self.available),
                        self.device_free_milli, self.pools, self.finished, self.under_demand, self.partial,
                        self.suspended)
        v.share_taken = dict(self.share_taken)
        return v

    def fits_memory(self, job: Job, devices: Sequence[int]) -> bool:
        """Would ``job``'s per-device memory fit on each of ``devices`` now?"""
        if not self.pools or job.mem_bytes_per_device <= 0:
            return True
        return all(self.pools[d].fits(job.mem_bytes_per_device) for d in devices)

    def resources_fit(self, job: Job, n_devices: int) -> bool:
        """Do the non-gpu demands (scaled to ``n_devices`` for elastic jobs) fit ``available``?"""
        if not job.demand:
            return True
        scale = n_devices / job.gpus
        avail = self.available
        return all(avail.get(k, 0.0) + CAPACITY_TOLERANCE >= v * scale for k, v in job.demand.items())

    def take_resources(self, job: Job, n_devices: int) -> None:
        """Record a planned start's non-gpu resources in this pass's scratch."""
        if job.demand:
            scale = n_devices / job.gpus
            for k, v in job.demand.items():
                self.available[k] = self.available.get(k, 0.0) - v * scale
