"""The torch backend: the same control plane, run in wall-clock time, executing real work.

- :meth:`TorchBackend.environment` is a SimPy real-time environment (``factor`` = wall seconds
  per simulated second, not strict), so ``env.now`` tracks the wall clock; arrivals, scheduling
  passes and policies are exactly those of the SimPy backend.
- :meth:`TorchBackend.run` splits a task's ``T`` FLOPs over its devices in proportion to their
  ``C`` and hands each share to a worker thread (torch kernels release the GIL). The returned
  SimPy event is triggered by a small SimPy process that polls the workers every ``poll_s``
  wall seconds; the measured start/end come from ``time.perf_counter`` in the workers and go
  into the event log as a ``measured`` record per segment.
- Memory is real: each device has one arena (``torch.empty(M, dtype=uint8)``); the engine's
  pool policy decides the offsets of a job's allocation and the job's matrices are views of
  exactly those bytes. A pool whose offsets are not addresses (the ideal pool) gets private
  tensors; a :class:`~llmos_sim.backends.torch_gpu.pools.TorchNativePool` hands out real
  tensors from PyTorch's caching allocator.
- Preemption: :meth:`cancel` sets a flag each worker checks between steps; a new segment on
  the same device waits for cancelled workers there to stop before touching memory.
- Faults: an exception in a worker (``torch.OutOfMemoryError`` above all) fails the task's
  event with it; the engine fails that job alone and the run continues.

Wiring: the engine calls :meth:`attach` with its event log and per-device pools once it has
built them. Serving (``mode: serving``) uses :meth:`serving_replica` instead: see
:mod:`llmos_sim.backends.torch_gpu.serving`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import simpy
import simpy.rt
import torch

from llmos_sim import events as E
from llmos_sim.backend import Backend
from llmos_sim.backends.simpy_cluster.cost import TrainingCost
from llmos_sim.backends.torch_gpu.devices import (DEFAULT_MATMUL_N, DTYPES, LocalDevice, apply_threads, discover,
                                                  load_calibration, resolve_dtype)
from llmos_sim.backends.torch_gpu.work import Matrices, arena_matrices, fresh_matrices, matmuls_per_step, run_flops
from llmos_sim.policies.memory.base import Allocation, MemoryPool
from llmos_sim.types import Cluster, Task


TOUCH_MAX_BYTES = 256 << 20  #: CPU arenas up to this size are zeroed at bind time (touch_arena)


class WallClockEnvironment(simpy.rt.RealtimeEnvironment):
    """A non-strict real-time environment that synchronises with the wall clock on its first
    step (so building the run does not count) and converts ``perf_counter`` readings to
    run-relative wall seconds."""

    def __init__(self, factor: float = 1.0) -> None:
        super().__init__(0.0, factor=factor, strict=False)
        self._synced = False
        self.perf_start = time.perf_counter()

    def sync(self) -> None:
        super().sync()
        self.perf_start = time.perf_counter()

    def step(self) -> None:
        if not self._synced:
            self._synced = True
            self.sync()
        super().step()

    def wall_s(self, perf: float | None = None) -> float:
        """Wall seconds since the run started, at ``perf`` (a ``perf_counter`` reading) or now."""
        return (time.perf_counter() if perf is None else perf) - self.perf_start


@dataclass
class Shard:
    """One device's share of a task, run by one worker thread."""

    device: int  #: cluster device index
    flops: float
    cancel: threading.Event
    thread: threading.Thread | None = None
    setup_start: float = 0.0  #: perf_counter readings
    start: float = 0.0
    end: float = 0.0
    done_flops: float = 0.0
    cpu_s: float = 0.0  #: CPU time of the worker thread while computing (thread_time)
    matmul_n: int = 0
    error: BaseException | None = None
    finished: bool = False


@dataclass
class Handle:
    """A running task: its shards and the cancel flag they share."""

    task: Task
    shards: list[Shard]
    cancel: threading.Event = field(default_factory=threading.Event)

    def finished(self) -> bool:
        return all(s.finished for s in self.shards)

    def error(self) -> BaseException | None:
        return next((s.error for s in self.shards if s.error is not None), None)


class TorchBackend(Backend):
    """Runs training tasks as real matmuls on local devices (CUDA GPUs, else the CPU).

    Parameters
    ----------
    time_factor:
        Wall seconds per simulated second (``RealtimeEnvironment.factor``). Real work takes
        the wall time it takes, i.e. ``wall / time_factor`` simulated seconds; arrivals are
        compressed by it. Use ``cluster=local`` with the same factor to compare with SimPy.
    poll_s:
        Wall seconds between completion checks (the resolution of measured finish times).
    dtype:
        Matmul dtype: ``auto`` (bf16 on GPUs, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16``.
    matmul_n:
        Square matmul size; ``None``: the calibrated size, else 512 (CPU) / 8192 (GPU).
    step_flops:
        FLOPs between cancel checks on a GPU (``None``: 8 matmuls); the CPU checks every matmul.
    arena_bytes:
        Arena per device (bytes); ``None``: the cluster device's ``M``. Smaller than ``M`` makes
        allocations beyond it fail with ``torch.OutOfMemoryError`` (a real OOM, fault tests).
    threads:
        ``torch.set_num_threads`` for CPU kernels (``None``: the calibration's count, else half
        the cores; calibration and execution must use the same).
    calibration:
        Calibration file for ``matmul_n`` (``None``: ``$LLMOS_CALIBRATION`` or the default).
    touch_arena:
        Zero each CPU arena (up to 256 MiB) at bind time, so page commits are not charged to the
        first job (GPU memory is committed by the allocation itself).
    seed:
        Seeds the operands' values (timing does not depend on them).
    """

    realtime = True

    def __init__(self, time_factor: float = 1.0, poll_s: float = 0.001, dtype: str = "auto",
                 matmul_n: int | None = None, step_flops: float | None = None, arena_bytes: int | None = None,
                 threads: int | None = None, calibration: str | None = None, touch_arena: bool = True,
                 seed: int = 0) -> None:
        if time_factor <= 0:
            raise ValueError(f"time_factor must be > 0, got {time_factor}")
        if poll_s <= 0:
            raise ValueError(f"poll_s must be > 0, got {poll_s}")
        self.time_factor = float(time_factor)
        self.poll_s = float(poll_s)
        self.dtype_name = dtype
        self.matmul_n = matmul_n
        self.step_flops = step_flops
        self.arena_bytes = arena_bytes
        self.threads = threads
        self.calibration = calibration
        self.touch_arena = bool(touch_arena)
        self.seed = int(seed)
        self.cost = TrainingCost()
        self._log = None
        self._pools: Sequence[MemoryPool] | None = None
        self.handles: dict[int, Handle] = {}  # live tasks by id(task)
        self._stopping: dict[int, list[threading.Thread]] = {}  # cancelled workers per device
        # (job, segment, devices, start_s, end_s, flops, rate, setup_s, status, matmul_n, cpu_s)
        self.measured: list[tuple] = []

    # -- the seam ---------------------------------------------------------------------------
    def environment(self) -> simpy.Environment:
        return WallClockEnvironment(self.time_factor)

    def serving_replica(self, model: Any):
        """Replicas that run a random-weight transformer of ``model``'s shape on the local
        devices (see :mod:`llmos_sim.backends.torch_gpu.serving`). The dtype follows
        ``model.dtype_bytes`` (2: bf16, 4: fp32) unless ``dtype`` names one."""
        from llmos_sim.backends.torch_gpu.serving import replica_factory

        cal = load_calibration(self.calibration)
        apply_threads(self.threads or (cal or {}).get("threads"))
        name = self.dtype_name if self.dtype_name != "auto" else {2: "bf16", 4: "fp32"}.get(model.dtype_bytes)
        if name not in DTYPES:
            raise ValueError(f"backend.dtype={self.dtype_name!r} with model.dtype_bytes={model.dtype_bytes}: "
                             f"choose one of {sorted(DTYPES)}")
        return replica_factory(model, [d.torch_device for d in discover()], DTYPES[name], self.seed)

    def bind(self, env: simpy.Environment, cluster: Cluster) -> None:
        super().bind(env, cluster)
        cal = load_calibration(self.calibration)
        self.n_threads = apply_threads(self.threads or (cal or {}).get("threads"))
        local = discover()
        # cluster device i runs on local device i (mod the local count: several cluster
        # devices may share one local device, e.g. a 2-device cluster on one CPU in tests)
        self.local: list[LocalDevice] = [local[i % len(local)] for i in range(cluster.n_devices)]
        self.dtypes: list[str] = []
        self.ns: list[int] = []
        self.arenas: list[torch.Tensor] = []
        for i, d in enumerate(cluster.devices):
            ld = self.local[i]
            dt = resolve_dtype(self.dtype_name, ld.kind)
            self.dtypes.append(dt)
            n = self.matmul_n
            if n is None and cal:
                for c in cal.get("devices", []):
                    if c.get("index") == ld.index and c.get("kind") == ld.kind and dt in c.get("dtypes", {}):
                        n = int(c["dtypes"][dt]["matmul_n"])
            self.ns.append(int(n or DEFAULT_MATMUL_N[(ld.kind, dt)]))
            size = int(self.arena_bytes if self.arena_bytes is not None else d.spec.mem_bytes)
            arena = torch.empty(size, dtype=torch.uint8, device=ld.torch_device)
            if self.touch_arena and ld.kind == "cpu" and size <= TOUCH_MAX_BYTES:
                arena.zero_()  # commit the pages now, so the first job does not pay for it
            self.arenas.append(arena)

    def attach(self, log: Any = None, pools: Sequence[MemoryPool] | None = None) -> None:
        """Give the backend the run's event log (for ``measured`` records) and the engine's
        per-device pools (to find a job's allocations)."""
        self._log = log
        self._pools = pools

    def rate_flops_s(self, task: Task) -> float:
        return self.cost.rate_flops_s(task, self.cluster)

    def run(self, task: Task) -> simpy.Event:
        caps = self.cost.capacities(task, self.cluster)
        total = sum(caps)
        cancel = threading.Event()
        shards = [Shard(dv, task.work_flops * c / total if total > 0 else 0.0, cancel)
                  for dv, c in zip(task.devices, caps)]
        h = Handle(task, shards, cancel)
        allocs = self._allocations(task)
        for s in shards:
            waits = list(self._stopping.get(s.device, ()))
            s.thread = threading.Thread(target=self._work, args=(h, s, allocs.get(s.device, []), waits),
                                        name=f"torch-job{task.job.id}-dev{s.device}", daemon=True)
        self.handles[id(task)] = h
        for s in shards:
            s.thread.start()
        ev = simpy.Event(self.env)
        self.env.process(self._watch(h, ev))
        return ev

    def cancel(self, task: Task) -> None:
        h = self.handles.get(id(task))
        if h is None:
            return
        h.cancel.set()
        for s in h.shards:
            if s.thread is not None and not s.finished:
                self._stopping.setdefault(s.device, []).append(s.thread)

    def close(self) -> dict[str, Any]:
        for h in list(self.handles.values()):
            h.cancel.set()
        for h in list(self.handles.values()):
            for s in h.shards:
                if s.thread is not None:
                    s.thread.join()
        rates: dict[int, list[float]] = {}
        for (_job, _seg, devs, _s, _e, _f, rate, _setup, status, _n, _cpu) in self.measured:
            if status == "done" and len(devs) == 1:
                rates.setdefault(devs[0], []).append(rate)
        return {
            "backend": "torch",
            "time_factor": self.time_factor,
            "devices": [f"{ld.torch_device} ({ld.name})" for ld in self.local],
            "dtypes": self.dtypes,
            "matmul_n": self.ns,
            "achieved_flops_s": {str(d): sum(r) / len(r) for d, r in sorted(rates.items())},
            "n_segments": len(self.measured),
            # a job whose allocation cannot hold the calibrated n x n operands runs smaller
            # (slower) matmuls than calibrated: a fidelity warning
            "n_shrunk_segments": sum(1 for r in self.measured if r[9] and r[2] and r[9] < self.ns[r[2][0]]),
        }

    # -- internals --------------------------------------------------------------------------
    def _pools_and_log(self):
        return self._pools, self._log

    def _allocations(self, task: Task) -> dict[int, list[Allocation]]:
        """The job's live allocations per device: from ``task.allocations`` when the engine
        provides them, else the pools' live allocations tagged with the job's id."""
        given = getattr(task, "allocations", None)
        out: dict[int, list[Allocation]] = {}
        if given is not None:
            for dv, a in given:
                out.setdefault(dv, []).append(a)
            return out
        pools, _ = self._pools_and_log()
        if not pools:
            return out
        for dv in task.devices:
            if dv < len(pools):
                out[dv] = [a for a in pools[dv].live() if a.tag == task.job.id]
        return out

    def matrices(self, device: int, allocations: list[Allocation], seed: int) -> Matrices:
        """The shard's operands on cluster device ``device``: views of the job's allocations
        (arena slices, or a native pool's tensors), or private tensors when the job has no
        addressed allocation there."""
        dtype = DTYPES[self.dtypes[device]]
        n = self.ns[device]
        pools, _ = self._pools_and_log()
        pool = pools[device] if pools and device < len(pools) else None
        if allocations and pool is not None:
            if pool.owns_storage:  # a native pool: each allocation is its own tensor
                buf = max((pool.tensor(a) for a in allocations), key=lambda t: t.numel())
                return arena_matrices(buf, [(0, buf.numel())], dtype, n, seed=seed)
            if pool.addressed:
                ext = [e for a in allocations for e in a.extents()]
                return arena_matrices(self.arenas[device], ext, dtype, n, seed=seed)
        return fresh_matrices(self.local[device].torch_device, dtype, n, seed=seed)

    def _work(self, h: Handle, s: Shard, allocations: list[Allocation], waits: list[threading.Thread]) -> None:
        """Worker thread: wait for cancelled workers on this device, sleep the overhead, build
        the operands, run the FLOPs in steps; record perf_counter times."""
        try:
            for t in waits:
                t.join()
            s.setup_start = time.perf_counter()
            ov = h.task.overhead_s * self.time_factor
            if ov > 0 and h.cancel.wait(ov):
                return
            ld = self.local[s.device]
            # intra-op threading is per calling thread in effect: a new thread must set it
            # again, or CPU kernels run with the default team (measured 2-6x slower on a
            # loaded machine than the calibrated single-team rate)
            torch.set_num_threads(self.n_threads)
            if ld.kind == "cuda":
                torch.cuda.set_device(ld.torch_device)
            m = self.matrices(s.device, allocations, self.seed + 7919 * h.task.job.id + h.task.segment)
            s.matmul_n = m.n
            per_step = matmuls_per_step(ld.torch_device, m.n, self.step_flops or 0.0)
            if ld.kind == "cuda":
                torch.cuda.synchronize(ld.torch_device)
            c0 = time.thread_time()
            s.start = time.perf_counter()
            s.done_flops = run_flops(m, s.flops, h.cancel, per_step)
            s.end = time.perf_counter()
            s.cpu_s = time.thread_time() - c0
        except BaseException as e:  # noqa: BLE001 - reported through the task's event
            s.error = e
            h.cancel.set()  # the other shards of the task stop too
        finally:
            if not s.start:
                s.start = s.end = time.perf_counter()
            elif not s.end:
                s.end = time.perf_counter()
            s.finished = True

    def _watch(self, h: Handle, ev: simpy.Event):
        """SimPy process: poll the workers every ``poll_s`` wall seconds; then record the
        measurement and trigger ``ev`` (failed with the worker's exception, if any)."""
        env = self.env
        dt = self.poll_s / self.time_factor
        while not h.finished():
            yield env.timeout(dt)
        self.handles.pop(id(h.task), None)
        for s in h.shards:
            lst = self._stopping.get(s.device)
            if lst and s.thread in lst:
                lst.remove(s.thread)
        err = h.error()
        status = "failed" if err is not None else ("cancelled" if h.cancel.is_set() else "done")
        wall = env.wall_s if isinstance(env, WallClockEnvironment) else (lambda p: p)
        start = wall(min(s.start for s in h.shards))
        end = wall(max(s.end for s in h.shards))
        setup = max(s.start - s.setup_start for s in h.shards) if all(s.setup_start for s in h.shards) else 0.0
        done = sum(s.done_flops for s in h.shards)
        rate = done / (end - start) if end > start else 0.0
        n_used = min((s.matmul_n for s in h.shards if s.matmul_n), default=0)
        cpu = sum(s.cpu_s for s in h.shards)
        rec = (h.task.job.id, h.task.segment, tuple(h.task.devices), start, end, done, rate, setup, status, n_used, cpu)
        self.measured.append(rec)
        _, log = self._pools_and_log()
        if log is not None:
            log.emit(env.now, E.MEASURED, h.task.job.id, rec[1:])
        if err is not None:
            ev.fail(err)
        else:
            ev.succeed()
