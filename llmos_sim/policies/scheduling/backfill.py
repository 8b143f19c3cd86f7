"""EASY backfilling: FIFO with a reservation for the head job, on users' walltime estimates."""
from __future__ import annotations

from llmos_sim.policies.scheduling.base import Decision, Placement, QueueScheduler, Start, oracle_duration_s
from llmos_sim.types import FULL_DEVICE_MILLI, Job
from llmos_sim.view import ClusterView


class EASYBackfill(QueueScheduler):
    """EASY backfilling (Lifka 1995; Mu'alem & Feitelson 2001).

    Jobs start in arrival order while they fit. When the head job does not fit, it gets a
    *reservation*: the *shadow time* at which, by the running jobs' estimated ends, enough
    devices will be free for it, and the *extra* devices that will be left over then. A later
    job may start now (backfill) only if it fits now and either ends (by its estimate) before
    the shadow time or uses no more than the extra devices — so it never delays the head.

    Estimates are the user's walltime ``Job.duration_hint_s`` (s, on the job's full demand);
    a job without one is estimated by ``missing_estimate``: ``"oracle"`` (its true duration on
    average devices) or a number of seconds. The reservation counts devices, not their
    topology (as EASY does); a running job past its estimate is assumed to end now.
    """

    def __init__(self, placement: Placement | None = None, missing_estimate: str | float = "oracle",
                 elastic_grow: bool = False) -> None:
        super().__init__(placement, blocking=False, elastic_grow=elastic_grow)
        self.missing_estimate = missing_estimate

    def estimate_s(self, job: Job, view: ClusterView) -> float:
        """Estimated run time of ``job`` (s)."""
        if job.duration_hint_s is not None:
            return float(job.duration_hint_s)
        if self.missing_estimate == "oracle":
            return oracle_duration_s(job, view) + job.preprocess_s + job.output_s
        return float(self.missing_estimate)

    def shadow(self, head: Job, view: ClusterView, planned: list[tuple[Job, int]] = ()) -> tuple[float, float]:
        """``(shadow time, extra devices)`` of the head job's reservation: walk the running (and
        this pass's ``planned``) jobs by estimated end until enough devices are free."""
        now = view.now_s
        free = float(view.free.total)
        need = head.min_devices
        if free >= need:
            return now, free - need
        ends = [(max(now, (r.first_start_s if r.first_start_s is not None else now) + self.estimate_s(r.job, view)),
                 len(r.devices)) for r in view.running.values() if r.job.gpu_milli == FULL_DEVICE_MILLI]
        ends += [(now + self.estimate_s(j, view), n) for j, n in planned if j.gpu_milli == FULL_DEVICE_MILLI]
        for t, n in sorted(ends):
            free += n
            if free >= need:
                return t, free - need
        return float("inf"), 0.0

    def decide(self, view: ClusterView) -> Decision:
        starts: list[Start] = []
        queue = iter(list(view.queue))
        head = None
        for job in queue:
            devs = self.try_start(job, view)
            if devs is None:
                head = job
                break
            starts.append(Start(job.id, devs))
        if head is not None:
            byid = {j.id: j for j in view.queue} if starts else {}
            shadow, extra = self.shadow(head, view, [(byid[s.job_id], len(s.devices)) for s in starts])
            now = view.now_s
            for job in queue:
                if view.free.total == 0 and job.gpu_milli == FULL_DEVICE_MILLI:
                    break
                ends_before = now + self.estimate_s(job, view) <= shadow
                if not ends_before and job.gpus > extra:
                    continue
                devs = self.try_start(job, view)
                if devs is not None:
                    starts.append(Start(job.id, devs))
                    if not ends_before:
                        extra -= len(devs)
        resizes = self.grow(view) if self.elastic_grow and view.free.total and view.under_demand else ()
        return Decision(starts=tuple(starts), resizes=tuple(resizes))
