"""Serving on the shared cluster: a service is a long-running job under the cluster scheduler.

A :class:`ServiceHost` is the engine's host for jobs with ``Job.service`` set (see
:class:`llmos_sim.engine.Engine`, ``hosts``). Its requests arrive from time 0 whether or not
the service is running (their ``req_arrive`` is at their own arrival time, so a service that
waits for devices shows up in TTFT); when the cluster scheduler starts the service job, the
host creates its replicas in the engine's environment, hands them the requests that arrived
so far, routes later ones as they come, and reports the service done when its last request
has finished or failed. Training jobs and services thus share devices, queue and scheduler.

Config (``mode: mixed``; see ``configs/experiment/shared_cluster.yaml``)::

    services:
      chat:                       # the service's name
        workload: {...}           # a request workload (``requests(rng)``)
        replicas: 2               # replicas of ``serving.tp`` devices each
        arrival_s: 0.0            # when the service job is submitted to the cluster
        priority: 10              # the service job's priority (Job.priority)
        mem_bytes_per_device: 0   # memory it reserves from each device pool (M_d)

The replicas' model, batching, router, KV settings come from the ``model``, ``batching``,
``router`` and ``serving`` groups as in ``mode: serving``; their GPU is the device the cluster
granted (replica ``i`` runs on the ``tp`` devices ``devices[i*tp:(i+1)*tp]``, and on the
smallest of them if the scheduler mixed parts), not the ``gpu`` group: its memory sizes the KV
cache and its FLOP/s and bandwidth drive the cost model.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import simpy

from llmos_sim import events as E
from llmos_sim.policies.routing.base import Router
from llmos_sim.serving.system import replica_loads
from llmos_sim.types import Job


class _CountingLog:
    """The run's log as the replicas see it: records go through unchanged; finished and
    failed requests are counted so the host knows when its stream has ended."""

    __slots__ = ("log", "host")

    def __init__(self, log: E.EventLog, host: "ServiceHost") -> None:
        self.log, self.host = log, host

    @property
    def records(self) -> list:
        return self.log.records

    def emit(self, time_s: float, kind: str, subject: Any, data: tuple = ()) -> None:
        self.log.emit(time_s, kind, subject, data)
        if kind == E.REQ_FINISH or kind == E.REQ_FAIL:
            self.host.request_ended()


class ServiceHost:
    """Hosts one service: its request stream, and its replicas once the scheduler starts it.

    ``make_replica(index, env, log, next_arrival) -> Replica`` builds one replica (the same
    factory ``mode: serving`` uses); ``replicas`` is how many the service runs.
    """

    def __init__(self, name: str, requests: Sequence, make_replica: Callable, router: Router, replicas: int,
                 env: simpy.Environment, log: E.EventLog, device_specs: Sequence | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"services.{name}.replicas must be >= 1, got {replicas}")
        self.name = name
        self.requests = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self.make_replica = make_replica
        self.router = router
        self.n_replicas = int(replicas)
        self.env = env
        self.log = log
        self._tap = _CountingLog(log, self)
        self.device_specs = device_specs  #: the cluster's DeviceSpec per device index (None: the gpu group's)
        self.replicas: list = []
        self.pending: list = []  # arrived before the service started
        self._next = 0
        self._left = len(self.requests)
        self._done: simpy.Event | None = None
        env.process(self._arrivals())

    # -- the engine's host seam -----------------------------------------------------------
    def start(self, job: Job, devices: tuple[int, ...], env: simpy.Environment, log: E.EventLog) -> simpy.Event:
        """The scheduler started the service job on ``devices``: create the replicas, hand
        them the waiting requests; the returned event fires when the stream has ended."""
        self._done = simpy.Event(env)
        self.replicas = [self.make_replica(i, env, self._tap, self.next_arrival_s, **self._device_of(i, devices))
                         for i in range(self.n_replicas)]
        for r in self.pending:
            self._route(r)
        self.pending = []
        if self._left == 0:
            self._done.succeed()
        return self._done

    def _device_of(self, i: int, devices: tuple[int, ...]) -> dict:
        """``{"device": spec}`` of replica ``i``'s share of ``devices`` (the smallest part if
        they differ), or nothing when the host was not given the cluster's devices."""
        if self.device_specs is None:
            return {}
        tp = max(1, len(devices) // self.n_replicas)
        specs = {self.device_specs[d] for d in devices[i * tp:(i + 1) * tp]}
        return {"device": min(specs, key=lambda d: (d.mem_bytes, d.flops, d.name))}

    # -- requests -----------------------------------------------------------------------------
    def next_arrival_s(self) -> float:
        """Arrival time of the next request not yet routed (inf when none are left)."""
        return self.requests[self._next].arrival_s if self._next < len(self.requests) else math.inf

    def _arrivals(self):
        env = self.env
        for r in self.requests:
            if r.arrival_s > env.now:
                yield env.timeout(r.arrival_s - env.now)
            self._next += 1
            self.log.emit(env.now, E.REQ_ARRIVE, r.id, (self.name, r.prompt_tokens, r.output_tokens))
            if self.replicas:
                self._route(r)
            else:
                self.pending.append(r)

    def _route(self, r) -> None:
        reps = self.replicas
        reps[self.router.route(r, replica_loads(reps, self.router, r))].enqueue(r)

    def request_ended(self) -> None:
        self._left -= 1
        if self._left == 0 and self._done is not None and not self._done.triggered:
            self._done.succeed()

    def flush_itl(self, time_s: float) -> None:
        """Log the replicas' inter-token latency corrections (the run calls this at its end, so
        that the cluster's records keep their numbers)."""
        for x in self.replicas:
            x.flush_itl(time_s)


def service_jobs(services: dict, first_id: int, tp: int) -> list[Job]:
    """One cluster job per service: ``replicas × tp`` devices, its priority and memory."""
    out = []
    for k, (name, s) in enumerate(sorted(services.items())):
        out.append(Job(first_id + k, float(s.get("arrival_s", 0.0)), 0.0, gpus=int(s.get("replicas", 1)) * tp,
                       priority=int(s.get("priority", 0)), mem_bytes_per_device=int(s.get("mem_bytes_per_device", 0)),
                       tenant=f"service:{name}", name=f"service:{name}", service=name))
    return out
