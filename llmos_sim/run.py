"""Build a run from a composed config, run it, derive its tables, write its results.

This is the public API behind ``python -m llmos_sim`` (which only adds Hydra's command line):

>>> from llmos_sim.run import compose, run_config
>>> result = run_config(compose(["experiment=quickstart"]))   # doctest: +SKIP
>>> result.summary["jct_s_avg"]                               # doctest: +SKIP

This module is the only place a run's objects are built from its config, for every mode:
:func:`build_engine` (training and mixed), :func:`build_serving` and
:func:`build_replica_factory` (serving, and the services of a mixed run). The simulation
modules take the built objects and never read the config.

Randomness: one ``numpy.random.SeedSequence(cfg.seed)`` is split into independent named
children (:data:`RNG_STREAMS`), one per component: same config and seed, same tables. Request
streams always draw from the ``serving`` child, in ``mode: serving`` as in ``mode: mixed``
(where the services draw from it one after another, by name), so the same request workload
and seed give the same requests in both modes.
"""
from __future__ import annotations

import copy
import functools
import itertools
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from llmos_sim.engine import Engine
from llmos_sim.events import EventLog, release_freed, write_frame
from llmos_sim.metrics import memory_table, training_summary
from llmos_sim.metrics.tables import Tables, jobs_and_timeline, write_memory_table
from llmos_sim.outputs import (LOCK, MARKER, PARTIAL_PREFIX, clean_partials, config_sha256, output_lock, provenance,
                               read_marker, watch_inputs)
from llmos_sim.types import Cluster
from llmos_sim.validate import ConfigError, InputError, chain, check_config, named_error

GANTT_MAX_JOBS = 500  #: a per-run Gantt chart is drawn for runs up to this many jobs

#: the seed children, by component (appending a name never changes the others' streams)
RNG_STREAMS = ("workload", "scheduler", "placement", "backend", "memory", "serving")


@dataclass
class RunResult:
    """Everything a run produced: the log (the source of truth) and what is derived from it."""

    cfg: DictConfig
    log: EventLog
    tables: "dict[str, pd.DataFrame] | Tables"
    summary: dict[str, Any]
    cluster: Cluster | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    #: the data files the run read (trace CSVs, node lists, snapshots), recorded with their hashes
    inputs: list[str] = field(default_factory=list)


def rngs(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators per component, derived from the run's seed."""
    children = np.random.SeedSequence(int(seed)).spawn(len(RNG_STREAMS))
    return {name: np.random.default_rng(c) for name, c in zip(RNG_STREAMS, children)}


def _give_rng(obj: Any, rng: np.random.Generator) -> None:
    if obj is not None and hasattr(obj, "set_rng"):
        obj.set_rng(rng)


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose the packaged configs with command-line style ``overrides`` (no Hydra run dir)."""
    from hydra import compose as hcompose, initialize_config_module

    with initialize_config_module(config_module="llmos_sim.configs", version_base="1.3"):
        return hcompose(config_name=config_name, overrides=list(overrides or []))


def _key(cfg: DictConfig, path: str) -> Any:
    node = OmegaConf.select(cfg, path)
    if node is None:
        raise KeyError(f"config key {path!r} is missing")
    return node


def build_engine(cfg: DictConfig, streams: dict[str, np.random.Generator], progress: Callable | None = None):
    """Instantiate cluster, scheduler, pool factory and backend from ``cfg``; return the engine."""
    cluster = instantiate(_key(cfg, "cluster"))
    scheduler = instantiate(_key(cfg, "scheduler"))
    _give_rng(scheduler, streams["scheduler"])
    _give_rng(getattr(scheduler, "placement", None), streams["placement"])
    pool_factory = PoolCopies(instantiate(cfg.memory)) if OmegaConf.select(cfg, "memory") is not None else None
    backend = instantiate(_key(cfg, "backend"))
    _give_rng(backend, streams["backend"])
    eng = cfg.get("engine", {}) or {}
    return Engine(
        cluster, scheduler, backend, pool_factory,
        round_s=eng.get("round_s"),
        on_memory_full=eng.get("on_memory_full", "wait"),
        preempt_overhead_s=eng.get("preempt_overhead_s", 0.0),
        resize_overhead_s=eng.get("resize_overhead_s", 0.0),
        log_memory=eng.get("log_memory", True),
        pass_per_event=bool(eng.get("pass_per_event", False)),
        fast_path=str(eng.get("fast_path", "auto")),
        progress=progress,
    )


class PoolCopies:
    """A pool factory that asks the configured one (a Hydra partial, whose every call is
    checked against Hydra's target policy: ~0.1 ms) once per capacity and hands out copies of
    that fresh pool: a cluster of 10,240 devices of one type builds one pool and 10,240 copies.
    A copy is unpickled from the fresh pool's pickle (~3 µs for the ideal pool; the same
    reduction ``copy.deepcopy`` walks, at ~11 µs), or deep-copied when the pool does not
    pickle. A fresh pool depends only on its capacity and its configured settings, so a copy
    is the pool the factory would have made; the kept one is never handed out."""

    __slots__ = ("factory", "fresh")

    def __init__(self, factory: Callable[[int], Any]) -> None:
        self.factory = factory
        self.fresh: dict[int, Any] = {}  # capacity -> (a pool the factory made, never used; its pickle or None)

    def __call__(self, capacity_bytes: int) -> Any:
        kept = self.fresh.get(capacity_bytes)
        if kept is None:
            pool = self.factory(capacity_bytes)
            try:
                blob = pickle.dumps(pool, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - a pool that does not pickle (a lambda, a lock) is deep-copied
                blob = None
            kept = self.fresh[capacity_bytes] = (pool, blob)
        pool, blob = kept
        return copy.deepcopy(pool) if blob is None else pickle.loads(blob)


@dataclass
class ServingParts:
    """What a serving run is made of, built from its config by :func:`build_serving`."""

    spec: Any                 # llmos_sim.serving.spec.ServingSpec
    requests: list
    make_replica: Any         # llmos_sim.serving.system.ReplicaFactory
    router: Any


def serving_spec(cfg: DictConfig):
    """The checked :class:`~llmos_sim.serving.spec.ServingSpec` of ``cfg.serving``."""
    from llmos_sim.serving.spec import ServingSpec

    node = _key(cfg, "serving")
    ServingSpec.check_keys(node)
    try:
        return instantiate(node)
    except Exception as e:  # Hydra wraps the spec's own check: raise that, it names the key
        inner = next((c for c in chain(e) if isinstance(c, InputError)), None)
        if inner is None:
            raise
        raise inner from None


def build_replica_factory(cfg: DictConfig, backend: Any = None, devices_from_cluster: bool = False):
    """The :class:`~llmos_sim.serving.system.ReplicaFactory` of ``cfg``: the ``serving`` spec,
    ``model``, ``gpu`` (not with ``devices_from_cluster``: ``mode: mixed`` gives each replica
    its granted device), a fresh ``batching`` policy per replica, the KV pool (``kv_memory``
    group, else ``memory``), the ``cost`` group, and the backend's replica class when it runs
    replicas for real (:meth:`~llmos_sim.backend.Backend.serving_replica`)."""
    import functools

    from llmos_sim.serving.replica import Replica
    from llmos_sim.serving.system import ReplicaFactory

    spec = serving_spec(cfg)
    model = instantiate(_key(cfg, "model"))
    gpu = None if devices_from_cluster else instantiate(_key(cfg, "gpu"))
    kv_memory = OmegaConf.select(cfg, "kv_memory")
    if kv_memory is None:
        kv_memory = OmegaConf.select(cfg, "memory")
    pool = instantiate(kv_memory) if kv_memory is not None else None
    cost = instantiate(_key(cfg, "cost"))
    replica_cls = (backend.serving_replica(model) if backend is not None else None) or Replica
    return ReplicaFactory(spec, model, gpu, functools.partial(instantiate, _key(cfg, "batching")), pool, cost,
                          replica_cls)


def build_serving(cfg: DictConfig, streams: dict[str, np.random.Generator], backend: Any = None) -> ServingParts:
    """The parts of a ``mode: serving`` run: requests (the ``workload`` group, drawn from the
    ``serving`` stream), replica factory, router."""
    workload = instantiate(_key(cfg, "workload"))
    requests = workload.requests(streams["serving"])
    make_replica = build_replica_factory(cfg, backend)
    return ServingParts(make_replica.spec, requests, make_replica, instantiate(_key(cfg, "router")))


def run_config(cfg: DictConfig, progress: bool = False) -> RunResult:
    """Run the composed config ``cfg`` and derive its tables and summary (``result.inputs``:
    the data files it read).

    The config is checked first (:func:`llmos_sim.validate.check_config`); a bad value or a
    malformed input file raises :class:`~llmos_sim.validate.InputError` naming the key or the
    file and line (a check a component makes while it is built is re-raised as one too)."""
    check_config(cfg)
    try:
        with watch_inputs() as inputs:
            result = _run_mode(cfg, progress)
    except Exception as e:  # noqa: BLE001 - only a user's mistake is renamed; the rest re-raises
        inner = next((c for c in chain(e) if isinstance(c, InputError)), None)
        if inner is not None:
            raise inner from None
        msg = named_error(e)
        if msg is None:
            raise
        raise InputError(msg) from e
    result.inputs = sorted(inputs)
    return result


def _run_mode(cfg: DictConfig, progress: bool) -> RunResult:
    mode = str(cfg.get("mode", "training"))
    if mode == "calibrate":  # measure the local devices (torch backend)
        facts = instantiate(_key(cfg, "calibration"))
        devices = {f"{d.get('kind')}{d.get('index')}_{dt}_flops": v.get("flops")
                   for d in facts.get("devices", []) for dt, v in d.get("dtypes", {}).items()}
        return RunResult(cfg, EventLog(), {}, devices, facts=facts)
    if mode not in ("training", "serving", "mixed"):
        raise ValueError(f"config key 'mode' must be training, serving, mixed or calibrate, got {mode!r}")
    if mode == "serving":
        from llmos_sim.kernel import sparse_gc
        from llmos_sim.serving import disagg
        from llmos_sim.serving.system import serve  # the serving path

        # the backend decides whether iterations are simulated or really run (backend=torch)
        backend = instantiate(cfg.backend) if cfg.get("backend") is not None else None
        if disagg.is_disaggregated(cfg):  # prefill and decode on separate pools (``topology``)
            res = disagg.simulate(cfg, int(cfg.seed), progress, backend)
            return RunResult(cfg, res.log, res.tables, res.summary)
        with sparse_gc():  # a trace's requests are many long-lived objects
            parts = build_serving(cfg, rngs(int(cfg.seed)), backend)
        res = serve(parts.requests, parts.make_replica, parts.router, parts.spec, progress,
                    env=backend.environment() if backend is not None else None)
        return RunResult(cfg, res.log, res.tables, res.summary)
    return run_cluster(cfg, progress, with_services=(mode == "mixed"))


def run_cluster(cfg: DictConfig, progress: bool = False, with_services: bool = False) -> RunResult:
    """Jobs on the cluster under the scheduler (``mode: training``); with ``with_services``
    (``mode: mixed``) also each LLM service in ``cfg.services``, as a job the scheduler places
    whose replicas serve its request stream on the granted devices
    (:mod:`llmos_sim.serving.cluster`)."""
    streams = rngs(int(cfg.seed))
    workload = instantiate(_key(cfg, "workload"))
    # a Workload gives its jobs as columns (jobs built only if asked); any object with jobs(rng) still works
    jobs = workload.table(streams["workload"]) if hasattr(workload, "table") else list(workload.jobs(streams["workload"]))
    bar = _progress_bar(len(jobs)) if progress else None
    engine = build_engine(cfg, streams, progress=bar.update if bar is not None else None)
    if with_services:
        jobs = list(jobs)
        jobs += _add_services(cfg, engine, streams, first_job_id=max((j.id for j in jobs), default=-1) + 1)
    try:
        log = engine.run(jobs, until_s=(cfg.get("engine", {}) or {}).get("until_s"))
    finally:
        if bar is not None:
            bar.close()
    for host in engine.hosts.values():  # services' inter-token latency records, after the run's own
        host.flush_itl(engine.env.now)
    cl, facts = engine.cluster, dict(getattr(engine, "backend_facts", {}) or {})
    pools = {name: h.replica_pools() for name, h in engine.hosts.items()}  # each service's replicas' pools
    del engine, jobs  # the log holds what the tables read
    tables = derive_tables(log, cl)
    release_freed()
    jobs_t = tables["jobs"][SUMMARY_COLUMNS]  # the summary copies the rows it keeps: only what it reads
    training = jobs_t[~jobs_t["tenant"].astype(str).str.startswith("service:")] if with_services else jobs_t
    summary = training_summary(training, tables["timeline"], cl.n_devices, mean_flops=cl.total_flops / cl.n_devices)
    del jobs_t, training
    release_freed()
    if with_services:
        from llmos_sim.serving.system import build_result

        spec = serving_spec(cfg)
        serving = build_result(log, spec.slo_ttft_s, spec.slo_tpot_s, spec.slo_e2e_s)
        for k in ("requests", "batches", "kv"):
            tables[k] = serving.tables[k]
        from llmos_sim.serving.cluster import replicas_table

        replicas = replicas_table(log, pools)
        if len(replicas):  # autoscaled services: their replica counts over time
            tables["replicas"] = replicas
        summary |= {f"serving_{k}": v for k, v in serving.summary.items()}
    summary["n_events"] = len(log)
    summary["sim_end_s"] = float(log.records[-1][0]) if len(log) else 0.0
    return RunResult(cfg, log, tables, summary, cl, facts)


#: the jobs table's columns :func:`~llmos_sim.metrics.training_summary` reads (with its fairness figures)
SUMMARY_COLUMNS = ["job_id", "tenant", "arrival_s", "gpus", "work_flops", "finish_s", "wait_s", "jct_s", "slowdown",
                   "n_preempt", "device_s", "status"]


def _add_services(cfg: DictConfig, engine: Engine, streams: dict, first_job_id: int) -> list:
    """Give the engine a host per service in ``cfg.services``; return the services' jobs."""
    from dataclasses import replace

    from llmos_sim.serving.cluster import ServiceHost, service_jobs
    make_replica = build_replica_factory(cfg, devices_from_cluster=True)
    device_specs = [d.spec for d in engine.cluster.devices]
    services = OmegaConf.to_container(_key(cfg, "services"), resolve=True)
    disagg = {name: _disagg_parts(cfg, name) for name in sorted(services)}
    jobs = service_jobs(services, first_job_id, make_replica.tp,
                        {name: p["gpus"] for name, p in disagg.items() if p is not None})
    job_ids = itertools.count(first_job_id + len(jobs))  # replicas added at run time (autoscaling)
    first_req = 0
    for name, s in sorted(services.items()):
        if "workload" not in s:
            raise KeyError(f"config key 'services.{name}.workload' is missing")
        reqs = instantiate(s["workload"]).requests(streams["serving"])
        reqs = [replace(r, id=first_req + i, service=name) for i, r in enumerate(reqs)]  # ids unique across services
        first_req += len(reqs)
        parts = disagg[name]
        if parts is not None:
            engine.hosts[name] = _disagg_host(cfg, name, s, parts, reqs, engine, job_ids)
            continue
        engine.hosts[name] = ServiceHost(name, reqs, make_replica, instantiate(cfg.router), int(s.get("replicas", 1)),
                                         engine.env, engine.log, device_specs,
                                         autoscaling=_autoscaling(cfg, name, s, engine, job_ids, make_replica.tp),
                                         floor_delay_s=_floor_delay_s(cfg, s))
    return jobs


def _disagg_parts(cfg: DictConfig, name: str) -> dict | None:
    """A disaggregated service's pools (``services.<name>.topology``, else the run's
    ``topology`` group): per stage its replica factory on the granted devices, router and
    replica count, its KV link and its job's device count; None for a co-located service."""
    from llmos_sim.serving import disagg

    node = cfg.services[name].get("topology", None)
    scope = cfg if node is None else OmegaConf.create({"topology": node})
    where = "topology" if node is None else f"services.{name}.topology"
    try:
        if not disagg.is_disaggregated(scope):
            return None
    except ConfigError as e:
        raise ConfigError(f"{where}.kind", str(e).split(": ", 1)[-1]) from None
    topo = scope.topology
    parts: dict[str, Any] = {"make": {}, "routers": {}, "n": {}, "where": where}
    with_topo = cfg
    if node is not None:  # the service's own topology in place of the run's
        with_topo = cfg.copy()
        with open_dict(with_topo):
            with_topo.topology = topo
    for st in disagg.STAGES:
        pool = topo.get(st, None) or {}
        if pool.get("gpu", None) is not None:
            raise ConfigError(f"{where}.{st}.gpu", "must be null in mode: mixed (a pool runs on the devices "
                                                   "the cluster grants)")
        parts["n"][st] = disagg._positive_int(pool.get("replicas", 1), f"{where}.{st}.replicas")
        parts["make"][st] = build_replica_factory(disagg.pool_config(with_topo, st), devices_from_cluster=True)
        rc = pool.get("router", None)
        parts["routers"][st] = instantiate(rc if rc is not None else cfg.router)
    parts["link"] = disagg.link_of(topo)
    parts["gpus"] = sum(parts["n"][st] * parts["make"][st].tp for st in disagg.STAGES)
    return parts


def _disagg_host(cfg: DictConfig, name: str, s: dict, parts: dict, reqs: list, engine: Engine, job_ids):
    """The :class:`~llmos_sim.serving.cluster.DisaggServiceHost` of service ``name``; its
    links' bandwidth from where the granted devices sit (:func:`placement_link_bw`)."""
    from llmos_sim.serving.cluster import DisaggServiceHost

    make, link = parts["make"], parts["link"]
    autoscaling = _autoscaling(cfg, name, s, engine, job_ids, make["prefill"].tp)
    if autoscaling is not None and autoscaling.policy.max_replicas < sum(parts["n"].values()):
        raise ConfigError(f"services.{name}.autoscaler.max_replicas",
                          f"{autoscaling.policy.max_replicas} is below the service's prefill + decode replicas "
                          f"({sum(parts['n'].values())})")
    tp = min(make[st].tp for st in make)
    return DisaggServiceHost(name, reqs, make, parts["routers"], parts["n"], link,
                             make["prefill"].model.kv_bytes_per_token, engine.env, engine.log,
                             [d.spec for d in engine.cluster.devices],
                             functools.partial(placement_link_bw, engine.cluster, link.bw_bytes_s, tp),
                             autoscaling=autoscaling, floor_delay_s=_floor_delay_s(cfg, s))


def placement_link_bw(cluster: Cluster, network_bw_bytes_s: float, tp: int, src: Sequence[int],
                      dst: Sequence[int]) -> float:
    """Bytes per second of a KV transfer from a replica on devices ``src`` to one on ``dst``,
    ``tp`` GPU pairs each sending its shard: inside one node, the devices' peer link (the
    catalogue part's ``link_bw_bytes_s``, NVLink; the slowest of them); across nodes (or for a
    part without a known peer link), the cluster's network per GPU (``cluster.link_bw_bytes_s``,
    else ``network_bw_bytes_s``: the topology link's)."""
    from llmos_sim.hardware import CATALOGUE

    devs = cluster.devices
    net = cluster.link_bw_bytes_s or network_bw_bytes_s
    if len({devs[d].node for d in (*src, *dst)}) == 1:
        parts = [CATALOGUE.get(devs[d].spec.name) for d in (*src, *dst)]
        peer = min(p.link_bw_bytes_s if p is not None else 0.0 for p in parts)
        if peer > 0:
            return peer * tp
    return net * tp


def _floor_delay_s(cfg: DictConfig, s: dict) -> float:
    """Provisioning time of a service's own replicas: 0 (they start warm) unless
    ``provision_floor`` is true (see :mod:`llmos_sim.serving.cluster`)."""
    from llmos_sim.serving.cluster import DEFAULT_LOAD_BW_BYTES_S, DEFAULT_STARTUP_S, Provisioning

    if not s.get("provision_floor", False):
        return 0.0
    return Provisioning(instantiate(cfg.model).weight_bytes, float(s.get("load_bw_bytes_s", DEFAULT_LOAD_BW_BYTES_S)),
                        float(s.get("startup_s", DEFAULT_STARTUP_S))).delay_s


def _autoscaling(cfg: DictConfig, name: str, s: dict, engine: Engine, job_ids, tp: int):
    """The service's :class:`~llmos_sim.serving.cluster.Autoscaling`, or None (a fixed replica
    count) when ``services.<name>.autoscaler`` is null or absent."""
    from llmos_sim.serving.cluster import DEFAULT_LOAD_BW_BYTES_S, DEFAULT_STARTUP_S, Autoscaling, Provisioning

    if s.get("autoscaler") is None:
        return None
    policy = instantiate(cfg.services[name].autoscaler)  # from the config node: errors name its key
    if int(s.get("replicas", 1)) > policy.max_replicas:
        raise ConfigError(f"services.{name}.replicas", f"{s.get('replicas', 1)} is above its autoscaler's "
                                                       f"max_replicas ({policy.max_replicas})")
    bw, startup = s.get("load_bw_bytes_s", DEFAULT_LOAD_BW_BYTES_S), s.get("startup_s", DEFAULT_STARTUP_S)  # checked
    spec = serving_spec(cfg)
    return Autoscaling(
        policy, Provisioning(instantiate(cfg.model).weight_bytes, float(bw), float(startup)),
        engine.submit, lambda: next(job_ids), tp=tp, priority=int(s.get("priority", 0)),
        mem_bytes_per_device=int(s.get("mem_bytes_per_device", 0)),
        slo_ttft_s=spec.slo_ttft_s, slo_tpot_s=spec.slo_tpot_s)


def derive_tables(log: EventLog, cluster: Cluster) -> Tables:
    """The training run's tables, all from the log; the memory and events tables are made
    when first read, and written block by block from the log's columns when they are written
    unread."""
    jobs, timeline = jobs_and_timeline(log, cluster)
    tables = Tables({"jobs": jobs, "timeline": timeline})
    tables.add_lazy("memory", lambda: memory_table(log, cluster), lambda path: write_memory_table(log, cluster, path))
    tables.add_lazy("events", log.table, log.write_table)
    return tables


def _progress_bar(total: int):
    """A tqdm bar on finished jobs, shown only for long runs (> 10k jobs) on a terminal."""
    if total < 10_000:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="job", mininterval=0.5, smoothing=0.1)


#: files a run writes at the top of its folder (removed before a new run's files replace them)
_RESULT_GLOBS = ("config.yaml", "summary.json", "trace.json", "*.parquet", "*.png")


def write_results(result: RunResult, out_dir: str | Path, plots: bool = True, trace: bool = False,
                  hydra: dict[str, Any] | None = None, release: bool = False) -> Path:
    """Write ``config.yaml``, ``<table>.parquet``, ``summary.json``, plots (and ``trace.json``,
    a Chrome/Perfetto trace, with ``trace``) into ``out_dir``, then the completion marker
    ``complete.json`` (config hash, package version, git commit, source hash, input hashes).

    ``hydra``: files for ``.hydra/`` (``{"overrides.yaml": [...], "config.yaml": ..., ...}``;
    YAML-dumped), written with the results so they always belong to the same run.

    ``release``: each table is dropped from ``result.tables`` once written (after the plots
    and the trace, which read them), so a large run's jobs table is not held while its
    events are written: for a caller that reads only the summary afterwards (the command line).

    Under the folder's lock (:func:`llmos_sim.outputs.output_lock`): everything is first
    written to a ``.partial-*`` folder beside the results; only then are the old marker and
    ``summary.json`` removed (from here the folder is not complete), the old results removed and
    the new ones moved in, ``summary.json`` last, and the marker renamed into place. A kill at
    any point leaves either the old complete run, or a folder without a marker; a failure
    before the move leaves the old results untouched. Leftover ``.partial-*`` folders of killed
    runs are removed.
    """
    out = Path(out_dir)
    with output_lock(out):
        clean_partials(out)
        tmp = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=out))
        try:
            cfg_yaml = OmegaConf.to_yaml(result.cfg, resolve=True)
            (tmp / "config.yaml").write_text(cfg_yaml)
            if plots:
                _plots(result, tmp)
            if trace:
                from llmos_sim.trace_export import write_trace

                write_trace(result.tables, tmp / "trace.json", name=str(result.cfg.get("name", "run")))
            for name in list(result.tables):
                if isinstance(result.tables, Tables):  # a lazy table is written without being held whole
                    result.tables.to_parquet(name, tmp / f"{name}.parquet")
                else:
                    write_frame(result.tables[name], tmp / f"{name}.parquet")
                if release:
                    del result.tables[name]
                release_freed()  # a table's buffers, before the next one's
            summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in result.summary.items()}
            if result.facts:
                summary["backend_facts"] = result.facts
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
            if hydra:
                (tmp / ".hydra").mkdir()
                for fname, content in hydra.items():
                    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
                    (tmp / ".hydra" / fname).write_text(text)
            names = sorted(p.name for p in tmp.iterdir())
            marker = {"config_sha256": config_sha256(cfg_yaml), "files": names,
                      "provenance": provenance(set(result.inputs))}
            old = read_marker(out)
            for stale in (MARKER, "summary.json"):  # from here on the folder is not complete
                (out / stale).unlink(missing_ok=True)
            stale_files = set((old or {}).get("files", [])) | {p.name for g in _RESULT_GLOBS for p in out.glob(g)}
            for name in sorted(stale_files - set(names)):
                if name not in (".hydra", LOCK) and not name.startswith(PARTIAL_PREFIX) and (out / name).is_file():
                    (out / name).unlink()
            for name in [n for n in names if n != "summary.json"] + ["summary.json"]:
                if (tmp / name).is_dir():
                    shutil.rmtree(out / name, ignore_errors=True)
                os.replace(tmp / name, out / name)
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
            os.replace(tmp / MARKER, out / MARKER)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _plots(result: RunResult, folder: Path) -> None:
    from llmos_sim.metrics import plots

    t = result.tables
    if "requests" in t and "batches" in t and "kv" in t:  # a serving run
        from llmos_sim.serving.plots import write_serving_plots

        write_serving_plots(t, result.log, folder)
    if "replicas" in t and len(t["replicas"]):  # autoscaled services
        from llmos_sim.serving.plots import replicas_plot

        replicas_plot(t["replicas"], folder / "replicas.png", t.get("requests"))
    if "jobs" in t and len(t["jobs"]):
        plots.jct_cdf(t["jobs"], folder / "jct_cdf.png", label=str(result.cfg.get("name", "run")))
    if "timeline" in t and len(t["timeline"]):
        plots.timeline_plot(t["timeline"], folder / "timeline.png")
    if "memory" in t and len(t["memory"]):
        plots.memory_plot(plots.memory_totals(t["memory"]), folder / "memory.png")
    if "events" in t and 0 < len(t.get("jobs", ())) <= GANTT_MAX_JOBS:
        from llmos_sim.trace_export import device_segments

        seg = device_segments(t["events"], t.get("jobs"))
        if seg is not None and len(seg):
            plots.gantt_plot(seg, folder / "gantt.png")


def summary_frame(summary: dict[str, Any]) -> str:
    """The summary as a two-column text table, for the terminal."""
    width = max((len(k) for k in summary), default=0)
    lines = []
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
        lines.append(f"{k:<{width}}  {v}")
    return "\n".join(lines)
