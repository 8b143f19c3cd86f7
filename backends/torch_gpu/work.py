"""Real training work: ``T`` FLOPs as square matrix multiplies, in steps that can be cancelled.

One matmul of ``n × n`` by ``n × n`` is ``2 n³`` FLOPs. A shard of ``F`` FLOPs runs
``⌊F / 2n³⌋`` full matmuls and one thinner matmul (inner dimension ``k < n``) for the rest, so
the FLOPs done equal ``F`` to within ``2n²``. Between steps (a few matmuls, ~10 ms on a GPU,
one on the CPU) the worker checks its cancel flag (preemption) and, on a GPU, synchronises so
that measured times are real. :func:`measure_matmul` times exactly this loop, so calibration
and execution agree.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import torch

#: byte alignment of every tensor placed in an arena slice
ALIGN_BYTES = 256


def _align(x: int) -> int:
    return (x + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def merge_extents(extents: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(start, end)`` byte ranges and merge adjacent/overlapping ones."""
    out: list[list[int]] = []
    for s, e in sorted(extents):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def place(extents: list[tuple[int, int]], sizes: list[int]) -> list[int] | None:
    """First-fit ``sizes`` (bytes) into the contiguous ``extents``; the aligned start of each,
    or ``None`` if they do not all fit."""
    free = [[_align(s), e] for s, e in merge_extents(extents)]
    starts = []
    for size in sizes:
        for fr in free:
            if fr[1] - fr[0] >= size:
                starts.append(fr[0])
                fr[0] = _align(fr[0] + size)
                break
        else:
            return None
    return starts


def working_set_bytes(n: int, dtype: torch.dtype) -> int:
    """Bytes of the three ``n × n`` matrices (A, B, C) of one shard."""
    return 3 * n * n * torch.empty((), dtype=dtype).element_size()


@dataclass
class Matrices:
    """The three operands of a shard's matmuls (views of an arena, or private tensors)."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.a.shape[0])


def fresh_matrices(device: str, dtype: torch.dtype, n: int, seed: int = 0) -> Matrices:
    """Private operands (no arena), filled with seeded random values."""
    m = Matrices(*(torch.empty(n, n, device=device, dtype=dtype) for _ in range(3)))
    fill(m, seed)
    return m


def fill(m: Matrices, seed: int) -> None:
    """Seeded normal values in A and B, drawn on their device (no host round trip)."""
    g = torch.Generator(device=m.a.device).manual_seed(seed)
    m.a.normal_(generator=g)
    m.b.normal_(generator=g)


def arena_matrices(arena: torch.Tensor, extents: list[tuple[int, int]], dtype: torch.dtype, n_max: int,
                   n_min: int = 32, seed: int = 0) -> Matrices:
    """Operands as views of ``arena`` (a 1-d uint8 tensor) inside ``extents`` (byte ranges of
    the job's allocation). ``n`` is the largest power-of-two fraction of ``n_max`` whose three
    matrices fit; below ``n_min`` the allocation is too small: ``torch.OutOfMemoryError``."""
    esz = torch.empty((), dtype=dtype).element_size()
    n = n_max
    while n >= n_min:
        size = n * n * esz
        starts = place(extents, [size] * 3)
        if starts is not None:
            if max(starts) + size > arena.numel():
                raise torch.OutOfMemoryError(
                    f"allocation [{min(s for s, _ in extents)}, {max(e for _, e in extents)}) lies beyond the "
                    f"device arena of {arena.numel()} B")
            m = Matrices(*(arena[s:s + size].view(dtype).view(n, n) for s in starts))
            fill(m, seed)
            return m
        n //= 2
    total = sum(e - s for s, e in extents)
    raise torch.OutOfMemoryError(
        f"working set does not fit the job's allocation: 3 x {n_min}x{n_min} {dtype} needs "
        f"{working_set_bytes(n_min, dtype)} B, the allocation has {total} B")


def matmuls_per_step(device: str, n: int, step_flops: float = 0.0) -> int:
    """Matmuls between two cancel checks: one on the CPU; ~``step_flops`` worth on a GPU."""
    if not str(device).startswith("cuda"):
        return 1
    return max(1, int(step_flops // (2 * n ** 3))) if step_flops else 8


def run_flops(m: Matrices, flops: float, cancel: threading.Event | None = None, per_step: int = 1) -> float:
    """Run ``flops`` FLOPs of matmuls on ``m``; return the FLOPs done (less if cancelled)."""
    n = m.n
    per_mm = 2.0 * n ** 3
    full = int(flops // per_mm)
    rest_k = int(round((flops - full * per_mm) / (2.0 * n * n)))
    cuda = m.a.is_cuda
    done = 0.0
    i = 0
    while i < full:
        if cancel is not None and cancel.is_set():
            break
        k = min(per_step, full - i)
        for _ in range(k):
            torch.mm(m.a, m.b, out=m.c)
        if cuda:
            torch.cuda.current_stream(m.a.device).synchronize()
        i += k
        done += k * per_mm
    else:
        if rest_k > 0 and not (cancel is not None and cancel.is_set()):
            torch.mm(m.a[:, :rest_k], m.b[:rest_k, :], out=m.c)
            if cuda:
                torch.cuda.current_stream(m.a.device).synchronize()
            done += 2.0 * n * n * rest_k
    return done


def measure_matmul(device: str, dtype: torch.dtype, n: int, seconds: float = 1.0, warmup_s: float = 0.2,
                   step_flops: float = 0.0, cpu_share: list | None = None) -> float:
    """Achieved FLOP/s of :func:`run_flops` on ``device`` at ``dtype`` and size ``n``: warm up for
    ``warmup_s``, then time enough matmuls for about ``seconds`` in three repeats; the median.
    ``cpu_share``, if given, receives the calling thread's CPU seconds per wall second over the
    repeats (below the thread count on a CPU device: other processes took the cores)."""
    m = fresh_matrices(device, dtype, n)
    per_step = matmuls_per_step(device, n, step_flops)
    per_mm = 2.0 * n ** 3
    t0 = time.perf_counter()
    k = 0
    while True:  # warm up (thread pools, clocks, kernel selection) and time one step
        t = time.perf_counter()
        run_flops(m, per_mm * per_step, per_step=per_step)
        one = max(time.perf_counter() - t, 1e-7) / per_step
        k += 1
        if time.perf_counter() - t0 >= warmup_s and k >= 2:
            break
    k = max(per_step, int(seconds / 3 / one))
    rates = []
    c0, w0 = time.thread_time(), time.perf_counter()
    for _ in range(3):
        t = time.perf_counter()
        done = run_flops(m, per_mm * k, per_step=per_step)
        rates.append(done / max(time.perf_counter() - t, 1e-9))
    if cpu_share is not None:
        cpu_share.append((time.thread_time() - c0) / max(time.perf_counter() - w0, 1e-9))
    rates.sort()
    return rates[1]


def measure_bandwidth(device: str, nbytes: int = 256 << 20, seconds: float = 0.5) -> float:
    """Achieved memory bandwidth (bytes/s) of a device-to-device copy of ``nbytes``: each copy
    reads and writes ``nbytes``, so it moves ``2 · nbytes``."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    src.fill_(1)
    dst = torch.empty_like(src)
    cuda = str(device).startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    dst.copy_(src)
    sync()
    t = time.perf_counter()
    dst.copy_(src)
    sync()
    one = max(time.perf_counter() - t, 1e-6)
    k = max(1, int(seconds / one))
    t = time.perf_counter()
    for _ in range(k):
        dst.copy_(src)
    sync()
    return 2.0 * nbytes * k / max(time.perf_counter() - t, 1e-9)

