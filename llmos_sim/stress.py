"""Random configurations, run and checked: the simulator's invariants under stress.

Training runs draw scheduler × placement × memory pool × workload × engine options × seed on
small clusters; serving runs draw batching × KV memory × preemption × router × workload
(synthetic lengths, or the Mooncake synthetic trace's prefix block hashes) × prefix caching ×
host-memory KV tier × topology (co-located, or disaggregated: pool sizes, the link's bandwidth,
sharing and scope, the decode pool's prefix cache when caching is on) × seed; mixed runs (``mode: mixed``) draw a service (model, replicas,
batching, router, request rate, a cold or warm start, with or without the threshold autoscaler
and its settings, co-located or disaggregated with its pools and link) next to training jobs on
a GPU cluster under any scheduler. Each run is checked for:

- every job (request) ends exactly once: completed, or failed with a reason (a run cut by
  the horizon would leave some running: that is counted as a hang);
- devices never over-booked (replaying the log's starts, resizes, preemptions and ends);
- memory never above a device's capacity (every pool operation's levels), KV use never
  above the replica's capacity;
- every memory pool empty at the end (no live allocation left behind; a serving replica's KV
  pool may keep only its unreferenced cached prefix units, its bookkeeping consistent and
  every reference count back to zero);
- no hang: a simulated-time horizon and a CPU-time limit per run (:data:`CPU_LIMIT_S`);
- mixed runs: all of the above for the training jobs, the service's job and every replica job
  it submitted, for its requests and for every replica's KV pool; an autoscaled service never
  holds more than its ``max_replicas`` (ready, provisioning, draining and queued together), and
  a replica serves no request before it is ready; a disaggregated service ends with no
  transfer waiting or under way and no prefill block held for one.

``python -m llmos_sim.stress -n 300`` runs 300 random configurations and prints the count
per outcome; ``tests/core/test_stress_property.py`` runs the same checks under hypothesis.
"""
from __future__ import annotations

import argparse
import random
import signal
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Sequence

from llmos_sim import events as E

#: what the training runs draw from (config group options, then values of keys)
SCHEDULERS = ("fifo", "fifo_skip", "sjf", "srtf", "las", "tiresias", "tiresias_gittins", "easy", "drf", "elastic",
              "qssf", "gavel")
PLACEMENTS = ("pack", "first_free", "spread", "random", "topology", "consolidated")
POOLS = ("ideal", "first_fit", "best_fit", "next_fit", "worst_fit", "buddy", "caching", "caching_expandable",
         "size_class", "paged")
CLUSTERS = ("tiny", "multi_switch", "hetero")
MEM_MAX = (0, 1_000_000_000, 2_000_000_000, 3_500_000_000, 4_000_000_000, 16_000_000_000, 60_000_000_000)
#: serving
BATCHING = ("static", "orca", "continuous", "chunked_prefill")
KV_POOLS = ("paged", "first_fit", "buddy", "caching", "size_class", "ideal")
ROUTERS = ("round_robin", "least_outstanding", "least_kv", "prefix_aware")
#: host-memory KV tier per replica: none (unlimited swap space), nothing, less than one block, some blocks, plenty
HOST_KV_BYTES = ("null", "null", 0, 1_000_000, 100_000_000, 10_000_000_000)
#: disaggregated serving: the KV link's bandwidth (the default, and slow enough for transfers to queue)
LINK_BW = (50e9, 1e8, 1e6)
#: mixed runs: GPU clusters (the replicas run on the granted devices' specs)
MIXED_CLUSTERS = ("small", "multi_switch", "hetero")

#: CPU seconds a run may take before it counts as a hang. The heaviest legitimate draw seen
#: (LAS with 30 s rounds on the tiny cluster, 40 two-to-sixteen-GPU jobs with a memory trace:
#: 33,154 preemptions, each restart replaying the trace, 15.3 M records) takes about 76 CPU-s;
#: a livelock never finishes, so the limit only has to sit above the slowest real run.
CPU_LIMIT_S = 120.0
OUTCOMES = ("all_completed", "some_failed", "stalled", "config_error", "violation", "hang", "crash")
KINDS = ("training", "serving", "mixed")

Draw = Callable[[Sequence], object]


class Hang(Exception):
    """A run exceeded its CPU-time limit."""


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _failed(e: Exception, config_errors: tuple = ()) -> tuple[str, str]:
    """``(outcome, detail)`` of a run that raised ``e``: a hang, a configuration error (the
    ``config_errors`` types) or a crash."""
    if isinstance(e, Hang):
        return "hang", str(e)
    if isinstance(e, config_errors):
        return "config_error", _first_line(e)
    return "crash", "".join(traceback.format_exception_only(type(e), e)).strip()


@contextmanager
def cpu_limit(seconds: float):
    """Raise :class:`Hang` in this thread after ``seconds`` of CPU time (POSIX main thread
    only; elsewhere no limit)."""
    if not hasattr(signal, "ITIMER_PROF"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"over {seconds} CPU-s")

    try:
        old = signal.signal(signal.SIGPROF, on_alarm)
    except ValueError:  # not the main thread
        yield
        return
    # repeating: an exception raised inside a callback that swallows it (a gc callback) is lost
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


def training_overrides(draw: Draw) -> list[str]:
    """One random training configuration, as command-line overrides."""
    sched = draw(SCHEDULERS)
    o = [f"cluster={draw(CLUSTERS)}", "workload=synthetic", f"scheduler={sched}", f"placement={draw(PLACEMENTS)}",
         f"memory={draw(POOLS)}", f"seed={draw(range(1000))}", "output.plots=false",
         f"workload.n_jobs={draw((1, 5, 12, 25, 40))}",
         f"workload.arrival_rate_per_s={draw((0.001, 0.01, 0.1, 1.0))}",
         f"workload.duration_median_s={draw((10.0, 100.0, 900.0))}",
         f"workload.gpus={draw(('[1]', '[1,2,4]', '[1,2,4,8]', '[2,16]'))}", "workload.gpus_p=null",
         f"workload.mem_max_bytes={draw(MEM_MAX)}",
         "workload.mem_min_bytes=0",
         f"workload.elastic_fraction={draw((0.0, 0.0, 0.5, 1.0))}",
         f"engine.on_memory_full={draw(('wait', 'fail', 'preempt'))}",
         f"engine.preempt_overhead_s={draw((0.0, 10.0, 60.0))}",
         f"engine.resize_overhead_s={draw((0.0, 5.0))}",
         f"engine.pass_per_event={draw(('false', 'true'))}"]
    if draw((False, False, True)):
        o.append("+workload.mem_trace={layers: 2, hidden: 512, steps: 2}")
    if sched in ("las", "tiresias", "tiresias_gittins", "srtf"):
        o.append(f"scheduler.round_s={draw(('null', 30.0, 300.0))}")
    if sched in ("tiresias", "tiresias_gittins"):
        o.append(f"scheduler.thresholds={draw(('[100.0]', '[100.0,2000.0]', '[3600.0]'))}")
        o.append(f"scheduler.tie_break={draw(('arrival', 'previous_rank'))}")
    return o


def serving_overrides(draw: Draw) -> list[str]:
    """One random serving configuration, as command-line overrides."""
    batching = draw(BATCHING)
    o = ["mode=serving", f"batching={batching}", f"memory={draw(KV_POOLS)}",
         f"router={draw(ROUTERS)}", f"seed={draw(range(1000))}", "output.plots=false"]
    if draw((False, True)):  # requests sharing prefixes (hash ids over 512-token blocks)
        o += ["workload=mooncake_synthetic", f"workload.max_requests={draw((1, 10, 40))}",
              f"workload.rate_scale={draw((1.0, 10.0, 100.0))}"]
    else:
        o += ["workload=requests_synthetic", f"workload.n={draw((1, 10, 40))}",
              f"workload.rate_per_s={draw((0.5, 5.0, 50.0))}", f"workload.output_max={draw((16, 256, 2048))}"]
    o += [f"serving.replicas={draw((1, 2, 3))}",
          f"serving.num_kv_blocks={draw(('null', 'null', 40, 200, 1000))}",
          f"batching.preemption={draw(('recompute', 'swap'))}",
          f"serving.prefix_caching={draw(('false', 'true'))}",
          f"serving.host_kv_bytes={draw(HOST_KV_BYTES)}"]
    if draw((False, True)):  # prefill/decode disaggregation
        o += ["topology=disaggregated", f"topology.prefill.replicas={draw((1, 2))}",
              f"topology.decode.replicas={draw((1, 2))}", f"topology.link.bw_bytes_s={draw(LINK_BW)}",
              f"topology.link.sharing={draw(('fair', 'fifo'))}",
              f"topology.link.scope={draw(('source', 'destination', 'pair', 'single', 'both'))}"]
    return o


def mixed_overrides(draw: Draw) -> list[str]:
    """One random mixed configuration (training jobs and one LLM service on a GPU cluster), as
    command-line overrides."""
    cluster = draw(MIXED_CLUSTERS)
    # Llama-3.1-8B does not fit the hetero cluster's T4s (16 GB): a replica placed there is a
    # configuration error, not a finding, so only the tiny model is served there
    models = ("tiny",) if cluster == "hetero" else ("tiny", "llama31_8b")
    o = ["mode=mixed", f"cluster={cluster}", "workload=synthetic", f"scheduler={draw(SCHEDULERS)}",
         f"placement={draw(PLACEMENTS)}", f"seed={draw(range(1000))}", "output.plots=false", "engine.log_memory=false",
         f"workload.n_jobs={draw((1, 5, 12, 25))}", f"workload.arrival_rate_per_s={draw((0.01, 0.1, 1.0))}",
         f"workload.duration_median_s={draw((10.0, 100.0, 900.0))}",
         f"workload.gpus={draw(('[1]', '[1,2,4]', '[1,2,4,8]', '[8,16]'))}", "workload.gpus_p=null",
         f"model={draw(models)}", f"batching={draw(BATCHING)}", f"router={draw(ROUTERS[:3])}",
         f"batching.preemption={draw(('recompute', 'swap'))}",
         f"serving.slo_ttft_s={draw((1e-6, 0.05, 2.0))}", f"serving.slo_tpot_s={draw((0.01, 0.1))}"]
    replicas = draw((1, 1, 2))
    svc = (f"+services={{svc: {{workload: {{_target_: llmos_sim.workload.requests.SyntheticRequests, "
           f"n: {draw((1, 10, 40, 150))}, rate_per_s: {draw((0.5, 5.0, 50.0))}, output_max: {draw((16, 256))}}}, "
           f"replicas: {replicas}, arrival_s: {draw((0.0, 0.0, 30.0))}, priority: {draw((0, 10))}, "
           f"mem_bytes_per_device: 0, load_bw_bytes_s: {draw((1.0e9, 1.0e11))}, startup_s: {draw((0.0, 2.0, 30.0))}, "
           f"provision_floor: {draw(('false', 'true'))}}}}}")
    o.append(svc)
    scaled = draw((False, True, True))  # autoscaled, eager or lazy
    extra = draw((0, 1, 3))  # ...up to this many replicas above its own
    if draw((False, False, True)):  # disaggregated: its job's devices split into the two pools
        pools = (draw((1, 2)), draw((1, 2)))
        replicas = sum(pools)
        o += ["topology=disaggregated", f"topology.prefill.replicas={pools[0]}",
              f"topology.decode.replicas={pools[1]}", f"topology.link.bw_bytes_s={draw(LINK_BW)}",
              f"topology.link.sharing={draw(('fair', 'fifo'))}",
              f"topology.link.scope={draw(('source', 'destination', 'pair', 'single', 'both'))}"]
    if scaled:
        o += ["autoscaler=threshold", "+services.svc.autoscaler=${autoscaler}",
              f"autoscaler.max_replicas={replicas + extra}",
              f"autoscaler.up_queue_per_replica={draw((0.0, 1.0, 4.0))}",
              f"autoscaler.min_slo_samples={draw((1, 5, 20))}",
              f"autoscaler.down_idle_s={draw((1.0, 10.0, 120.0))}",
              f"autoscaler.cooldown_s={draw((0.0, 2.0, 60.0))}",
              f"autoscaler.interval_s={draw((0.5, 1.0, 10.0))}"]
    return o


def replay_devices(log, n_devices: int) -> str | None:
    """Replay device shares: never above a whole device; everything released at the end."""
    share = [0] * n_devices
    held: dict[int, tuple] = {}
    for t, kind, subj, data in log.records:
        if kind == E.START:
            held[subj] = (data[0], data[1])
            for d in data[0]:
                share[d] += data[1]
                if share[d] > 1000:
                    return f"device {d} over-booked at t={t} ({share[d]} milli)"
        elif kind == E.RESIZE:
            old, new = data
            milli = held[subj][1]
            for d in old:
                share[d] -= milli
            for d in new:
                share[d] += milli
                if share[d] > 1000:
                    return f"device {d} over-booked at t={t} by a resize"
            held[subj] = (new, milli)
        elif kind in (E.FINISH, E.PREEMPT) or (kind == E.FAIL and subj in held):
            devs, milli = held.pop(subj)
            for d in devs:
                share[d] -= milli
    if held or any(share):
        return f"devices still held at the end by jobs {sorted(held)[:5]}"
    return None


def memory_above_capacity(log, cluster) -> str | None:
    """A pool operation that left a device's allocated or reserved bytes above its memory."""
    for t, kind, subj, data in log.records:
        if kind == E.MEM_ALLOC:
            cap = cluster.devices[subj].spec.mem_bytes
            if data[4] > cap or data[5] > cap:
                return f"device {subj} memory above capacity at t={t}: {data[4:6]} > {cap}"
    return None


def _engine_and_jobs(overrides: list[str], services: bool):
    """``(engine, jobs, None)`` built from the overrides (with the services' jobs and hosts
    when ``services``), or ``(None, None, (outcome, detail))`` for a configuration error."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    from llmos_sim.run import _add_services, build_engine, compose, rngs

    try:
        cfg = compose(overrides)
        streams = rngs(int(cfg.seed))
        jobs = list(instantiate(cfg.workload).jobs(streams["workload"]))
        engine = build_engine(cfg, streams)
        if services:
            jobs += _add_services(cfg, engine, streams, first_job_id=max((j.id for j in jobs), default=-1) + 1)
    except (ValueError, KeyError, HydraException) as e:
        return None, None, ("config_error", _first_line(e))
    return engine, jobs, None


def _horizon(engine, jobs) -> float:
    """Generous: every job alone on its minimum of the slowest devices, one after the other,
    each preempted a hundred times."""
    slowest = min(d.spec.flops for d in engine.cluster.devices)
    work = sum(j.work_flops / (j.min_devices * slowest * j.gpu_milli / 1000) + j.preprocess_s + j.output_s
               for j in jobs)
    return max((j.arrival_s for j in jobs), default=0.0) + 10 * work + 100 * len(jobs) * (
        engine.preempt_overhead_s + engine.resize_overhead_s) + 1000.0


def check_training(overrides: list[str], cpu_s: float = CPU_LIMIT_S) -> tuple[str, str]:
    """Run one training configuration and check it; ``(outcome, detail)``."""
    from llmos_sim.metrics import jobs_table

    engine, jobs, err = _engine_and_jobs(overrides, services=False)
    if err:
        return err
    n_dev = engine.cluster.n_devices
    horizon = _horizon(engine, jobs)
    try:
        with cpu_limit(cpu_s):
            log = engine.run(jobs, until_s=horizon)
    except Exception as e:  # noqa: BLE001 - classified and reported
        return _failed(e)
    ends = Counter(subj for _, kind, subj, _ in log.records if kind in (E.FINISH, E.FAIL))
    if engine.queue or engine.running:
        return "hang", (f"horizon {horizon:g} s reached with {len(engine.queue)} queued and "
                        f"{len(engine.running)} running")
    arrived = {j.id for j in jobs}
    if set(ends) != arrived or any(c != 1 for c in ends.values()):
        bad = sorted(i for i in arrived if ends.get(i, 0) != 1)[:5]
        return "violation", f"jobs not ended exactly once: {bad}"
    why = replay_devices(log, n_dev) or memory_above_capacity(log, engine.cluster)
    if why:
        return "violation", why
    for d, pool in enumerate(engine.pools):
        if pool.live():
            return "violation", f"device {d}'s pool holds {len(pool.live())} allocations at the end"
    table = jobs_table(log, engine.cluster)
    failed = table[table.status == "failed"]
    if (failed["reason"].astype(str).str.len() == 0).any():
        return "violation", "a failed job without a reason"
    if log.records[-1][3] == ("stalled",):
        return "stalled", f"{len(failed)} of {len(table)} failed"
    return ("some_failed", f"{len(failed)} of {len(table)} failed") if len(failed) else ("all_completed", "")


def kv_left_behind(index: int, kv) -> str | None:
    """A replica's KV cache at the end of a run: its bookkeeping consistent (every block free,
    evictable or held exactly once; reference counts equal to the holders), no block held by
    any sequence (every reference count back to zero), and the pool holding nothing but the
    unreferenced cached prefix units (none without prefix caching)."""
    try:
        kv.check()
    except AssertionError as e:
        return f"replica {index}'s KV bookkeeping broken at the end: {e}"
    if kv.unheld_blocks != kv.total_blocks:
        return f"replica {index}: {kv.total_blocks - kv.unheld_blocks} KV blocks still held at the end"
    pool = kv.pool
    if pool is not None:
        live = pool.live()
        cached = getattr(kv, "_evictable", 0) * kv.block_bytes  # unreferenced cached units (blocks)
        if sum(a.requested for a in live) != cached:
            return (f"replica {index}'s KV pool holds {len(live)} allocations at the end "
                    f"({sum(a.requested for a in live)} bytes; cached prefix units: {cached})")
    return None


def check_serving(overrides: list[str], cpu_s: float = CPU_LIMIT_S) -> tuple[str, str]:
    """Run one serving configuration and check it; ``(outcome, detail)``."""
    from hydra.errors import HydraException

    from llmos_sim.run import compose
    from llmos_sim.serving.system import simulate

    try:
        cfg = compose(overrides)
    except (ValueError, KeyError, HydraException) as e:
        return "config_error", _first_line(e)
    try:
        with cpu_limit(cpu_s):
            res = simulate(cfg, seed=int(cfg.seed))
    except Exception as e:  # noqa: BLE001 - classified and reported
        return _failed(e, (ValueError, HydraException))
    arrived, ends = set(), Counter()
    for t, kind, subj, data in res.log.records:
        if kind == E.REQ_ARRIVE:
            arrived.add(subj)
        elif kind in (E.REQ_FINISH, E.REQ_FAIL):
            ends[subj] += 1
        elif kind == E.KV_SAMPLE and data[0] > data[2]:
            return "violation", f"replica {subj} KV use {data[0]} above capacity {data[2]} at t={t}"
    if set(ends) != arrived or any(c != 1 for c in ends.values()):
        bad = sorted(i for i in arrived if ends.get(i, 0) != 1)[:5]
        return "violation", f"requests not ended exactly once: {bad}"
    for rep in res.extra["replicas"]:
        why = kv_left_behind(rep.index, rep.kv)
        if why:
            return "violation", why
    n_failed = sum(1 for t, kind, _, _ in res.log.records if kind == E.REQ_FAIL)
    return ("some_failed", f"{n_failed} of {len(arrived)} failed") if n_failed else ("all_completed", "")


def check_mixed(overrides: list[str], cpu_s: float = CPU_LIMIT_S) -> tuple[str, str]:
    """Run one mixed configuration (training jobs and services) and check it; ``(outcome, detail)``."""
    from hydra.errors import HydraException

    engine, jobs, err = _engine_and_jobs(overrides, services=True)
    if err:
        return err
    n_req = sum(len(h.requests) for h in engine.hosts.values())
    last = max([r.arrival_s for h in engine.hosts.values() for r in h.requests], default=0.0)
    # the training horizon, plus a minute per request after the last arrives
    horizon = max(_horizon(engine, jobs), last + 1000.0) + 60.0 * n_req
    try:
        with cpu_limit(cpu_s):
            log = engine.run(jobs, until_s=horizon)
    except Exception as e:  # noqa: BLE001 - classified and reported
        return _failed(e, (ValueError, HydraException))
    if engine.queue or engine.running:
        return "hang", (f"horizon {horizon:g} s reached with {len(engine.queue)} queued and "
                        f"{len(engine.running)} running")
    arrived_jobs, job_ends, arrived, ends = set(), Counter(), set(), Counter()
    max_replicas = {name: h.autoscaling.policy.max_replicas for name, h in engine.hosts.items()
                    if h.autoscaling is not None}
    ready: dict = {}
    for t, kind, subj, data in log.records:
        if kind == E.ARRIVE:
            arrived_jobs.add(subj)
        elif kind in (E.FINISH, E.FAIL):
            job_ends[subj] += 1
        elif kind == E.REQ_ARRIVE:
            arrived.add(subj)
        elif kind in (E.REQ_FINISH, E.REQ_FAIL):
            ends[subj] += 1
        elif kind == E.KV_SAMPLE and data[0] > data[2]:
            return "violation", f"replica {subj} KV use {data[0]} above capacity {data[2]} at t={t}"
        elif kind in (E.SCALE, E.PROVISION_START, E.REPLICA_READY, E.DRAIN_START, E.DRAIN_END):
            if sum(data[-4:]) > max_replicas[data[0]]:
                return "violation", f"service {data[0]} holds {sum(data[-4:])} replicas at t={t}, above its max"
            if kind == E.REPLICA_READY:
                ready[data[1]] = t
        elif kind == E.REQ_SCHEDULE and max_replicas and data[0] not in ready:
            return "violation", f"request {subj} scheduled on replica {data[0]} before it was ready (t={t})"
    if arrived_jobs != set(job_ends) or any(c != 1 for c in job_ends.values()):
        bad = sorted(i for i in arrived_jobs if job_ends.get(i, 0) != 1)[:5]
        return "violation", f"jobs not ended exactly once: {bad}"
    if set(ends) != arrived or any(c != 1 for c in ends.values()) or len(arrived) != n_req:
        bad = sorted(i for i in arrived if ends.get(i, 0) != 1)[:5]
        return "violation", f"requests not ended exactly once ({len(arrived)} of {n_req} arrived): {bad}"
    why = replay_devices(log, engine.cluster.n_devices)
    if why:
        return "violation", why
    for d, pool in enumerate(engine.pools):
        if pool.live():
            return "violation", f"device {d}'s pool holds {len(pool.live())} allocations at the end"
    for name, host in engine.hosts.items():
        system = getattr(host, "system", None)  # a disaggregated service's hand-off
        why = system.left_behind() if system is not None else None
        if why:
            return "violation", f"service {name}: {why}"
        for rep in host.replicas:
            why = kv_left_behind(rep.index, rep.kv)
            if why:
                return "violation", f"service {name}: {why}"
            if rep.outstanding or rep.waiting or len(rep.table):
                return "violation", f"service {name}: replica {rep.index} still holds requests at the end"
    n_failed = sum(1 for t, kind, _, _ in log.records if kind in (E.REQ_FAIL, E.FAIL))
    n_up = sum(1 for t, kind, _, data in log.records if kind == E.SCALE and data[2] > 0)
    facts = f"{len(arrived_jobs)} jobs, {n_req} requests, {n_up} scale-ups"
    return ("some_failed", f"{n_failed} failed; {facts}") if n_failed else ("all_completed", facts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmos_sim.stress", description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=300, help="random configurations (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the configuration draws")
    ap.add_argument("--serving-share", type=float, default=0.25, help="fraction of serving configurations")
    ap.add_argument("--mixed-share", type=float, default=0.2, help="fraction of mixed configurations")
    ap.add_argument("--cpu-s", type=float, default=CPU_LIMIT_S,
                    help=f"CPU-time limit per run (a hang beyond it; default {CPU_LIMIT_S:g})")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every configuration's outcome")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    counts: dict[str, Counter] = {k: Counter() for k in KINDS}
    draws = {"training": (training_overrides, check_training), "serving": (serving_overrides, check_serving),
             "mixed": (mixed_overrides, check_mixed)}
    bad = []
    t0 = time.process_time()
    for i in range(args.n):
        x = rng.random()
        kind = "serving" if x < args.serving_share else "mixed" if x < args.serving_share + args.mixed_share \
            else "training"
        make, check = draws[kind]
        ov = make(rng.choice)
        outcome, detail = check(ov, args.cpu_s)
        counts[kind][outcome] += 1
        if outcome in ("violation", "hang", "crash"):
            bad.append((kind, outcome, detail, ov))
        if args.verbose:
            print(f"{i:4d} {kind:8s} {outcome:13s} {detail}  {' '.join(ov)}", flush=True)
    print(f"{args.n} random configurations (seed {args.seed}), {time.process_time() - t0:.1f} CPU-s")
    for kind, c in counts.items():
        print(f"  {kind:8s} " + "  ".join(f"{o}={c.get(o, 0)}" for o in OUTCOMES) + f"  (total {sum(c.values())})")
    for kind, outcome, detail, ov in bad:
        print(f"{outcome}: {detail}\n    {' '.join(ov)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
