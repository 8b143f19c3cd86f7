"""Elastic scheduling: grow into idle devices, shrink running jobs to admit waiting ones."""
from __future__ import annotations

from llmos_sim.policies.scheduling.base import Decision, Placement, QueueScheduler, Resize, Start
from llmos_sim.policies.scheduling.preemptive import released_view
from llmos_sim.types import FULL_DEVICE_MILLI, GPU, Job
from llmos_sim.formulas import grant
from llmos_sim.view import ClusterView, RunningJob


class Elastic(QueueScheduler):
    """FIFO over elastic and rigid jobs with the seed's grant ``R* = min(available, demanded)``.

    Jobs start on any grant of at least ``min_gpus`` devices and grow (oldest first) into
    devices left idle after the queue (:meth:`QueueScheduler.grow`). With ``shrink_to_admit``,
    a waiting job that does not fit takes devices from running elastic jobs above their
    ``min_gpus`` — those with the most surplus first, each giving up its highest-indexed
    devices — when that is enough to start it at its minimum; the shrinks (engine ``Resize``)
    and the start go in the same decision (the engine applies resizes before starts). A pass
    that shrank never grows, so jobs do not flap. The policy keeps every running job
    admitted: it never preempts.
    """

    def __init__(self, placement: Placement | None = None, shrink_to_admit: bool = True, blocking: bool = False,
                 elastic_grow: bool = True) -> None:
        super().__init__(placement, blocking=blocking, elastic_grow=elastic_grow)
        self.shrink_to_admit = shrink_to_admit

    def decide(self, view: ClusterView) -> Decision:
        starts: list[Start] = []
        held: dict[int, tuple[int, ...]] = {}  # donor id -> devices it keeps after this pass's shrinks
        v = view
        for job in self.order(view):
            devs = self.try_start(job, v)
            if devs is None and self.shrink_to_admit and job.gpu_milli == FULL_DEVICE_MILLI:
                got = self._shrink_for(job, v, view, held)
                if got is not None:
                    v, devs = got
            if devs is not None:
                starts.append(Start(job.id, devs))
            elif self.blocking:
                break
        resizes = [Resize(jid, devs) for jid, devs in held.items()]
        if not held and self.elastic_grow and v.free.total and view.under_demand:
            resizes.extend(self.grow(v))
        return Decision(starts=tuple(starts), resizes=tuple(resizes))

    def _shrink_for(self, job: Job, v: ClusterView, view: ClusterView,
                    held: dict[int, tuple[int, ...]]) -> tuple[ClusterView, tuple[int, ...]] | None:
        """Shrink donors enough to start ``job`` at its minimum; the new view and its devices."""
        short = job.min_devices - v.free.total
        if short <= 0:
            return None  # enough devices but they do not fit (pins, memory): shrinking won't help
        donors: list[tuple[int, int, RunningJob]] = []
        for r in view.running.values():
            if r.job.elastic and r.job.gpu_milli == FULL_DEVICE_MILLI:
                cur = held.get(r.job.id, r.devices)
                surplus = len(cur) - r.job.min_devices
                if surplus > 0:
                    donors.append((-surplus, r.job.id, r))
        if sum(-s for s, _, _ in donors) < short:
            return None
        donors.sort()
        released: list[tuple[RunningJob, tuple[int, ...]]] = []
        new_held: dict[int, tuple[int, ...]] = {}
        for neg, _, r in donors:
            if short <= 0:
                break
            cur = held.get(r.job.id, r.devices)
            k = min(-neg, short)
            released.append((r, cur[-k:]))
            new_held[r.job.id] = cur[:-k]
            short -= k
        v2 = released_view(v, released)
        n = int(grant({GPU: v2.free.total}, {GPU: job.gpus})[GPU])
        if n < job.min_devices or not v2.resources_fit(job, n):
            return None
        devs = self.placement.place(job, n, v2)
        if devs is None:
            return None
        v2.plan(job, devs)
        held.update(new_held)
        return v2, devs
