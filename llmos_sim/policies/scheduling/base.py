"""The cluster-scheduling seam: ``decide(view) -> Decision``, and placement beside it.

A scheduler reads a :class:`~llmos_sim.view.ClusterView` and returns which queued jobs start
on which devices, which running jobs are preempted, and which elastic jobs are resized. The
engine applies the decision (it alone mutates state) and rejects, with a ``reject`` event,
anything that no longer holds. A scheduler composes a :class:`Placement` that picks devices.

Most policies differ only in the order in which they consider waiting jobs, so
:class:`QueueScheduler` owns the loop (grant, place, plan, stop-or-skip, grow elastic jobs)
and a policy overrides :meth:`QueueScheduler.order` (hooks, not copies).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Sequence

from llmos_sim.formulas import grant
from llmos_sim.types import FULL_DEVICE_MILLI, GPU, Job
from llmos_sim.view import ClusterView


@dataclass(frozen=True, slots=True)
class Start:
    """Start queued job ``job_id`` on ``devices`` (each at the job's ``gpu_milli`` share)."""

    job_id: int
    devices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Preempt:
    """Stop running job ``job_id``, keep its progress, and put it back in the queue."""

    job_id: int


@dataclass(frozen=True, slots=True)
class Resize:
    """Move running (elastic) job ``job_id`` onto ``devices`` (grow or shrink)."""

    job_id: int
    devices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one scheduling pass decided. Applied in order: preempts, resizes, starts."""

    starts: tuple[Start, ...] = ()
    preempts: tuple[Preempt, ...] = ()
    resizes: tuple[Resize, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.starts or self.preempts or self.resizes)


EMPTY = Decision()


class Placement(ABC):
    """Picks ``n`` devices for a job from the view's free devices, or ``None``.

    :meth:`place` owns what every placement shares (shared-GPU jobs go to
    :meth:`place_fractional`; too few free devices means no placement); a policy implements
    :meth:`place_whole` for whole-device jobs.
    """

    def place(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        """Devices for ``n`` of ``job``'s workers; must not change the view."""
        if job.gpu_milli < FULL_DEVICE_MILLI:
            return self.place_fractional(job, view)
        if view.free.total < n:
            return None
        return self.place_whole(job, n, view)

    @abstractmethod
    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        """``n`` whole free devices for ``job`` (at least ``n`` are free), or ``None``."""

    # Shared helpers for subclasses ------------------------------------------------------
    @staticmethod
    def eligible(job: Job, device: int, view: ClusterView) -> bool:
        """Device type matches the job's pin (if any) and its memory demand fits."""
        if job.device_type is not None and view.cluster.devices[device].spec.name != job.device_type:
            return False
        return not view.pools or job.mem_bytes_per_device <= 0 or view.pools[device].fits(job.mem_bytes_per_device)

    def place_fractional(self, job: Job, view: ClusterView) -> tuple[int, ...] | None:
        """Shared GPUs (``gpu_milli`` < 1000): best fit by remaining share, one device per worker."""
        need, milli = job.gpu_milli, view.device_free_milli
        chosen: list[int] = []
        # partly used devices first, tightest fit first (by the engine's free share, then index)
        partial = view.partial if view.partial is not None else \
            {d: None for d, m in enumerate(milli) if 0 < m < FULL_DEVICE_MILLI}
        for m, d in sorted((milli[d], d) for d in partial if milli[d] >= need):
            if view.free_share(d) >= need and self.eligible(job, d, view):
                chosen.append(d)
                if len(chosen) == job.gpus:
                    return tuple(chosen)
        # then whole free devices, lowest index first (nodes hold ascending index ranges)
        for ids in view.free.base.by_node:
            for d in ids:
                if view.free_share(d) >= need and self.eligible(job, d, view):
                    chosen.append(d)
                    if len(chosen) == job.gpus:
                        return tuple(chosen)
        return None


class Pack(Placement):
    """Consolidate: the fewest nodes, the fullest first (best fit on a node).

    One node that fits ``n`` with the fewest free devices left over, else whole nodes with the
    most free devices first. Devices within a node in ascending index.
    Nodes with as many free devices go in the order of :meth:`Tentative.nodes_with`: the one
    that has had that count longest first (at the start, lower index first), nodes this pass
    has already planned on (a start, or a victim's release) after the others, in the order
    the pass first touched them.
    """

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        free = view.free
        simple = job.device_type is None and (not view.pools or job.mem_bytes_per_device <= 0)
        maxk = free.base.max_per_node
        if n <= maxk and simple:  # fast path: the best-fit node is the first one found
            node = free.best_fit_node(n)
            if node is not None:
                return tuple(free.ids(node)[:n])
        elif n <= maxk:
            for k in range(n, maxk + 1):
                for node in free.nodes_with(k):
                    ids = free.ids(node)
                    if not simple:
                        ids = [d for d in ids if self.eligible(job, d, view)]
                        if len(ids) < n:
                            continue
                    return tuple(ids[:n])
        # spill across nodes: most free first
        chosen: list[int] = []
        for k in range(maxk, 0, -1):
            for node in free.nodes_with(k):
                ids = free.ids(node) if simple else [d for d in free.ids(node) if self.eligible(job, d, view)]
                chosen.extend(ids[: n - len(chosen)])
                if len(chosen) == n:
                    return tuple(sorted(chosen))
        return None


class FirstFree(Placement):
    """Lowest-indexed free devices, ignoring node boundaries (the simplest baseline)."""

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        free = view.free
        chosen: list[int] = []
        for node in range(len(free.base.by_node)):
            for d in free.ids(node):
                if self.eligible(job, d, view):
                    chosen.append(d)
                    if len(chosen) == n:
                        return tuple(chosen)
        return None


class ClusterScheduler(ABC):
    """Base of every job-level policy.

    ``round_s``: if set, the engine also runs a pass every ``round_s`` seconds while work
    remains (preemptive and time-sliced policies need it); otherwise passes run only on
    arrivals and completions.
    """

    round_s: float | None = None

    def __init__(self, placement: Placement | None = None) -> None:
        self.placement = placement if placement is not None else Pack()

    @abstractmethod
    def decide(self, view: ClusterView) -> Decision:
        """Read ``view``, return a :class:`Decision`. Must not mutate engine state."""

    def wake_s(self, view: ClusterView) -> float | None:
        """When this policy's ranking next changes without an arrival or completion (e.g. a
        running job crossing a queue threshold), so the engine runs a pass then; ``None`` = no
        such moment. Called after each pass that leaves jobs running; each answer replaces the
        last (a moment no longer named is withdrawn)."""
        return None


class QueueScheduler(ClusterScheduler):
    """Considers waiting jobs in :meth:`order`; each gets ``R* = min(R, R^d)`` devices.

    ``blocking=True`` stops at the first job that cannot start (strict head-of-line
    blocking); ``False`` lets later jobs that fit go ahead. Rigid jobs need their full
    demand; elastic ones start on any grant ≥ ``min_gpus``. With ``elastic_grow``, devices
    still free after the queue are given to running elastic jobs below their demand, oldest
    first.
    """

    def __init__(self, placement: Placement | None = None, blocking: bool = True, elastic_grow: bool = True) -> None:
        super().__init__(placement)
        self.blocking = blocking
        self.elastic_grow = elastic_grow

    def order(self, view: ClusterView) -> Iterable[Job]:
        """The hook: waiting jobs in the order this policy serves them (default: arrival)."""
        return view.queue

    def order_key(self, job: Job, view: ClusterView) -> tuple:
        """:meth:`order` stated as a key: :meth:`order` is the queue sorted by it. A policy
        that declares it (in the class that defines its :meth:`order`) runs through the
        engine's key-order fast core (:mod:`llmos_sim.fastcore`). The key is computed once,
        when the job arrives (``view`` is only for the cluster), so it must never change
        while the job waits, and it must differ between jobs (end it with the job's id).
        Default: arrival (the queue's order), then id."""
        return (job.arrival_s, job.id)

    def decide(self, view: ClusterView) -> Decision:
        starts: list[Start] = []
        free = view.free
        for job in self.order(view):
            if free.total == 0 and job.gpu_milli == FULL_DEVICE_MILLI:
                if self.blocking:
                    break
                continue
            devices = self.try_start(job, view)
            if devices is not None:
                starts.append(Start(job.id, devices))
            elif self.blocking:
                break
        resizes = self.grow(view) if self.elastic_grow and free.total and view.under_demand else ()
        return Decision(starts=tuple(starts), resizes=tuple(resizes))

    def try_start(self, job: Job, view: ClusterView) -> tuple[int, ...] | None:
        """Grant, place and plan ``job``; the devices, or ``None`` if it cannot start now."""
        if job.gpu_milli < FULL_DEVICE_MILLI:
            n = job.gpus
        else:
            n = min(view.free.total, job.gpus)  # the seed's R* = min(R, R^d) for the gpu type
            if n < (job.gpus if job.min_gpus is None else job.min_gpus):  # job.min_devices, inlined
                return None
        if job.demand and not view.resources_fit(job, n):
            return None
        devices = self.placement.place(job, n, view)
        if devices is None:
            return None
        view.plan(job, devices)
        return devices

    def grow(self, view: ClusterView) -> Sequence[Resize]:
        """Give free devices to running elastic jobs below their demand (oldest first)."""
        out: list[Resize] = []
        for r in sorted((view.under_demand or {}).values(), key=lambda r: (r.first_start_s, r.job.id)):
            job = r.job
            if view.free.total == 0:
                break
            if job.gpu_milli < FULL_DEVICE_MILLI:
                continue
            extra_n = int(grant({GPU: view.free.total}, {GPU: job.gpus - len(r.devices)})[GPU])
            if not view.resources_fit(job, extra_n):
                continue
            extra = self.placement.place(job, extra_n, view)
            if extra:
                view.plan(job, extra)
                out.append(Resize(job.id, tuple(sorted(r.devices + extra))))
        return out


def oracle_duration_s(job: Job, view: ClusterView) -> float:
    """The job's true run time on its full demand of average devices (SJF's oracle duration;
    a user's ``duration_hint_s`` is an estimate and is not used here)."""
    mean_c = view.cluster.total_flops / view.cluster.n_devices
    return job.work_flops / (job.gpus * mean_c * job.gpu_milli / FULL_DEVICE_MILLI)
