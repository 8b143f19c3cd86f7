"""Local devices as a :class:`~llmos_sim.types.Cluster`: every CUDA GPU, or the CPU when none.

``cluster=local`` instantiates :func:`local_cluster`. A device's capacity ``C`` (FLOP/s) is the
*achieved* matmul rate at the dtype jobs run in: read from a calibration file
(``python -m llmos_sim.backends.torch_gpu.calibrate``) when there is one, else measured now in
a fraction of a second. ``M`` (bytes) is the size of the backend's per-device arena.

The calibration file (JSON) is ``{"devices": [{"index", "name", "kind", "dtypes": {dtype:
{"flops", "matmul_n"}}, "mem_bw_bytes_s", "mem_bytes"}], ...}``.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llmos_sim.types import Cluster, Device, DeviceSpec, Node

#: where calibration writes and the local cluster reads, unless told otherwise
DEFAULT_CALIBRATION = "outputs/calibration/calibration.json"
CALIBRATION_ENV = "LLMOS_CALIBRATION"

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: default square-matmul size per device kind and dtype (large enough to be compute bound)
DEFAULT_MATMUL_N = {("cpu", "fp32"): 512, ("cpu", "bf16"): 512, ("cuda", "fp32"): 8192,
                    ("cuda", "bf16"): 8192, ("cuda", "fp16"): 8192}

CPU_ARENA_BYTES = 1 << 30  #: default arena on the CPU: 1 GiB (pages are touched only when used)
GPU_ARENA_FRACTION = 0.5  #: default arena on a GPU: this fraction of its memory


@dataclass(frozen=True)
class LocalDevice:
    """One local execution device: ``torch.device`` string, a name and its memory (bytes)."""

    index: int
    torch_device: str
    name: str
    kind: str  # "cuda" | "cpu"
    total_mem_bytes: int


def discover() -> list[LocalDevice]:
    """Every visible CUDA GPU, or the CPU (one device) when there is none."""
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(LocalDevice(i, f"cuda:{i}", p.name, "cuda", int(p.total_memory)))
        return out
    return [LocalDevice(0, "cpu", "cpu", "cpu", host_memory_bytes())]


def host_memory_bytes() -> int:
    """Physical memory of this machine (bytes; 0 when unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def default_threads() -> int:
    """CPU threads for torch kernels when none are configured: half the cores (at least one),
    leaving the rest to the control plane and other processes. On a shared machine one
    thread per kernel is also far steadier than threads that wait on each other."""
    return max(1, (os.cpu_count() or 2) // 2)


def apply_threads(threads: int | None = None) -> int:
    """Set ``torch.set_num_threads`` (``None``: :func:`default_threads`); return the count."""
    n = int(threads) if threads else default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def resolve_dtype(dtype: str, kind: str) -> str:
    """``auto`` → ``bf16`` on GPUs (tensor cores), ``fp32`` on the CPU; else ``dtype`` checked."""
    if dtype == "auto":
        return "bf16" if kind == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: auto, {', '.join(DTYPES)}")
    if dtype == "fp16" and kind == "cpu":
        raise ValueError("fp16 matmuls are not supported on the CPU here; use fp32 or bf16")
    return dtype


def default_arena_bytes(dev: LocalDevice) -> int:
    """Arena size when none is configured: 1 GiB on the CPU, half the memory of a GPU."""
    if dev.kind == "cpu":
        return CPU_ARENA_BYTES
    return int(dev.total_mem_bytes * GPU_ARENA_FRACTION)


def calibration_path(path: str | os.PathLike | None = None) -> Path:
    """The calibration file: ``path``, else ``$LLMOS_CALIBRATION``, else the default."""
    return Path(path or os.environ.get(CALIBRATION_ENV) or DEFAULT_CALIBRATION)


def load_calibration(path: str | os.PathLike | None = None) -> dict | None:
    """The calibration file's content, or ``None`` if there is none (or it does not parse)."""
    p = calibration_path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _calibrated(cal: dict | None, dev: LocalDevice, dtype: str) -> dict | None:
    if not cal:
        return None
    for d in cal.get("devices", []):
        if d.get("index") == dev.index and d.get("kind") == dev.kind and d.get("name") == dev.name:
            return d
    return None


def device_rate(dev: LocalDevice, dtype: str, calibration: str | None = None,
                quick_s: float = 0.3) -> tuple[float, int, float]:
    """``(flops, matmul_n, mem_bw_bytes_s)`` of ``dev`` at ``dtype``: calibrated, else a quick
    measurement (``quick_s`` seconds of matmuls; no bandwidth measurement then: 0.0)."""
    d = _calibrated(load_calibration(calibration), dev, dtype)
    if d and dtype in d.get("dtypes", {}):
        e = d["dtypes"][dtype]
        return float(e["flops"]), int(e["matmul_n"]), float(d.get("mem_bw_bytes_s", 0.0))
    n = DEFAULT_MATMUL_N[(dev.kind, dtype)]
    return _quick_rate(dev.torch_device, dtype, n, quick_s), n, 0.0


@functools.lru_cache(maxsize=None)
def _quick_rate(torch_device: str, dtype: str, n: int, seconds: float) -> float:
    """A quick matmul measurement, once per process (cluster and workload then agree)."""
    from llmos_sim.backends.torch_gpu.work import measure_matmul

    return measure_matmul(torch_device, DTYPES[dtype], n, seconds=seconds)


def local_cluster(dtype: str = "auto", mem_bytes: int | None = None, calibration: str | None = None,
                  flops: float | None = None, time_factor: float = 1.0, cpus: int | None = None,
                  host_mem_bytes: int | None = None, threads: int | None = None) -> Cluster:
    """One node holding every local device (CUDA GPUs, else the CPU).

    - ``dtype``: the dtype jobs run in (``auto``: bf16 on GPUs, fp32 on the CPU)
    - ``mem_bytes``: ``M`` per device = the backend's arena size (``None``: 1 GiB on the CPU,
      half the memory of a GPU)
    - ``calibration``: calibration file (``None``: ``$LLMOS_CALIBRATION`` or the default path)
    - ``flops``: override ``C`` (FLOP/s) for every device (skips calibration and measurement)
    - ``time_factor``: wall seconds per simulated second of the torch backend; ``C`` is scaled
      by it so that the SimPy model of a real run predicts simulated (not wall) seconds
    - ``threads``: CPU threads for a quick measurement (``None``: :func:`default_threads`)
    """
    devs = discover()
    apply_threads(threads)
    specs = []
    for dev in devs:
        dt = resolve_dtype(dtype, dev.kind)
        if flops is not None:
            c, bw = float(flops), 0.0
        else:
            c, _, bw = device_rate(dev, dt, calibration)
        m = int(mem_bytes) if mem_bytes is not None else default_arena_bytes(dev)
        specs.append(DeviceSpec(f"{dev.name}:{dt}", c * float(time_factor), m, bw))
    devices = tuple(Device(i, 0, s) for i, s in enumerate(specs))
    ncpu = cpus if cpus is not None else (os.cpu_count() or 1)
    host = host_mem_bytes if host_mem_bytes is not None else host_memory_bytes()
    node = Node(0, tuple(range(len(devices))), int(ncpu), int(host))
    return Cluster((node,), devices)
