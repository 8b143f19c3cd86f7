"""Workloads sized for the local devices: jobs given as durations on a calibrated device.

A real run must take seconds, not hours, and the same workload must mean the same wall time on
a CPU and on an H200. :class:`CalibratedJobs` therefore takes each job's duration (seconds on
one local device) and converts it to ``T = duration · C`` FLOPs with ``C`` the local device's
capacity (calibrated, else measured; or ``reference_flops`` when given).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from llmos_sim.types import Job


class CalibratedJobs:
    """A fixed list of jobs: ``durations_s[i]`` seconds of work on one local device, arriving
    at ``arrivals_s[i]``, on ``gpus[i]`` devices, with ``mem_bytes[i]`` per device.

    Lists shorter than ``durations_s`` repeat cyclically; scalars apply to every job.
    ``reference_flops``: ``C`` of the reference device (``None``: the first local device,
    from the calibration file or a quick measurement, at ``dtype``).
    """

    def __init__(self, durations_s: Sequence[float], arrivals_s: Sequence[float] | float = 0.0,
                 gpus: Sequence[int] | int = 1, mem_bytes: Sequence[int] | int = 0,
                 reference_flops: float | None = None, dtype: str = "auto", calibration: str | None = None,
                 time_factor: float = 1.0) -> None:
        self.durations_s = [float(d) for d in durations_s]
        n = len(self.durations_s)

        def cyc(x, cast):
            xs = list(x) if isinstance(x, (list, tuple)) or hasattr(x, "__len__") else [x]
            return [cast(xs[i % len(xs)]) for i in range(n)]

        self.arrivals_s = cyc(arrivals_s, float)
        self.gpus = cyc(gpus, int)
        self.mem_bytes = cyc(mem_bytes, int)
        self.reference_flops = reference_flops
        self.dtype = dtype
        self.calibration = calibration
        self.time_factor = float(time_factor)

    def flops(self) -> float:
        """``C`` of the reference device in FLOP per simulated second."""
        if self.reference_flops is not None:
            return float(self.reference_flops)
        from llmos_sim.backends.torch_gpu.devices import device_rate, discover, resolve_dtype

        dev = discover()[0]
        return device_rate(dev, resolve_dtype(self.dtype, dev.kind), self.calibration)[0] * self.time_factor

    def jobs(self, rng: np.random.Generator | None = None) -> list[Job]:
        """The jobs (``rng`` unused: the list is fixed)."""
        c = self.flops()
        return [Job(id=i, arrival_s=a, work_flops=d * c, gpus=g, mem_bytes_per_device=m, name=f"job{i}")
                for i, (d, a, g, m) in enumerate(zip(self.durations_s, self.arrivals_s, self.gpus, self.mem_bytes))]
