"""The serving system: requests arrive, a router picks a replica, replicas run iterations.

Nothing here reads the config: :mod:`llmos_sim.run` builds the parts from it (the checked
:class:`~llmos_sim.serving.spec.ServingSpec`, model, GPU, pool factory, batching policy,
router, cost model, requests) and hands them over. :class:`ReplicaFactory` makes replicas from
those parts; :func:`serve` runs SimPy until every request finished or failed (or
``spec.max_time_s``) and returns the log with tables and a summary built from it.
:func:`simulate` (``cfg``, ``seed``) is the config-level shortcut, kept for scripts and tests:
it asks :mod:`llmos_sim.run` to build the parts.

The settings are documented on :class:`~llmos_sim.serving.spec.ServingSpec`; their defaults
are in ``configs/serving/default.yaml``. Three of them in more words:

- ``kv_mode``: ``grow`` (paged), ``reserve`` (contiguous max-length reservation,
  ``reserve_tokens`` each) or ``auto`` (reserve when the pool declares
  ``reserves_max_length``, else grow)
- ``host_kv_bytes``: a host-memory tier per replica for swapped sequences and evicted prefix
  units, its copies priced at the GPU's ``host_bw_bytes_s``
- ``async_scheduling``: vLLM's async scheduling, as far as it changes decisions: a finished
  sequence's blocks are freed after the next iteration's decision, and a request that arrives
  while an iteration runs joins the iteration after the next at the earliest (see
  :class:`Replica`)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd
import simpy
from simpy.events import URGENT

from llmos_sim import events as E
from llmos_sim.kernel import Instant, push_at, queue_of, sparse_gc
from llmos_sim.metrics.tables import Tables
from llmos_sim.policies.memory.ideal import IdealPool
from llmos_sim.policies.routing.base import ReplicaLoad, Router
from llmos_sim.serving import metrics
from llmos_sim.serving.kv import GROW, RESERVE, HostTier, KVCacheManager, make_pool
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.spec import ServingSpec
from llmos_sim.serving.specs import GpuSpec, ModelSpec

@dataclass
class ServingResult:
    """A serving run: its event log (the source of truth), tables built from it, a summary."""

    log: E.EventLog
    tables: "Tables | dict[str, pd.DataFrame]"  # (the events table lazy, see build_result)
    summary: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def kv_capacity_bytes(model: ModelSpec, gpu: GpuSpec, tp: int, gpu_memory_utilization: float,
                      activation_reserve_bytes: int) -> int:
    """KV bytes of one replica by vLLM's rule: a share of device memory less weights and activations."""
    cap = int(gpu_memory_utilization * gpu.mem_bytes * tp) - model.weight_bytes - int(activation_reserve_bytes)
    if cap <= 0:
        raise ValueError(f"{model.name} on {tp}x {gpu.name}: no memory left for the KV cache "
                         f"(weights {model.weight_bytes / 1e9:.1f} GB); raise tp or set serving.num_kv_blocks")
    return cap


def _kv_mode(mode: str, pool) -> str:
    if mode in (GROW, RESERVE):
        return mode
    if mode != "auto":
        raise ValueError(f"serving.kv_mode must be grow, reserve or auto, got {mode!r}")
    return RESERVE if pool.reserves_max_length else GROW


def replica_loads(reps: Sequence[Replica], router: Router, r) -> list[ReplicaLoad]:
    """What ``router`` sees of each replica for request ``r``: load (KV use only when the router
    reads it, ``uses_kv``), and the request's cached prefix on each replica when the router
    asks for it (``uses_prefix``)."""
    kv = _kv_used_frac if router.uses_kv else _not_read
    if router.uses_prefix and r.prefix_hashes:
        h, bt, p = r.prefix_hashes, r.prefix_block_tokens, r.prompt_tokens
        return [ReplicaLoad(x.index, x.outstanding, kv(x), len(x.waiting), x.kv.cached_prefix_tokens(h, bt, p))
                for x in reps]
    return [ReplicaLoad(x.index, x.outstanding, kv(x), len(x.waiting)) for x in reps]


def _kv_used_frac(rep: Replica) -> float:
    return rep.kv_used_frac


def _not_read(rep: Replica) -> float:
    return math.nan


class _Arrivals:
    """``next_arrival`` of a replica whose requests were routed before the run: the arrival
    time of the next request it queues (:meth:`Replica.queues`), inf when none is left."""

    __slots__ = ("times", "i")

    def __init__(self) -> None:
        self.times: list[float] = []  # arrival times of the requests it queues, in order
        self.i = 0  # how many of them have arrived

    def __call__(self) -> float:
        i = self.i
        return self.times[i] if i < len(self.times) else math.inf


class ServingSystem:
    """Replicas behind a router, fed by a request list (sorted by arrival).

    An arrival cuts only the decode spans of the replica it goes to (``own_cuts``; with one
    replica that is every arrival, and spans are planned up to the next one). Where the
    router's choice cannot depend on state (:attr:`Router.routes_ahead`, round robin), the
    system routes every request at set-up, so each replica plans its spans up to the next
    arrival it queues, as one replica does, and no span is ever cut: the same records as
    cutting them when the arrival lands (``tests/serving/test_span_cuts.py``). This holds
    only where the replicas are fixed (:attr:`fixed_replicas`): all of them up from the
    start to the end, fed only by this system's arrivals, each request queued or failed by
    its replica on arrival (:meth:`Replica.queues`: a request that can never fit in its cache
    fails there and cuts nothing). A service on the shared cluster (replicas added, drained,
    provisioning) and a disaggregated run's pools route as requests arrive."""

    #: the replicas are the same from the start of the run to its end and get requests only
    #: from :meth:`_arrive` (False in subclasses whose replica set or feed is not this one's)
    fixed_replicas: bool = True

    def __init__(self, requests: Sequence, replicas_factory, router: Router, n_replicas: int,
                 log: E.EventLog | None = None, progress: bool = False, env: simpy.Environment | None = None,
                 own_cuts: bool = True) -> None:
        self.env = env if env is not None else simpy.Environment()
        self.log = log if log is not None else E.EventLog()
        self.requests = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self.router = router
        self._i = 0
        own_cuts = own_cuts and n_replicas > 1
        if router.routes_ahead and router.uses_loads:
            raise ValueError(f"{type(router).__name__} declares routes_ahead but reads the replicas' loads "
                             f"(uses_loads): its choice may depend on their state")
        ahead = own_cuts and router.routes_ahead and self.fixed_replicas
        #: each request's replica and whether it queues there (routed at set-up), or None
        self._routes: "list[tuple[int, bool]] | None" = None
        self._arrivals = [_Arrivals() for _ in range(n_replicas)] if ahead else None
        self.replicas: list[Replica] = [
            replicas_factory(i, self.env, self.log, self._arrivals[i] if ahead else self.next_arrival_s)
            for i in range(n_replicas)]
        #: what a router that reads no load is given (``Router.uses_loads`` false): placeholders
        self._blank = [ReplicaLoad(i, 0, math.nan, 0) for i in range(n_replicas)]
        if ahead:
            self._route_ahead()
            own_cuts = False  # (the spans are planned up to each replica's own next arrival)
        for rep in self.replicas:  # nothing here reacts to a finish when it happens (see Replica)
            rep.sync_finishes = False
            rep.own_cuts = own_cuts
        self.progress = progress
        self._bar = None
        if progress and len(self.requests) > 10_000:  # like the training runs: long runs only
            from tqdm import tqdm
            self._bar = tqdm(total=len(self.requests), desc="requests", unit="req")
        # arrivals are a chain of instants on SimPy's queue (light events with a callback, see
        # llmos_sim.backend.Instant), not a process: the first now, as a process would start
        self._queue = queue_of(self.env)
        push_at(self._queue, self.env.now, Instant(self._arrive), URGENT)

    def next_arrival_s(self) -> float:
        """Arrival time of the next request not yet routed (inf when none are left)."""
        return self.requests[self._i].arrival_s if self._i < len(self.requests) else math.inf

    def _route_ahead(self) -> None:
        """Route every request now, in arrival order (the router declares ``routes_ahead``), and
        give each replica the arrival times of the requests it will queue."""
        router, blank, reps, arrivals = self.router, self._blank, self.replicas, self._arrivals
        self._routes = routes = []
        for r in self.requests:
            k = router.route(r, blank)
            queued = reps[k].queues(r)
            if queued:
                arrivals[k].times.append(r.arrival_s)
            routes.append((k, queued))

    def _arrive(self, _event=None) -> None:
        """Route the requests arriving now, then wait for the next arrival time (urgent: an
        arrival is seen by an iteration starting at the same time)."""
        env, log, reps, router, requests = self.env, self.log, self.replicas, self.router, self.requests
        routes = self._routes
        while self._i < len(requests):
            r = requests[self._i]
            delay = r.arrival_s - env.now
            if delay > 0:
                push_at(self._queue, env.now + delay, Instant(self._arrive), URGENT)
                return
            self._i += 1
            log.emit(env.now, E.REQ_ARRIVE, r.id, (r.service, r.prompt_tokens, r.output_tokens))
            if r.slo_ttft_s is not None or r.slo_tpot_s is not None or r.slo_e2e_s is not None:
                log.emit(env.now, E.REQ_SLO, r.id, tuple(math.nan if v is None else float(v)
                                                         for v in (r.slo_ttft_s, r.slo_tpot_s, r.slo_e2e_s)))
            if routes is None:
                reps[router.route(r, replica_loads(reps, router, r) if router.uses_loads else self._blank)].enqueue(r)
            else:  # routed at set-up: the replica's next arrival is the one after this
                k, queued = routes[self._i - 1]
                if queued:
                    self._arrivals[k].i += 1
                reps[k].enqueue(r)
            if self._bar is not None:
                self._bar.update(1)
        if self._bar is not None:
            self._bar.close()

    def run(self, until: float | None = None) -> None:
        self.env.run(until=until)
        for rep in self.replicas:
            rep.settle()
        reason = "max_time" if until is not None and self.env.now >= until else "drained"
        self.log.emit(self.env.now, E.END, "serving", (reason,))
        for rep in self.replicas:  # (after END: the run's records keep their numbers)
            rep.flush_itl(self.env.now)


def serve(requests: Sequence, make_replica, router: Router, spec: ServingSpec, progress: bool = False,
          env: simpy.Environment | None = None) -> ServingResult:
    """Run ``requests`` on ``spec.replicas`` replicas from ``make_replica`` behind ``router``
    until all finished or failed (or ``spec.max_time_s``); the result is built from the log."""
    # the requests, the run and the tables allocate hundreds of thousands of long-lived
    # objects: the cyclic collector runs sparsely meanwhile, as in the engine
    with sparse_gc():
        system = ServingSystem(requests, make_replica, router, spec.replicas, progress=progress, env=env,
                               own_cuts=spec.span_cut == "own")
        system.run(spec.max_time_s)
        res = build_result(system.log, spec.slo_ttft_s, spec.slo_tpot_s, spec.slo_e2e_s)
    res.extra.update(kv_blocks_per_replica=system.replicas[0].kv.total_blocks,
                     kv_capacity_bytes=getattr(make_replica, "capacity_bytes", None), replicas=system.replicas)
    return res


def simulate(cfg, seed: int, progress: bool = False, backend=None) -> ServingResult:
    """Run the serving simulation described by the composed config ``cfg`` with ``seed``
    (requests from the run's ``serving`` seed stream, as in ``mode: mixed``).

    ``backend`` (a :class:`~llmos_sim.backend.Backend`, optional) supplies the environment and,
    for real execution, the replicas (:meth:`~llmos_sim.backend.Backend.serving_replica`); by
    default time is simulated and iterations take the cost model's time. The parts are built
    by :func:`llmos_sim.run.build_serving`."""
    from llmos_sim.run import build_serving, rngs
    from llmos_sim.serving import disagg

    if disagg.is_disaggregated(cfg):  # prefill and decode on separate pools (``topology``)
        return disagg.simulate(cfg, seed, progress, backend)
    with sparse_gc():  # loading a trace allocates many long-lived objects too
        parts = build_serving(cfg, rngs(int(seed)), backend)
    return serve(parts.requests, parts.make_replica, parts.router, parts.spec, progress,
                 env=backend.environment() if backend is not None else None)


def replica_factory(cfg, backend=None, devices_from_cluster: bool = False) -> tuple["ReplicaFactory", dict[str, Any]]:
    """``(make_replica, {"tp", "kv_capacity_bytes"})`` for the composed config ``cfg``: the
    factory :func:`llmos_sim.run.build_replica_factory` builds (kept for scripts and tests)."""
    from llmos_sim.run import build_replica_factory

    make = build_replica_factory(cfg, backend, devices_from_cluster)
    return make, {"tp": make.spec.tp, "kv_capacity_bytes": make.capacity_bytes}


class ReplicaFactory:
    """``make_replica(index, env, log, next_arrival, device=None) -> Replica`` from built parts.

    ``spec`` (the serving settings), ``model``; ``gpu``: the device every replica runs on, or
    None when each replica is given the device a cluster granted it (``mode: mixed``: its
    cost model and its KV cache then from that device's figures); ``batching()``: a fresh
    batching policy per replica; ``pool(capacity_bytes=..., ...)``: the KV cache's pool factory
    (sized by :func:`~llmos_sim.serving.kv.make_pool`); ``cost(model=, gpu=, tp=)``: the cost
    model factory; ``replica_cls``: :class:`Replica` or a backend's real replica.
    ``capacity_bytes``: KV bytes per replica (None when the devices come from the cluster)."""

    def __init__(self, spec: ServingSpec, model: ModelSpec, gpu: GpuSpec | None, batching: Callable[[], Any],
                 pool: Callable[..., Any] | None, cost: Callable[..., Any], replica_cls: type = Replica) -> None:
        self.spec, self.model, self.gpu = spec, model, gpu
        self.batching, self.cost, self.replica_cls = batching, cost, replica_cls
        self.pool = pool if pool is not None else functools.partial(IdealPool)
        self.block_bytes = spec.block_tokens * model.kv_bytes_per_token
        self._by_device: dict = {}
        self.capacity_bytes = None
        if gpu is not None:
            self._check_host_link(gpu)
            self.capacity_bytes = self.capacity_on(gpu)

    @property
    def tp(self) -> int:
        return self.spec.tp

    def capacity_on(self, g: GpuSpec) -> int:
        """KV bytes of one replica on ``g`` (pinned by ``num_kv_blocks`` when set)."""
        s = self.spec
        if s.num_kv_blocks is not None:
            return s.num_kv_blocks * self.block_bytes
        return kv_capacity_bytes(self.model, g, s.tp, s.gpu_memory_utilization, s.activation_reserve_bytes)

    def _check_host_link(self, g: GpuSpec) -> None:
        if self.spec.host_kv_bytes is not None and not g.host_bw_bytes_s > 0:
            raise ValueError(f"serving.host_kv_bytes needs the GPU's host link bandwidth (gpu.host_bw_bytes_s > 0) "
                             f"to price its copies; {g.name} has {g.host_bw_bytes_s}")

    def __call__(self, i, env, log, next_arrival, device=None) -> Replica:
        # a replica on a granted cluster device runs on that device (its memory sizes the KV cache)
        if device is None:
            g, cap = self.gpu, self.capacity_bytes
        else:
            if device not in self._by_device:
                g = GpuSpec.of_device(device)
                self._check_host_link(g)
                self._by_device[device] = (g, self.capacity_on(g))
            g, cap = self._by_device[device]
        s, model = self.spec, self.model
        pool = make_pool(self.pool, cap, self.block_bytes, s.reserve_tokens * model.kv_bytes_per_token or None)
        kv = KVCacheManager(pool, model.kv_bytes_per_token, s.block_tokens, _kv_mode(s.kv_mode, pool),
                            s.reserve_tokens, s.prefix_caching,
                            HostTier(int(float(s.host_kv_bytes))) if s.host_kv_bytes is not None else None)
        return self.replica_cls(i, env, log, self.batching(), kv, self.cost(model=model, gpu=g, tp=s.tp), next_arrival,
                                s.max_time, s.fast_forward, s.per_iteration_records, s.async_scheduling)


def build_result(log: E.EventLog, slo_ttft_s: float = math.inf, slo_tpot_s: float = math.inf,
                 slo_e2e_s: float = math.inf) -> ServingResult:
    """Tables (``requests``, ``batches``, ``kv``, ``events``) and summary from a log (pure).
    The SLOs are the run's; a request's own (``Request.slo_*``) replace them for it."""
    by_kind = E.ByKind(log.records)  # the log split by kind once, for all the tables
    frames = metrics.Frames(log, by_kind)
    req = metrics.request_table(frames)
    metrics.add_slo_columns(req, frames, slo_ttft_s, slo_tpot_s, slo_e2e_s)
    bat = metrics.batch_table(frames)
    kv = metrics.kv_table(frames)
    out = metrics.summary(req, bat, kv, slo_ttft_s, slo_tpot_s)
    out.update(metrics.vllm_summary(req, metrics.itl_samples(frames, bat)))
    # the events table (the log as text, one row per record) is made when first read, and
    # written block by block of the log when written unread, as a training run's is
    tables = Tables({"requests": req, "batches": bat, "kv": kv})
    tables.add_lazy("events", log.table, log.write_table)
    return ServingResult(log, tables, out)
