"""A seeded synthetic job generator: Poisson arrivals, configurable size distributions."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from llmos_sim.types import Job, JobTable
from llmos_sim.validate import ConfigError, count, non_negative, probability
from llmos_sim.workload.base import Workload


class SyntheticJobs(Workload):
    """``n_jobs`` jobs with Poisson arrivals at ``arrival_rate_per_s``.

    - devices: drawn from ``gpus`` with probabilities ``gpus_p`` (uniform if omitted)
    - duration on the reference device: log-normal with median ``duration_median_s`` and
      shape ``duration_sigma`` (0 = every job takes the median); work
      ``T = duration × gpus × reference_flops`` so a job on its demand of reference devices
      runs for exactly its drawn duration (the seed's ``T_d = T / Σ C_i``)
    - memory per device: uniform in ``[mem_min_bytes, mem_max_bytes]``
    - a fraction ``elastic_fraction`` are elastic with ``min_gpus = max(1, gpus // 2)``
    - tenants: round-robin over ``tenants`` (for fair-share policies)
    - ``mem_trace``: keyword arguments of
      :func:`llmos_sim.memtrace.generate.transformer_training_trace` (e.g. ``{layers: 12,
      hidden: 2048, steps: 4}``): every job replays that allocation pattern on its devices on
      top of its persistent ``mem`` (None = a fixed footprint)
    """

    SEED_VARIES = "arrivals, GPU counts, durations, memory sizes, elastic jobs"

    def __init__(
        self,
        n_jobs: int = 100,
        arrival_rate_per_s: float = 0.01,
        gpus: Sequence[int] = (1, 2, 4, 8),
        gpus_p: Sequence[float] | None = None,
        duration_median_s: float = 600.0,
        duration_sigma: float = 1.0,
        reference_flops: float = 100e12,
        mem_min_bytes: int = 0,
        mem_max_bytes: int = 0,
        elastic_fraction: float = 0.0,
        tenants: Sequence[str] = ("default",),
        mem_trace: Mapping[str, Any] | None = None,
    ) -> None:
        for key, v in (("arrival_rate_per_s", arrival_rate_per_s), ("duration_median_s", duration_median_s)):
            if not (math.isfinite(v) and v > 0):  # NaN compares False: check finiteness
                raise ValueError(f"SyntheticJobs: workload.{key} must be a finite number > 0, got {v}")
        if n_jobs < 0:
            raise ValueError(f"SyntheticJobs: workload.n_jobs must be >= 0, got {n_jobs}")
        if gpus_p is not None and len(gpus_p) != len(gpus):
            raise ValueError(f"SyntheticJobs: gpus_p has {len(gpus_p)} entries for {len(gpus)} gpus values")
        if not 0 <= mem_min_bytes <= mem_max_bytes and not (mem_max_bytes == 0 and mem_min_bytes == 0):
            raise ValueError("SyntheticJobs: need 0 <= mem_min_bytes <= mem_max_bytes")
        if not list(tenants):
            raise ConfigError("workload.tenants", "needs at least one tenant")
        if not list(gpus):
            raise ConfigError("workload.gpus", "needs at least one value")
        for i, g in enumerate(gpus):
            count(f"workload.gpus[{i}]", g, 1)
        if gpus_p is not None:
            for i, p in enumerate(gpus_p):
                non_negative(f"workload.gpus_p[{i}]", p)
            if not sum(gpus_p) > 0:
                raise ConfigError("workload.gpus_p", f"must have a positive sum, got {list(gpus_p)}")
        probability("workload.elastic_fraction", elastic_fraction)
        non_negative("workload.duration_sigma", duration_sigma)
        self.n_jobs = int(n_jobs)
        self.arrival_rate_per_s = float(arrival_rate_per_s)
        self.gpus = [int(g) for g in gpus]
        self.gpus_p = None if gpus_p is None else np.asarray(gpus_p, float) / float(np.sum(gpus_p))
        self.duration_median_s = float(duration_median_s)
        self.duration_sigma = float(duration_sigma)
        self.reference_flops = float(reference_flops)
        self.mem_min_bytes = int(mem_min_bytes)
        self.mem_max_bytes = int(mem_max_bytes)
        self.elastic_fraction = float(elastic_fraction)
        self.tenants = list(tenants)
        self.mem_trace = dict(mem_trace) if mem_trace else None

    def trace_rows(self) -> tuple:
        """The allocation pattern every job carries (``Job.mem_trace``), or ``()``."""
        if not self.mem_trace:
            return ()
        from llmos_sim.memtrace.generate import transformer_training_trace

        df = transformer_training_trace(**self.mem_trace)
        return tuple(zip(df["time_s"].astype(float).tolist(), df["op"].tolist(), df["id"].astype(int).tolist(),
                         df["nbytes"].astype(int).tolist()))

    def arrays(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The drawn columns (vectorised; 10^6 jobs in well under a second)."""
        n = self.n_jobs
        arrival = np.cumsum(rng.exponential(1.0 / self.arrival_rate_per_s, n))
        gpus = rng.choice(np.asarray(self.gpus), size=n, p=self.gpus_p)
        dur = self.duration_median_s * np.exp(self.duration_sigma * rng.standard_normal(n))
        mem = (rng.integers(self.mem_min_bytes, self.mem_max_bytes + 1, n) if self.mem_max_bytes
               else np.zeros(n, np.int64))
        elastic = rng.random(n) < self.elastic_fraction
        return {"arrival_s": arrival, "gpus": gpus, "duration_s": dur, "mem_bytes": mem, "elastic": elastic}

    def table(self, rng: np.random.Generator) -> JobTable:
        """The jobs as columns (no :class:`Job` object per job): the drawn arrays themselves."""
        a = self.arrays(rng)
        n = self.n_jobs
        gpus = a["gpus"].astype(np.int64)
        elastic = a["elastic"] & (gpus > 1)
        min_gpus = (np.where(elastic, np.maximum(1, gpus // 2), 0).tolist() if elastic.any() else None)
        if min_gpus is not None:
            min_gpus = [m if m else None for m in min_gpus]
        tenants, nt = self.tenants, len(self.tenants)
        return JobTable.from_columns(
            n, id=np.arange(n, dtype=np.int64), arrival_s=a["arrival_s"],
            work_flops=a["duration_s"] * a["gpus"] * self.reference_flops, gpus=gpus, min_gpus=min_gpus,
            mem_bytes_per_device=a["mem_bytes"].astype(np.int64),
            tenant=tenants[0] if nt == 1 else [tenants[i % nt] for i in range(n)], mem_trace=self.trace_rows())

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        return list(self.table(rng))
