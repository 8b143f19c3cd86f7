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
        autoscaler: null          # a policy (e.g. ${autoscaler}): scale between replicas and its max
        load_bw_bytes_s: 2.0e9    # weights load bandwidth of a replica added at run time (B/s)
        startup_s: 30.0           # its fixed startup time (process, CUDA context, warm-up) (s)
        provision_floor: false    # true: the service's own replicas provision too when it starts

Autoscaling (:class:`Autoscaling`; the policy is an
:class:`~llmos_sim.policies.autoscaling.Autoscaler`, e.g. ``autoscaler=threshold``): the
service's own job holds ``replicas`` replicas for its whole life (the floor). Every
``interval_s`` the policy sees the service's load and may ask for one more replica: the host
submits a job of ``tp`` devices with the service's priority and memory to the cluster
scheduler (:meth:`llmos_sim.engine.Engine.submit`), which treats it like any job. When the
scheduler grants it, the replica provisions for ``weight_bytes / load_bw_bytes_s + startup_s``
(Llama-3.1-8B's 16 GB at the default 2 GB/s — a local NVMe or a fast object store — plus 30 s:
38 s) and only then takes requests. A scale-down drains one replica added at run time (the
one with the fewest requests, then the newest): it takes no new requests, its own finish
there, and then its job ends and returns its devices. When the stream ends, every added
replica ends with it (one still queued ends as soon as it is granted). Each step is a record
(``scale``, ``provision_start``, ``replica_ready``, ``drain_start``, ``drain_end``, see
:mod:`llmos_sim.events`); :func:`replicas_table` turns them into the replica counts over time.

The service's own replicas (the floor) start warm by default (``provision_floor: false``): they
take requests as soon as the scheduler starts the service job, as if the weights were already
loaded (a service deployed before the period simulated; the static and autoscaled runs of an
experiment then differ only in the replicas added). ``provision_floor: true`` charges them the
same ``weight_bytes / load_bw_bytes_s + startup_s`` when the service job starts (a cold start:
each floor replica is logged ``provision_start`` then ``replica_ready`` when autoscaled, and
requests that arrive meanwhile wait, as they do before the job starts); it applies to services
without an autoscaler too.

The replicas' model, batching, router, KV settings come from the ``model``, ``batching``,
``router`` and ``serving`` groups as in ``mode: serving``; their GPU is the device the cluster
granted (replica ``i`` runs on the ``tp`` devices ``devices[i*tp:(i+1)*tp]``, and on the
smallest of them if the scheduler mixed parts), not the ``gpu`` group: its memory sizes the KV
cache and its FLOP/s and bandwidth drive the cost model.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd
import simpy

from llmos_sim import events as E
from llmos_sim.kernel import Instant, push_at, queue_of
from llmos_sim.policies.autoscaling.base import Autoscaler, ServiceLoad, StageLoad
from llmos_sim.policies.routing.base import Router
from llmos_sim.serving.system import replica_loads
from llmos_sim.types import Job

#: the records autoscaling writes (the ``replicas`` table's rows)
SCALING_KINDS = (E.SCALE, E.PROVISION_START, E.REPLICA_READY, E.DRAIN_START, E.DRAIN_END)

DEFAULT_LOAD_BW_BYTES_S = 2.0e9  #: weights load bandwidth of an added replica (local NVMe / fast object store)
DEFAULT_STARTUP_S = 30.0  #: fixed startup of an added replica (process, CUDA context, warm-up)


@dataclass(frozen=True)
class Provisioning:
    """How long a replica added at run time takes, from its grant, before it takes requests:
    its weights load at ``load_bw_bytes_s``, plus a fixed ``startup_s``."""

    weight_bytes: int
    load_bw_bytes_s: float = DEFAULT_LOAD_BW_BYTES_S
    startup_s: float = DEFAULT_STARTUP_S

    def __post_init__(self) -> None:
        if not (float(self.load_bw_bytes_s) > 0 and math.isfinite(float(self.load_bw_bytes_s))):
            raise ValueError(f"services.<name>.load_bw_bytes_s must be a finite number > 0, got {self.load_bw_bytes_s!r}")
        if not (float(self.startup_s) >= 0 and math.isfinite(float(self.startup_s))):
            raise ValueError(f"services.<name>.startup_s must be a finite number >= 0, got {self.startup_s!r}")

    @property
    def delay_s(self) -> float:
        """Seconds from the grant to ready."""
        return self.weight_bytes / float(self.load_bw_bytes_s) + float(self.startup_s)


@dataclass(frozen=True)
class Autoscaling:
    """What a :class:`ServiceHost` needs to scale: the policy, the provisioning delay, the
    engine's :meth:`~llmos_sim.engine.Engine.submit`, a source of fresh job ids, and what its
    replica jobs and its SLO count look like."""

    policy: Autoscaler
    provisioning: Provisioning
    submit: Callable[[Job], None]
    new_job_id: Callable[[], int]
    tp: int = 1
    priority: int = 0
    mem_bytes_per_device: int = 0
    slo_ttft_s: float = math.inf
    slo_tpot_s: float = math.inf


QUEUED, PROVISIONING, READY, DRAINING, ENDED = "queued", "provisioning", "ready", "draining", "ended"
COLOCATED = "colocated"  #: the pool of a co-located service's replicas (the ``replicas`` table's ``pool``)


class _Slot:
    """One replica of an autoscaled service through its life: queued (its job waits for the
    scheduler), provisioning, ready, draining, ended. The service's own replicas start ready
    and never drain."""

    __slots__ = ("index", "job_id", "state", "replica", "outstanding", "done", "added", "stage", "pos")

    def __init__(self, index: int, job_id: int, state: str, added: bool, stage: str | None = None) -> None:
        self.index, self.job_id, self.state, self.added = index, job_id, state, added
        self.stage = stage  # a disaggregated service's pool (prefill / decode); None: co-located
        self.pos = index  # its position in its pool (a disaggregated service's)
        self.replica = None
        self.outstanding = 0  # requests routed here, not yet finished or failed
        self.done: simpy.Event | None = None  # the replica job's end (added replicas)


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


class _ScalingLog(_CountingLog):
    """The log as an autoscaled service's replicas see it: also tells the host which request
    ended where (draining) and whether it met its SLOs (the policy's attainment)."""

    __slots__ = ()

    def emit(self, time_s: float, kind: str, subject: Any, data: tuple = ()) -> None:
        self.log.emit(time_s, kind, subject, data)
        if kind == E.REQ_FIRST_TOKEN:
            self.host._first_token[subject] = time_s
        elif kind == E.REQ_FINISH or kind == E.REQ_FAIL:
            self.host._scaled_request_ended(time_s, subject, kind == E.REQ_FINISH)
            self.host.request_ended()


class ServiceHost:
    """Hosts one service: its request stream, and its replicas once the scheduler starts it.

    ``make_replica(index, env, log, next_arrival) -> Replica`` builds one replica (the same
    factory ``mode: serving`` uses); ``replicas`` is how many the service's own job runs;
    ``autoscaling`` (optional) adds and drains replicas at run time (see the module's docs).
    """

    def __init__(self, name: str, requests: Sequence, make_replica: Callable, router: Router, replicas: int,
                 env: simpy.Environment, log: E.EventLog, device_specs: Sequence | None = None,
                 autoscaling: Autoscaling | None = None, floor_delay_s: float = 0.0) -> None:
        if replicas < 1:
            raise ValueError(f"services.{name}.replicas must be >= 1, got {replicas}")
        self.name = name
        self.requests = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self.make_replica = make_replica
        self.router = router
        self.n_replicas = int(replicas)
        self.env = env
        self.log = log
        self.autoscaling = autoscaling
        #: provisioning time of the service's own replicas when its job starts (0: they start warm)
        self.floor_delay_s = float(floor_delay_s)
        self._tap = (_ScalingLog if autoscaling is not None else _CountingLog)(log, self)
        self.device_specs = device_specs  #: the cluster's DeviceSpec per device index (None: the gpu group's)
        self.replicas: list = []
        self.pending: list = []  # arrived before the service started
        self._next = 0
        self._left = len(self.requests)
        self._done: simpy.Event | None = None
        if autoscaling is not None:
            self._slots: list[_Slot] = []
            self._by_job: dict[int, _Slot] = {}  # added replicas' job id -> slot
            self._active: list = []  # ready replicas, by index: the ones requests are routed to
            self._where: dict[int, _Slot] = {}  # request id -> the slot it was routed to
            self._first_token: dict[int, float] = {}
            self._req = {r.id: r for r in self.requests}
            self._ended: deque = deque()  # (time, met its SLOs) of ended requests, for the window
            self._met = 0  # ...how many of those met them
            self._met_ttft = self._met_tpot = 0  # ...how many met the TTFT SLO, the TPOT SLO
            self._base_job: int | None = None
            self._heap = queue_of(env)
        env.process(self._arrivals())

    # -- the engine's host seam -----------------------------------------------------------
    def start(self, job: Job, devices: tuple[int, ...], env: simpy.Environment, log: E.EventLog) -> simpy.Event:
        """The scheduler started the service job on ``devices``: create the replicas, hand
        them the waiting requests; the returned event fires when the stream has ended."""
        if self.autoscaling is not None:
            if job.id in self._by_job:
                return self._start_added(self._by_job[job.id], devices)
            self._base_job = job.id
        self._done = simpy.Event(env)
        if self.floor_delay_s > 0 and self._left:  # a cold start: requests keep waiting meanwhile
            ready_s = env.now + self.floor_delay_s
            if self.autoscaling is not None:
                for i in range(self.n_replicas):
                    slot = _Slot(i, job.id, PROVISIONING, added=False)
                    self._slots.append(slot)
                    self._record(E.PROVISION_START, slot, ready_s)
            push_at(queue_of(env), ready_s, Instant(lambda _ev: self._open(job.id, devices)))
        else:
            self._open(job.id, devices)
        return self._done

    def _open(self, job_id: int, devices: tuple[int, ...]) -> None:
        """The service's own replicas take requests from now: built, given the waiting requests."""
        self.replicas = self._own_replicas(devices)
        if self.autoscaling is not None:
            self._start_scaling(job_id)
        for r in self.pending:
            self._route(r)
        self.pending = []
        if self._left == 0 and not self._done.triggered:
            self._done.succeed()

    def _own_replicas(self, devices: tuple[int, ...]) -> list:
        """The service's own replicas, built on its job's ``devices``."""
        return [self.make_replica(i, self.env, self._tap, self.next_arrival_s, **self._device_of(i, devices))
                for i in range(self.n_replicas)]

    def _device_of(self, i: int, devices: tuple[int, ...], n_replicas: int | None = None) -> dict:
        """``{"device": spec}`` of replica ``i``'s share of ``devices`` (the smallest part if
        they differ), or nothing when the host was not given the cluster's devices."""
        tp = max(1, len(devices) // (self.n_replicas if n_replicas is None else n_replicas))
        return self._device_arg(devices[i * tp:(i + 1) * tp])

    def _device_arg(self, devices: Sequence[int]) -> dict:
        """``{"device": spec}`` of a replica on ``devices`` (the smallest part if they differ),
        or nothing when the host was not given the cluster's devices."""
        if self.device_specs is None:
            return {}
        specs = {self.device_specs[d] for d in devices}
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
        if self.autoscaling is not None:
            return self._route_scaled(r)
        reps = self.replicas
        reps[self.router.route(r, replica_loads(reps, self.router, r))].enqueue(r)

    def _route_scaled(self, r) -> None:
        """Route to a ready replica (the router sees only those, numbered by position)."""
        active = self._active
        loads = replica_loads([s.replica for s in active], self.router, r)
        for pos, ld in enumerate(loads):
            ld.index = pos
        slot = active[self.router.route(r, loads)]
        slot.outstanding += 1
        self._where[r.id] = [slot]
        slot.replica.enqueue(r)

    def request_ended(self) -> None:
        self._left -= 1
        if self._left == 0 and self._done is not None and not self._done.triggered:
            self._done.succeed()

    # -- autoscaling ------------------------------------------------------------------------------
    def _start_scaling(self, job_id: int) -> None:
        """The service's own replicas are ready now (its job started; or, with
        ``floor_delay_s``, they provisioned): decisions begin."""
        floor = list(self._slots)  # (their provisioning slots, if any)
        for i, rep in enumerate(self.replicas):
            if floor:
                slot = floor[i]
                slot.state = READY
            else:
                slot = _Slot(i, job_id, READY, added=False)
                self._slots.append(slot)
            slot.replica = rep
            self._active.append(slot)
            self._record(E.REPLICA_READY, slot, self.env.now)
        self._at(self.env.now + self.autoscaling.policy.interval_s, self._tick)

    def _at(self, time_s: float, callback: Callable) -> None:
        """Call ``callback(event)`` at absolute ``time_s`` (exact: no ``now + (t - now)`` rounding)."""
        push_at(self._heap, time_s, Instant(callback))

    def counts(self) -> tuple[int, int, int, int]:
        """``(ready, provisioning, draining, queued)`` replicas of the service now."""
        n = {QUEUED: 0, PROVISIONING: 0, READY: 0, DRAINING: 0, ENDED: 0}
        for s in self._slots:
            n[s.state] += 1
        return n[READY], n[PROVISIONING], n[DRAINING], n[QUEUED]

    def replica_pools(self) -> dict[int, str]:
        """Each replica's pool by index (``colocated``: it prefills and decodes), for the
        ``replicas`` table; empty without autoscaling (no scaling records)."""
        return {s.index: self._pool_of(s) for s in self._slots} if self.autoscaling is not None else {}

    def _pool_of(self, slot: _Slot) -> str:
        return COLOCATED

    def _record(self, kind: str, slot: _Slot, value: Any, extra: tuple = ()) -> None:
        self.log.emit(self.env.now, kind, slot.job_id, (self.name, slot.index, *extra, value, *self.counts()))

    def load(self) -> ServiceLoad:
        """The service's load now, as the autoscaler sees it."""
        now = self.env.now
        ended, window = self._ended, self.autoscaling.policy.slo_window_s
        while ended and ended[0][0] < now - window:
            _, met, met_ttft, met_tpot = ended.popleft()
            self._met -= met
            self._met_ttft -= met_ttft
            self._met_tpot -= met_tpot
        ready, prov, drain, queued = self.counts()
        active = self._active
        return ServiceLoad(now, ready, prov, drain, queued, self.n_replicas,
                           waiting=sum(len(s.replica.waiting) for s in active),
                           outstanding=sum(s.outstanding for s in active),
                           slo_attainment=self._met / len(ended) if ended else math.nan, n_slo_samples=len(ended))

    def _tick(self, _ev=None) -> None:
        if self._left == 0:
            return  # the stream has ended: no more decisions
        a = self.autoscaling
        step = a.policy.decide(self.load())
        if step.delta > 0:
            self._scale_up(step.reason, step.stage)
        elif step.delta < 0:
            self._scale_down(step.reason, step.stage)
        self._at(self.env.now + a.policy.interval_s, self._tick)

    def _scale_up(self, reason: str, stage: str | None = None) -> None:
        """Ask the cluster scheduler for one more replica (one pending at a time; ``stage``:
        a disaggregated service's pool)."""
        if any(s.state in (QUEUED, PROVISIONING) for s in self._slots):
            return
        a, now = self.autoscaling, self.env.now
        slot = _Slot(len(self._slots), a.new_job_id(), QUEUED, added=True, stage=stage)
        self._slots.append(slot)
        self._by_job[slot.job_id] = slot
        self._record(E.SCALE, slot, reason, (+1,))
        a.submit(Job(slot.job_id, now, 0.0, gpus=self._replica_gpus(stage), priority=a.priority,
                     mem_bytes_per_device=a.mem_bytes_per_device, tenant=f"service:{self.name}",
                     name=f"service:{self.name}/replica{slot.index}", service=self.name))

    def _replica_gpus(self, stage: str | None) -> int:
        """Devices of one replica added at run time."""
        return self.autoscaling.tp

    def _scale_down(self, reason: str, stage: str | None = None) -> None:
        """Drain one added ready replica (of pool ``stage``, if given): the fewest outstanding
        requests, then the newest."""
        cands = [s for s in self._slots if s.added and s.state == READY and s.stage == stage]
        if not cands:
            return
        self._drain(min(cands, key=lambda s: (s.outstanding, -s.index)), reason)

    def _unroute(self, slot: _Slot) -> None:
        """Requests are no longer routed to ready ``slot``."""
        self._active.remove(slot)

    def _drain(self, slot: _Slot, reason: str | None = None) -> None:
        """No new requests for ``slot``; it ends when its last one does (``reason``: a
        scale-down's, logged as its ``scale`` record)."""
        if slot.state == READY:
            self._unroute(slot)
        slot.state = DRAINING
        if reason is not None:
            self._record(E.SCALE, slot, reason, (-1,))
        self._record(E.DRAIN_START, slot, slot.outstanding)
        if slot.outstanding == 0:
            self._end(slot)

    def _end(self, slot: _Slot) -> None:
        slot.state = ENDED
        self._record(E.DRAIN_END, slot, slot.outstanding)
        slot.done.succeed()

    def _start_added(self, slot: _Slot, devices: tuple[int, ...]) -> simpy.Event:
        """The scheduler granted an added replica's job: it provisions, then takes requests
        (or ends at once if the stream has ended meanwhile)."""
        env = self.env
        slot.done = simpy.Event(env)
        slot.state = PROVISIONING
        if self._left == 0:
            self._drain(slot)
            return slot.done
        slot.replica = self._added_replica(slot, devices)
        self.replicas.append(slot.replica)
        ready_s = env.now + self.autoscaling.provisioning.delay_s
        self._record(E.PROVISION_START, slot, ready_s)
        self._at(ready_s, lambda _ev: self._ready(slot))
        return slot.done

    def _added_replica(self, slot: _Slot, devices: tuple[int, ...]):
        """The replica of added ``slot``, built on its granted ``devices``."""
        return self.make_replica(slot.index, self.env, self._tap, self.next_arrival_s, **self._device_of(0, devices, 1))

    def _ready(self, slot: _Slot) -> None:
        if slot.state != PROVISIONING:
            return  # ended while provisioning (the stream ended)
        slot.state = READY
        self._route_to(slot)
        self._record(E.REPLICA_READY, slot, self.env.now)

    def _route_to(self, slot: _Slot) -> None:
        """Requests are routed to ``slot`` from now (numbered by position among the ready)."""
        self._active.append(slot)
        self._active.sort(key=lambda s: s.index)

    def _scaled_request_ended(self, time_s: float, rid: int, finished: bool) -> None:
        """A request ended (finished or failed): its replica's count, the SLO window; a
        draining replica whose last request this was ends; the stream's end ends every added
        replica."""
        for slot in self._where.pop(rid, ()):
            self._leave(slot)
        t0 = self._first_token.pop(rid, None)
        met_ttft = met_tpot = False
        if finished and t0 is not None:
            r, a = self._req[rid], self.autoscaling
            ttft = t0 - r.arrival_s
            tpot = (time_s - t0) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
            met_ttft = ttft <= (a.slo_ttft_s if r.slo_ttft_s is None else r.slo_ttft_s)
            met_tpot = tpot <= (a.slo_tpot_s if r.slo_tpot_s is None else r.slo_tpot_s)
        met = met_ttft and met_tpot
        self._ended.append((time_s, met, met_ttft, met_tpot))
        self._met += met
        self._met_ttft += met_ttft
        self._met_tpot += met_tpot
        if self._left == 1:  # this is the stream's last request (request_ended follows)
            for s in self._slots:
                if s.added and s.state in (READY, PROVISIONING):
                    self._drain(s)

    def _leave(self, slot: _Slot) -> None:
        """A request no longer holds ``slot``; a draining slot it was the last of ends."""
        slot.outstanding -= 1
        if slot.state == DRAINING and slot.outstanding == 0:
            self._end(slot)

    def flush_itl(self, time_s: float) -> None:
        """Log the replicas' inter-token latency corrections (the run calls this at its end, so
        that the cluster's records keep their numbers)."""
        for x in self.replicas:
            x.flush_itl(time_s)


class _DisaggScalingLog(_ScalingLog):
    """An autoscaled disaggregated service's log: also tells the host when a request's KV has
    crossed to its decode replica (it leaves its prefill replica then)."""

    __slots__ = ()

    def emit(self, time_s: float, kind: str, subject: Any, data: tuple = ()) -> None:
        super().emit(time_s, kind, subject, data)
        if kind == E.KV_TRANSFER and data[0] == "end":
            self.host._handed_over(subject)


class DisaggServiceHost(ServiceHost):
    """Hosts one disaggregated service (``topology.kind: disaggregated``) on the shared cluster.

    Its job asks for ``P × tp_p + D × tp_d`` devices (``topology.prefill`` / ``.decode``:
    ``replicas`` and ``tp``); the grant is split in order: prefill replica ``i`` runs on
    ``devices[i·tp_p:(i+1)·tp_p]``, decode replica ``j`` on the next ``tp_d`` after the prefill
    ones. A :class:`~llmos_sim.serving.disagg.DisaggSystem` runs the hand-off on them; the host
    routes the arrivals over the prefill replicas (the prefill router). A transfer's bandwidth
    is the placement's (``link_bw``): inside one node the GPUs' peer link (NVLink; the
    catalogue's ``link_bw_bytes_s`` of the part), across nodes the cluster's network, each
    per GPU pair times ``min(tp_p, tp_d)``; transfers share a link per the topology's ``scope``
    and per path (a GPU's NVLink and its NIC are separate links). A request ends on either
    pool (a one-token request at its prefill replica), and the service ends with its last.

    Autoscaled, each replica added at run time belongs to a pool (the policy's
    :attr:`ScaleStep.stage`; its job asks for that pool's ``tp`` devices) and is built on its
    granted devices, provisions, then takes requests: a prefill replica from the arrivals'
    router, a decode replica from the decode router. The policy sees a :class:`StageLoad` per
    pool; a prefill replica holds a request until its KV has crossed, a decode replica from
    the hand-off until it ends; a draining one ends when none is left.
    """

    def __init__(self, name: str, requests: Sequence, make_stage: dict, routers: dict, n_stage: dict, link,
                 kv_bytes_per_token: int, env: simpy.Environment, log: E.EventLog, device_specs: Sequence,
                 link_bw: Callable[[Sequence[int], Sequence[int]], float], autoscaling: Autoscaling | None = None,
                 floor_delay_s: float = 0.0) -> None:
        from llmos_sim.serving.disagg import STAGES

        super().__init__(name, requests, make_stage["prefill"], routers["prefill"],
                         n_stage["prefill"] + n_stage["decode"], env, log, device_specs, autoscaling, floor_delay_s)
        if autoscaling is not None:
            self._tap = _DisaggScalingLog(log, self)
        self.make_stage, self.routers, self.link = make_stage, routers, link
        self.n_stage = {st: int(n_stage[st]) for st in STAGES}
        self.tp = {st: make_stage[st].tp for st in STAGES}
        self.kv_bytes_per_token = int(kv_bytes_per_token)
        self.link_bw = link_bw
        self.system = None  # the DisaggSystem, once the service job has started
        self._devices: dict[str, list] = {st: [] for st in STAGES}  # per pool position: its devices
        self._decode_slots: dict[int, _Slot] = {}  # decode position -> its slot (autoscaled)

    def _pool_of(self, slot: _Slot) -> str:
        """An added replica's pool is its scale-up's; the service's own are prefill ``0 … P−1``
        then decode (their slots learn it when the pools open, after a cold start's records)."""
        return slot.stage or ("prefill" if slot.index < self.n_stage["prefill"] else "decode")

    def _pair_bw(self, i: int, j: int) -> float:
        return self.link_bw(self._devices["prefill"][i], self._devices["decode"][j])

    def _own_replicas(self, devices: tuple[int, ...]) -> list:
        """The two pools on the job's ``devices`` (prefill ones first), run by a new
        :class:`~llmos_sim.serving.disagg.DisaggSystem`."""
        from llmos_sim.serving.disagg import DisaggSystem

        n_p, n_d, tp_p, tp_d = self.n_stage["prefill"], self.n_stage["decode"], self.tp["prefill"], self.tp["decode"]
        self._devices["prefill"] = [devices[i * tp_p:(i + 1) * tp_p] for i in range(n_p)]
        self._devices["decode"] = [devices[n_p * tp_p + j * tp_d:n_p * tp_p + (j + 1) * tp_d] for j in range(n_d)]

        def make(stage: str, offset: int):
            def build(i, env, log, next_arrival):
                return self._build(stage, i, self._devices[stage][i - offset], next_arrival)
            return build

        self.system = DisaggSystem(self.requests, make("prefill", 0), make("decode", n_p), self.routers["prefill"],
                                   self.routers["decode"], n_p, n_d, self.link, self.kv_bytes_per_token,
                                   log=self._tap, env=self.env, next_arrival=self.next_arrival_s,
                                   pair_bw=self._pair_bw)
        for rep in self.system.all_replicas:
            self._host(rep)
        if self.autoscaling is not None:
            self.system.on_decode_route = self._decode_routed
        return list(self.system.all_replicas)

    def _build(self, stage: str, index: int, devices: Sequence[int], next_arrival):
        """Replica ``index`` of pool ``stage`` on ``devices`` (a prefill replica's next arrival
        is the service's; a decode replica's, the system's next landing)."""
        nxt = self.next_arrival_s if stage == "prefill" else next_arrival
        return self.make_stage[stage](index, self.env, self._tap, nxt, **self._device_arg(devices))

    @staticmethod
    def _host(rep) -> None:
        """The host reacts to a finish when it happens (see ``Replica.sync_finishes``); a prefill
        replica's spans are cut by the service's next arrival, as a co-located one's."""
        rep.sync_finishes = True
        rep.own_cuts = False

    def _route(self, r) -> None:
        if self.autoscaling is not None:
            return self._route_scaled(r)
        reps = self.system.prefill
        reps[self.router.route(r, replica_loads(reps, self.router, r))].enqueue(r)

    def _decode_routed(self, rid: int, j: int) -> None:
        slot = self._decode_slots[j]
        slot.outstanding += 1
        self._where[rid].append(slot)

    def _handed_over(self, rid: int) -> None:
        """Request ``rid``'s KV has crossed: it leaves its prefill replica."""
        where = self._where.get(rid)
        if where and where[0].stage == "prefill":
            self._leave(where.pop(0))

    # -- autoscaling --------------------------------------------------------------------------
    def _start_scaling(self, job_id: int) -> None:
        floor = list(self._slots)  # (their provisioning slots, if any)
        n_p = self.n_stage["prefill"]
        for i, rep in enumerate(self.replicas):
            stage, pos = ("prefill", i) if i < n_p else ("decode", i - n_p)
            if floor:
                slot = floor[i]
                slot.state, slot.stage = READY, stage
            else:
                slot = _Slot(i, job_id, READY, added=False, stage=stage)
                self._slots.append(slot)
            slot.pos, slot.replica = pos, rep
            if stage == "prefill":
                self._active.append(slot)
            else:
                self._decode_slots[pos] = slot
            self._record(E.REPLICA_READY, slot, self.env.now)
        self._at(self.env.now + self.autoscaling.policy.interval_s, self._tick)

    def _replica_gpus(self, stage: str | None) -> int:
        return self.tp[stage]

    def _check_stage(self, stage: str | None) -> None:
        if stage not in self.tp:
            raise ValueError(f"services.{self.name}.autoscaler: a step for a disaggregated service names its "
                             f"pool (stage prefill or decode), got {stage!r}")

    def _scale_up(self, reason: str, stage: str | None = None) -> None:
        self._check_stage(stage)
        super()._scale_up(reason, stage)

    def _scale_down(self, reason: str, stage: str | None = None) -> None:
        self._check_stage(stage)
        super()._scale_down(reason, stage)

    def _unroute(self, slot: _Slot) -> None:
        if slot.stage == "prefill":
            self._active.remove(slot)
        else:
            self.system.decode_open.remove(slot.pos)

    def _added_replica(self, slot: _Slot, devices: tuple[int, ...]):
        system, stage = self.system, slot.stage
        rep = self._build(stage, slot.index, devices, system.next_landing_s)
        self._devices[stage].append(tuple(devices))
        slot.pos = system.add_prefill(rep) if stage == "prefill" else system.add_decode(rep, open_=False)
        if stage == "decode":
            self._decode_slots[slot.pos] = slot
        self._host(rep)
        return rep

    def _route_to(self, slot: _Slot) -> None:
        if slot.stage == "prefill":
            super()._route_to(slot)
        else:
            self.system.decode_open.append(slot.pos)
            self.system.decode_open.sort()

    def load(self) -> ServiceLoad:
        """The service's load with a :class:`StageLoad` per pool."""
        base = super().load()
        system, ended = self.system, len(self._ended)
        stages = []
        for stage, met in (("prefill", self._met_ttft), ("decode", self._met_tpot)):
            ready = [s for s in self._slots if s.stage == stage and s.state == READY]
            waiting = (sum(len(s.replica.waiting) for s in ready) if stage == "prefill"
                       else sum(system.decode_waiting(s.pos) for s in ready))
            stages.append(StageLoad(stage, len(ready), self.n_stage[stage], waiting,
                                    sum(s.outstanding for s in ready), met / ended if ended else math.nan))
        return dataclasses.replace(base, waiting=sum(st.waiting for st in stages),
                                   outstanding=sum(st.outstanding for st in stages), stages=tuple(stages))


def replicas_table(log: E.EventLog, pools: "dict[str, dict[int, str]] | None" = None) -> pd.DataFrame:
    """Autoscaled services' replica counts over time: one row per scaling record (``scale``,
    ``provision_start``, ``replica_ready``, ``drain_start``, ``drain_end``) with the record's
    replica's ``pool`` and the service's ready / provisioning / draining / queued replicas
    after it. ``pools``: per service, each replica's pool (:meth:`ServiceHost.replica_pools`:
    ``prefill`` or ``decode`` in a disaggregated service); a replica not named there is
    ``colocated`` (it prefills and decodes)."""
    cols = ["time_s", "service", "event", "job_id", "replica", "pool", "delta", "reason",
            "n_ready", "n_provisioning", "n_draining", "n_queued"]
    pools = pools or {}
    rows = []
    for t, kind, subject, d in log.records:
        if kind in SCALING_KINDS:
            delta, reason = (d[2], d[3]) if kind == E.SCALE else (0, "")
            pool = pools.get(d[0], {}).get(d[1], COLOCATED)
            rows.append((t, d[0], kind, subject, d[1], pool, delta, reason, *d[-4:]))
    return pd.DataFrame(rows, columns=cols).astype({"time_s": "float64", "service": "string", "event": "string",
                                                     "job_id": "int64", "replica": "int64", "pool": "string",
                                                     "delta": "int64",
                                                     "reason": "string", "n_ready": "int64",
                                                     "n_provisioning": "int64", "n_draining": "int64",
                                                     "n_queued": "int64"})


def ready_per_pool(replicas: pd.DataFrame) -> pd.DataFrame:
    """A service's ready replicas per pool after each of its rows of the ``replicas`` table
    (``time_s`` then one column per pool, in order of appearance): a ``replica_ready`` adds
    one to its replica's pool, a ``drain_start`` takes one off."""
    pools = list(dict.fromkeys(replicas["pool"].astype(str)))
    ready, rows = dict.fromkeys(pools, 0), []
    for t, event, pool in zip(replicas["time_s"], replicas["event"].astype(str), replicas["pool"].astype(str)):
        if event == E.REPLICA_READY:
            ready[pool] += 1
        elif event == E.DRAIN_START:
            ready[pool] -= 1
        rows.append((t, *ready.values()))
    return pd.DataFrame(rows, columns=["time_s", *pools])


def service_jobs(services: dict, first_id: int, tp: int, gpus: dict[str, int] | None = None) -> list[Job]:
    """One cluster job per service: ``replicas × tp`` devices (``gpus[name]`` where given: a
    disaggregated service's two pools), its priority and memory."""
    out, gpus = [], gpus or {}
    for k, (name, s) in enumerate(sorted(services.items())):
        n = gpus[name] if name in gpus else int(s.get("replicas", 1)) * tp
        out.append(Job(first_id + k, float(s.get("arrival_s", 0.0)), 0.0, gpus=n,
                       priority=int(s.get("priority", 0)), mem_bytes_per_device=int(s.get("mem_bytes_per_device", 0)),
                       tenant=f"service:{name}", name=f"service:{name}", service=name))
    return out
