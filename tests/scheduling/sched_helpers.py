"""Tiny clusters and log filters for the scheduling tests (1 FLOP/s devices: work = device-seconds)."""
from __future__ import annotations

from llmos_sim import events as E
from llmos_sim.engine import Engine
from llmos_sim.policies.scheduling.preemptive import LAS, SRTF, DiscretizedLAS
from llmos_sim.types import Cluster, DeviceSpec, Job
from llmos_sim.view import RunningJob

UNIT = DeviceSpec("unit", 1.0, 0)
FAST = DeviceSpec("fast", 2.0, 0)
SLOW = DeviceSpec("slow", 1.0, 0)


def cluster(nodes: int = 1, per_node: int = 1, nodes_per_switch: int = 0, **kw) -> Cluster:
    return Cluster.homogeneous(nodes, per_node, UNIT, nodes_per_switch=nodes_per_switch, **kw)


def job(i: int, arrival: float, seconds: float, gpus: int = 1, **kw) -> Job:
    """A job that runs ``seconds`` on ``gpus`` unit devices."""
    return Job(i, arrival, seconds * gpus, gpus=gpus, **kw)


def running(j: Job, devices, start: float = 0.0, attained: float = 0.0, done: float = 0.0) -> RunningJob:
    r = RunningJob(j)
    r.devices = tuple(devices)
    r.first_start_s = start
    r.seg_start_s = start
    r.rate_flops_s = float(len(devices))
    r.attained_gpu_s = attained
    r.compute_gpu_s = attained  # no overhead in these hand-built records: held = computed
    r.done_flops = done
    return r


def story(cl: Cluster, scheduler, jobs, kinds=(E.START, E.FINISH, E.PREEMPT), **engine_kw):
    """Run ``jobs`` and return the (time, kind, job) sequence of the given kinds."""
    eng = Engine(cl, scheduler, **engine_kw)
    log = eng.run(jobs)
    return [(t, k, s) for t, k, s, _ in log.records if k in kinds], log


def starts(log):
    return {s: d[0] for t, k, s, d in log.records if k == E.START}


class GeneralLAS(LAS):
    """LAS with ``key`` overridden (only to call the parent's): served by the general path —
    every pass ranks every job through ``key``, no kept ranks, no skipped quiet passes."""

    def key(self, job, running, view):
        return super().key(job, running, view)


class GeneralSRTF(SRTF):
    def key(self, job, running, view):
        return super().key(job, running, view)


class GeneralDiscretizedLAS(DiscretizedLAS):
    def key(self, job, running, view):
        return super().key(job, running, view)
