"""The serving system: requests arrive, a router picks a replica, replicas run iterations.

:func:`simulate` is the entry point the Hydra run builder calls for ``mode: serving``. It
instantiates the workload, model, GPU, memory pool, batching policy, router and cost model
from the composed config, runs SimPy until every request finished or failed (or
``serving.max_time_s``), and returns the log with tables and a summary built from it.

Config (``cfg.serving``; defaults in ``configs/serving/default.yaml``):

- ``replicas``, ``tp``: replicas and tensor-parallel degree per replica
- ``num_kv_blocks``: KV blocks per replica; when null, the KV bytes are
  ``gpu_memory_utilization · mem_bytes · tp − weights − activation_reserve_bytes`` (vLLM's rule)
- ``block_tokens``: tokens per KV block; ``kv_mode``: ``grow`` (paged), ``reserve``
  (contiguous max-length reservation, ``reserve_tokens`` each, 0 = own prompt+output) or
  ``auto`` (reserve when the pool says it is contiguous, else grow)
- ``cost``: a partial cost model, called with ``model``, ``gpu``, ``tp`` (a top-level ``cost``
  config, from the ``cost`` group, e.g. ``cost=profiled``, takes its place when set)
- ``slo_ttft_s``, ``slo_tpot_s``, ``slo_e2e_s``: SLOs for goodput (a request's own replace
  them for it); ``max_time_s``: stop time (null = none)
- ``fast_forward``, ``per_iteration_records``: see :mod:`llmos_sim.serving.replica`
- ``prefix_caching``: vLLM's automatic prefix caching: requests with prefix hashes share
  cached hash blocks (reference counts, LRU eviction), and a recompute-preempted sequence
  reuses its blocks still cached (see :mod:`llmos_sim.serving.kv`)
- ``host_kv_bytes``: a host-memory tier of this many bytes per replica for swapped sequences
  and evicted prefix units, its copies priced at the GPU's ``host_bw_bytes_s`` (null: unlimited
  swap space, evicted prefix units dropped; see :class:`~llmos_sim.serving.kv.HostTier`)
- ``async_scheduling``: vLLM's async scheduling, as far as it changes decisions: a finished
  sequence's blocks are freed after the next iteration's decision, and a request that arrives
  while an iteration runs joins the iteration after the next at the earliest (see
  :class:`Replica`)
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
import simpy
from simpy.events import URGENT

from llmos_sim import events as E
from llmos_sim.kernel import Instant, push_at, queue_of, sparse_gc
from llmos_sim.policies.memory.ideal import IdealPool
from llmos_sim.policies.routing.base import ReplicaLoad, Router
from llmos_sim.serving import metrics
from llmos_sim.serving.kv import GROW, RESERVE, HostTier, KVCacheManager, make_pool
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.specs import GpuSpec, ModelSpec

DEFAULTS: dict[str, Any] = {
    "replicas": 1, "tp": 1, "gpu_memory_utilization": 0.9, "activation_reserve_bytes": 2 * 10**9,
    "num_kv_blocks": None, "block_tokens": 16, "kv_mode": "auto", "reserve_tokens": 0,
    "slo_ttft_s": math.inf, "slo_tpot_s": math.inf, "slo_e2e_s": math.inf, "max_time_s": None, "fast_forward": True,
    "per_iteration_records": False, "cost": None, "prefix_caching": False, "async_scheduling": False,
    "host_kv_bytes": None,
}


@dataclass
class ServingResult:
    """A serving run: its event log (the source of truth), tables built from it, a summary."""

    log: E.EventLog
    tables: dict[str, pd.DataFrame]
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
    """What ``router`` sees of each replica for request ``r``: load, and the request's cached
    prefix on each replica when the router asks for it (``uses_prefix``)."""
    if router.uses_prefix and r.prefix_hashes:
        h, bt, p = r.prefix_hashes, r.prefix_block_tokens, r.prompt_tokens
        return [ReplicaLoad(x.index, x.outstanding, x.kv_used_frac, len(x.waiting), x.kv.cached_prefix_tokens(h, bt, p))
                for x in reps]
    return [ReplicaLoad(x.index, x.outstanding, x.kv_used_frac, len(x.waiting)) for x in reps]


class ServingSystem:
    """Replicas behind a router, fed by a request list (sorted by arrival)."""

    def __init__(self, requests: Sequence, replicas_factory, router: Router, n_replicas: int,
                 log: E.EventLog | None = None, progress: bool = False, env: simpy.Environment | None = None) -> None:
        self.env = env if env is not None else simpy.Environment()
        self.log = log if log is not None else E.EventLog()
        self.requests = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        self.router = router
        self._i = 0
        self.replicas: list[Replica] = [replicas_factory(i, self.env, self.log, self.next_arrival_s)
                                        for i in range(n_replicas)]
        for rep in self.replicas:  # nothing here reacts to a finish when it happens (see Replica)
            rep.sync_finishes = False
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

    def _arrive(self, _event=None) -> None:
        """Route the requests arriving now, then wait for the next arrival time (urgent: an
        arrival is seen by an iteration starting at the same time)."""
        env, log, reps, router, requests = self.env, self.log, self.replicas, self.router, self.requests
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
            reps[router.route(r, replica_loads(reps, router, r))].enqueue(r)
            if self._bar is not None:
                self._bar.update(1)
        if self._bar is not None:
            self._bar.close()

    def run(self, until: float | None = None) -> None:
        self.env.run(until=until)
        reason = "max_time" if until is not None and self.env.now >= until else "drained"
        self.log.emit(self.env.now, E.END, "serving", (reason,))
        for rep in self.replicas:  # (after END: the run's records keep their numbers)
            rep.flush_itl(self.env.now)


def _cfg_get(s, key):
    if s is not None and key in s and s[key] is not None:
        return s[key]
    return DEFAULTS[key]


def simulate(cfg, seed: int, progress: bool = False, backend=None) -> ServingResult:
    """Run the serving simulation described by the composed config ``cfg`` with ``seed``.

    ``backend`` (a :class:`~llmos_sim.backend.Backend`, optional) supplies the environment and,
    for real execution, the replicas (:meth:`~llmos_sim.backend.Backend.serving_replica`); by
    default time is simulated and iterations take the cost model's time."""
    from hydra.utils import instantiate

    from llmos_sim.serving import disagg
    if disagg.is_disaggregated(cfg):  # prefill and decode on separate pools (``topology``)
        return disagg.simulate(cfg, seed, progress, backend)
    rng = np.random.default_rng(seed)
    s = cfg.get("serving", None)
    # the requests, the run and the tables allocate hundreds of thousands of long-lived
    # objects: the cyclic collector runs sparsely meanwhile, as in the engine (see
    # engine.sparse_gc); else loading the trace alone may rescan every object a caller holds
    with sparse_gc():
        workload = instantiate(cfg.workload)
        requests = workload.requests(rng)
        make_replica, info = replica_factory(cfg, backend)
        max_time = _cfg_get(s, "max_time_s")
        system = ServingSystem(requests, make_replica, instantiate(cfg.router), int(_cfg_get(s, "replicas")),
                               progress=progress, env=backend.environment() if backend is not None else None)
        system.run(None if max_time is None else float(max_time))
        res = build_result(system.log, float(_cfg_get(s, "slo_ttft_s")), float(_cfg_get(s, "slo_tpot_s")),
                           float(_cfg_get(s, "slo_e2e_s")))
    res.extra.update(kv_blocks_per_replica=system.replicas[0].kv.total_blocks, kv_capacity_bytes=info["kv_capacity_bytes"],
                     replicas=system.replicas)
    return res


def replica_factory(cfg, backend=None, devices_from_cluster: bool = False) -> tuple[Any, dict[str, Any]]:
    """``make_replica(index, env, log, next_arrival) -> Replica`` from the composed config
    (``model``, ``gpu``, ``batching``, ``memory`` — or ``serving.kv_memory`` if set — and
    ``serving``), and facts about it (``tp``, ``kv_capacity_bytes``). Used by ``mode: serving``
    and by services on the shared cluster (``mode: mixed``). A ``backend`` whose
    :meth:`~llmos_sim.backend.Backend.serving_replica` gives a factory builds the replicas
    with it (real execution). With ``devices_from_cluster`` (``mode: mixed``) every replica is
    given the device the cluster granted it (``make_replica(..., device=DeviceSpec)``) and runs
    on that part — its cost model and its KV cache from that device's figures, not the ``gpu``
    group's; ``kv_capacity_bytes`` is then not known up front (None)."""
    from hydra.utils import instantiate

    s = cfg.get("serving", None)
    model: ModelSpec = instantiate(cfg.model)
    gpu: GpuSpec = instantiate(cfg.gpu)
    tp = int(_cfg_get(s, "tp"))
    block_tokens = int(_cfg_get(s, "block_tokens"))
    block_bytes = block_tokens * model.kv_bytes_per_token
    nblocks = _cfg_get(s, "num_kv_blocks")

    def capacity_on(g: GpuSpec) -> int:
        if nblocks is not None:
            return int(nblocks) * block_bytes
        return kv_capacity_bytes(model, g, tp, float(_cfg_get(s, "gpu_memory_utilization")),
                                 int(_cfg_get(s, "activation_reserve_bytes")))

    capacity = capacity_on(gpu) if devices_from_cluster is False else None
    kv_memory = s.get("kv_memory", None) if s is not None else None
    if kv_memory is None:
        kv_memory = cfg.get("memory", None)
    pool_factory = instantiate(kv_memory) if kv_memory is not None else functools.partial(IdealPool)
    cost_cfg = cfg.get("cost", None) or _cfg_get(s, "cost")  # the ``cost`` group, when chosen, wins
    cost_factory = instantiate(cost_cfg) if cost_cfg is not None else None
    if cost_factory is None:
        from llmos_sim.serving.cost import RooflineCost
        cost_factory = functools.partial(RooflineCost)
    max_time = _cfg_get(s, "max_time_s")
    kv_mode, reserve = str(_cfg_get(s, "kv_mode")), int(_cfg_get(s, "reserve_tokens"))
    replica_cls = (backend.serving_replica(model) if backend is not None else None) or Replica
    host_bytes = _cfg_get(s, "host_kv_bytes")
    if host_bytes is not None and not float(host_bytes) >= 0:
        raise ValueError(f"serving.host_kv_bytes must be >= 0 or null, got {host_bytes!r}")

    def check_host_link(g: GpuSpec) -> None:
        if host_bytes is not None and not g.host_bw_bytes_s > 0:
            raise ValueError(f"serving.host_kv_bytes needs the GPU's host link bandwidth (gpu.host_bw_bytes_s > 0) "
                             f"to price its copies; {g.name} has {g.host_bw_bytes_s}")

    if not devices_from_cluster:
        check_host_link(gpu)

    by_device: dict = {}

    def make_replica(i, env, log, next_arrival, device=None):
        # a replica on a granted cluster device runs on that device (its memory sizes the KV cache)
        if device is None:
            g, cap = gpu, capacity
        else:
            if device not in by_device:
                check_host_link(GpuSpec.of_device(device))
                by_device[device] = (GpuSpec.of_device(device), capacity_on(GpuSpec.of_device(device)))
            g, cap = by_device[device]
        pool = make_pool(pool_factory, cap, block_bytes, reserve * model.kv_bytes_per_token or None)
        kv = KVCacheManager(pool, model.kv_bytes_per_token, block_tokens, _kv_mode(kv_mode, pool), reserve,
                            bool(_cfg_get(s, "prefix_caching")),
                            HostTier(int(float(host_bytes))) if host_bytes is not None else None)
        return replica_cls(i, env, log, instantiate(cfg.batching), kv, cost_factory(model=model, gpu=g, tp=tp),
                       next_arrival, math.inf if max_time is None else float(max_time),
                       bool(_cfg_get(s, "fast_forward")), bool(_cfg_get(s, "per_iteration_records")),
                       bool(_cfg_get(s, "async_scheduling")))

    return make_replica, {"tp": tp, "kv_capacity_bytes": capacity}


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
    return ServingResult(log, {"requests": req, "batches": bat, "kv": kv, "events": log.table(by_kind)}, out)
