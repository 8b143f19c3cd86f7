"""Prefill/decode disaggregation (Splitwise, DistServe): two pools of replicas and a KV link.

A co-located service runs each request's prefill and decode on one replica, so long prefills
stall the decodes batched with them (TPOT) and decodes take the batch slots prefills want
(TTFT). A disaggregated service splits them:

1. an arriving request is routed (the prefill router) to a **prefill replica**, which runs it
   up to its first token — TTFT ends there, as in DistServe and Splitwise;
2. its prompt's KV (``prompt_tokens × model.kv_bytes_per_token`` bytes) is sent over a **link**
   to a **decode replica** picked then by the decode router; the transfer takes
   ``latency_s + bytes / bandwidth`` (see :class:`KVLink`) and is logged as two ``kv_transfer``
   records (``phase`` "start" at the first token, "end" on arrival; see
   :data:`llmos_sim.events.KV_TRANSFER`);
3. on arrival the request waits on the decode replica as a sequence whose computed tokens come
   back from elsewhere — the replica's swap-in path (``WaitingSeq.swapped``), with the copy
   already paid for (``WaitingSeq.landed``): admission allocates blocks for its prompt and
   first token in the decode replica's own pool and decodes at once, no prompt recomputed.

A request of one output token finishes on its prefill replica (nothing to decode). The decode
stage's TPOT and inter-token latencies include the transfer and the wait for admission (the
gap between the first token and the second is what a user sees); the request table, the
summary and goodput are the co-located run's, from the same records.

Pools (``topology.prefill`` and ``topology.decode``): ``replicas``, ``gpu`` (a catalogue name,
e.g. ``A100``, or a gpu config; null: the run's ``gpu`` group), ``tp`` (null: ``serving.tp``),
``router`` and ``batching`` (configs; null: the run's groups). Each pool's replicas are built
exactly as a co-located run's (:func:`llmos_sim.run.build_replica_factory` with the pool's
GPU, TP and batching: KV capacity by vLLM's memory rule, the cost model); the prefill
replicas are numbered ``0 … P−1`` and the decode replicas ``P … P+D−1`` in every record.
``serving.replicas`` is not used.

Link (``topology.link``): ``bw_bytes_s`` per GPU and ``latency_s``. A replica of TP ``t`` holds
its KV sharded over ``t`` GPUs; each GPU pair sends its shard over its own link, so a transfer
between a prefill replica of TP ``tp`` and a decode replica of TP ``td`` moves at
``min(tp, td) × bw_bytes_s``. Defaults: 50 GB/s = one 400 Gb/s NDR InfiniBand NIC per GPU (a
DGX H100 has one ConnectX-7 per GPU; Splitwise assumes InfiniBand between its prefill and
token machines), and 100 µs per transfer — RDMA's own latency is a few µs; the rest is an
allowance for the per-request handshake that a KV transfer engine (Splitwise's, vLLM's
``KVConnector``s) performs, not a measured figure. Set ``bw_bytes_s`` to a GPU's NVLink
bandwidth for prefill and decode in one node (DistServe's placement).

Simplifications, stated: transfers do not contend (each is priced alone, however many share a
NIC); a prefill replica frees the request's blocks at its first token, and the KV waits for
admission outside the decode replica's pool (Splitwise overlaps the copy with the prefill,
layer by layer; DistServe's decode instances pull KV when they have room, leaving it on the
prefill side until then — held here by neither pool).

Fast-forward on decode replicas: a span of decode iterations must not run past an arrival. A
decode replica's arrivals are transfers; those under way are known (their end times), and any
later hand-off comes at the end of a prefill iteration, no earlier than the event each prefill
replica waits for (``Replica.wake_s``; an idle one waits for the next request's arrival), so
no transfer can end before that plus the link's latency (:meth:`DisaggSystem.next_landing_s`).
"""
from __future__ import annotations

import copy
import functools
import heapq
import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
from omegaconf import DictConfig, open_dict
from simpy.events import URGENT

from llmos_sim import events as E
from llmos_sim.kernel import Instant, push_at, sparse_gc
from llmos_sim.policies.routing.base import Router
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.system import ServingResult, ServingSystem, build_result, replica_loads
from llmos_sim.validate import ConfigError

#: the link's defaults (see the module docstring for where they come from)
LINK_BW_BYTES_S = 50e9
LINK_LATENCY_S = 100e-6
STAGES = ("prefill", "decode")


@dataclass(frozen=True, slots=True)
class KVLink:
    """The link a prompt's KV crosses from a prefill replica to a decode replica."""

    bw_bytes_s: float = LINK_BW_BYTES_S  #: bytes per second between the two replicas
    latency_s: float = LINK_LATENCY_S  #: fixed time per transfer

    def __post_init__(self) -> None:
        if not self.bw_bytes_s > 0:
            raise ConfigError("topology.link.bw_bytes_s", f"must be > 0, got {self.bw_bytes_s!r}")
        if not (self.latency_s >= 0 and math.isfinite(self.latency_s)):
            raise ConfigError("topology.link.latency_s", f"must be finite and >= 0, got {self.latency_s!r}")

    def seconds(self, nbytes: int) -> float:
        """Transfer time of ``nbytes``: ``latency_s + nbytes / bw_bytes_s``."""
        return self.latency_s + nbytes / self.bw_bytes_s


class DisaggSystem(ServingSystem):
    """A prefill pool behind the prefill router (the arrivals are :class:`ServingSystem`'s,
    routed over :attr:`prefill`), a decode pool behind the decode router, and the KV link."""

    def __init__(self, requests: Sequence, make_prefill, make_decode, prefill_router: Router, decode_router: Router,
                 n_prefill: int, n_decode: int, link: KVLink, kv_bytes_per_token: int,
                 log: E.EventLog | None = None, progress: bool = False, env=None) -> None:
        super().__init__(requests, make_prefill, prefill_router, n_prefill, log, progress, env)
        self.prefill: list[Replica] = self.replicas  # (the arrivals are routed over self.replicas)
        self.decode: list[Replica] = [make_decode(n_prefill + j, self.env, self.log, self.next_landing_s)
                                      for j in range(n_decode)]
        for rep in self.prefill:
            rep.handoff = self._handoff
        for rep in self.decode:
            rep.sync_finishes = False
        self.decode_router = decode_router
        self.link = link
        self.kv_bytes_per_token = int(kv_bytes_per_token)
        self._by_id = {r.id: r for r in self.requests}
        self._in_flight = [0] * n_decode  # transfers under way to each decode replica
        self._landings: list[float] = []  # their end times (a heap)

    @property
    def all_replicas(self) -> list[Replica]:
        return self.prefill + self.decode

    def next_landing_s(self) -> float:
        """No transfer ends before this time (unless one is started at a prefill replica's next
        event, see the module docstring): a decode replica's "next arrival"."""
        t = min(self.next_arrival_s(), min(rep.wake_s for rep in self.prefill)) + self.link.latency_s
        return min(t, self._landings[0]) if self._landings else t

    def _handoff(self, rep: Replica, rids: list, now: float) -> None:
        """Prefill replica ``rep`` produced the first token of ``rids`` at ``now``: finish those
        of one output token, send the others' KV to the decode replica the decode router picks."""
        log, router = self.log, self.decode_router
        for rid in rids:
            r = self._by_id[rid]
            if r.output_tokens <= 1:
                log.emit(now, E.REQ_FINISH, rid, (rep.index,))
                continue
            loads = replica_loads(self.decode, router, r)
            for j, load in enumerate(loads):  # positions in the decode pool, transfers under way counted
                load.index = j
                load.outstanding += self._in_flight[j]
            j = router.route(r, loads)
            dst = self.decode[j]
            nbytes = r.prompt_tokens * self.kv_bytes_per_token
            log.emit(now, E.KV_TRANSFER, rid, ("start", rep.index, dst.index, nbytes))
            end = now + self.link.seconds(nbytes)
            self._in_flight[j] += 1
            heapq.heappush(self._landings, end)
            # urgent, like an arrival: a decode iteration starting at ``end`` sees it
            push_at(self._queue, end, Instant(functools.partial(self._land, r, rep.index, j, now, nbytes)), URGENT)

    def _land(self, r, src: int, j: int, first_token_s: float, nbytes: int, _event=None) -> None:
        """Request ``r``'s KV arrived at decode replica ``j``: it joins that replica's queue."""
        heapq.heappop(self._landings)  # (transfers end in time order: this one is the earliest)
        self._in_flight[j] -= 1
        dst = self.decode[j]
        self.log.emit(self.env.now, E.KV_TRANSFER, r.id, ("end", src, dst.index, nbytes))
        dst.enqueue(r, landed_s=first_token_s)

    def run(self, until: float | None = None) -> None:
        super().run(until)
        for rep in self.decode:
            rep.flush_itl(self.env.now)


def is_disaggregated(cfg) -> bool:
    """Whether the composed config asks for a disaggregated service (``topology.kind``)."""
    topo = cfg.get("topology", None)
    if topo is None:
        return False
    kind = topo.get("kind", "colocated")
    if kind not in ("colocated", "disaggregated"):
        raise ConfigError("topology.kind", f"must be colocated or disaggregated, got {kind!r}")
    return kind == "disaggregated"


def _positive_int(v, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 1:
        raise ConfigError(key, f"must be an integer >= 1, got {v!r}")
    return int(v)


def pool_config(cfg, stage: str) -> DictConfig:
    """The composed config with the ``stage`` pool's GPU, TP and batching in place of the
    run's (what :func:`llmos_sim.run.build_replica_factory` reads)."""
    pool = cfg.topology.get(stage, None) or {}
    out = copy.deepcopy(cfg)
    with open_dict(out):
        gpu = pool.get("gpu", None)
        if gpu is not None:
            out.gpu = ({"_target_": "llmos_sim.serving.specs.gpu_spec", "name": str(gpu)} if isinstance(gpu, str)
                       else gpu)
        tp = pool.get("tp", None)
        if tp is not None:
            if out.get("serving", None) is None:
                out.serving = {}
            out.serving.tp = _positive_int(tp, f"topology.{stage}.tp")
        if pool.get("batching", None) is not None:
            out.batching = pool.batching
    return out


def link_of(topo) -> KVLink:
    link = topo.get("link", None) or {}
    bw, lat = link.get("bw_bytes_s", None), link.get("latency_s", None)
    for key, v in (("bw_bytes_s", bw), ("latency_s", lat)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"topology.link.{key}", f"must be a number, got {v!r}")
    return KVLink(LINK_BW_BYTES_S if bw is None else float(bw), LINK_LATENCY_S if lat is None else float(lat))


def transfer_table(log: E.EventLog) -> pd.DataFrame:
    """One row per KV transfer: request, from/to replica, bytes, start and end times and the
    transfer's duration (from the ``kv_transfer`` records)."""
    start, end = {}, {}
    for t, kind, rid, data in log.records:
        if kind == E.KV_TRANSFER:
            (start if data[0] == "start" else end)[rid] = (t, data)
    rows = [(rid, d[1], d[2], d[3], t0, end[rid][0] if rid in end else math.nan) for rid, (t0, d) in start.items()]
    df = pd.DataFrame(rows, columns=["request", "from_replica", "to_replica", "nbytes", "start_s", "end_s"])
    df["transfer_s"] = df["end_s"] - df["start_s"]
    return df


def simulate(cfg, seed: int, progress: bool = False, backend=None) -> ServingResult:
    """Run the disaggregated service described by ``cfg`` (``topology.kind: disaggregated``)
    with ``seed`` (requests from the run's ``serving`` seed stream, as a co-located run's);
    the same result as :func:`llmos_sim.serving.system.simulate`, plus a ``transfers`` table
    and the pools' facts in the summary."""
    from hydra.utils import instantiate

    from llmos_sim.run import build_replica_factory, rngs

    topo = cfg.topology
    if backend is not None and backend.serving_replica(instantiate(cfg.model)) is not None:
        raise ValueError("topology=disaggregated runs on simulated replicas (backend=simpy): a real backend's "
                         "replicas cannot take a prompt's KV from another replica")
    n = {st: _positive_int((topo.get(st, None) or {}).get("replicas", 1), f"topology.{st}.replicas") for st in STAGES}
    link = link_of(topo)
    factories = {st: build_replica_factory(pool_config(cfg, st), backend) for st in STAGES}
    link = KVLink(link.bw_bytes_s * min(f.tp for f in factories.values()), link.latency_s)  # one link per GPU pair
    routers = {}
    for st in STAGES:
        rc = (topo.get(st, None) or {}).get("router", None)
        routers[st] = instantiate(rc if rc is not None else cfg.router)  # one instance per stage
    spec = factories["prefill"].spec  # (the settings both pools share: stop time, SLOs)
    env = backend.environment() if backend is not None else None
    with sparse_gc():
        requests = instantiate(cfg.workload).requests(rngs(int(seed))["serving"])
        system = DisaggSystem(requests, factories["prefill"], factories["decode"], routers["prefill"],
                              routers["decode"], n["prefill"], n["decode"], link,
                              factories["prefill"].model.kv_bytes_per_token, progress=progress, env=env)
        system.run(spec.max_time_s)
        res = build_result(system.log, spec.slo_ttft_s, spec.slo_tpot_s, spec.slo_e2e_s)
    tr = transfer_table(system.log)
    res.tables["transfers"] = tr
    res.summary.update({
        "prefill_replicas": float(n["prefill"]), "decode_replicas": float(n["decode"]),
        "gpus": float(sum(n[st] * factories[st].tp for st in STAGES)),
        "kv_transfers": float(len(tr)),
        "kv_transfer_s_mean": float(tr["transfer_s"].mean()) if len(tr) else math.nan,
        "kv_transfer_bytes": float(tr["nbytes"].sum()) if len(tr) else 0.0,
    })
    res.extra.update(kv_blocks_per_replica=system.prefill[0].kv.total_blocks,
                     kv_blocks_decode=system.decode[0].kv.total_blocks,
                     kv_capacity_bytes=factories["prefill"].capacity_bytes, replicas=system.all_replicas)
    return res
