"""The Philly-derived trace shipped with Pollux (``pollux/philly.csv``).

Columns: ``timestamp`` (submission, wall clock), ``duration`` (s), ``num_gpus``, ``gpu_time``,
``cluster`` (virtual cluster id). Each row becomes a job that arrives at its timestamp
(relative to the first) and whose work is ``duration × num_gpus × reference_flops``: the
measured duration on the recorded GPU count of reference devices. The trace logs what ran,
not how the original scheduler decided, so it is replayed from arrival times.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmos_sim.types import Job
from llmos_sim.validate import count, non_negative, optional_count, positive
from llmos_sim.workload.base import TraceError, Workload, fail_row, read_csv_checked

COLUMNS = {"timestamp": "datetime", "duration": "float", "num_gpus": "int", "gpu_time": "float", "cluster": "str"}


class PhillyTrace(Workload):
    """Jobs from ``philly.csv``.

    - ``path``: the shipped copy by default (``data:pollux/philly.csv.gz``)
    - ``clusters``: keep only these virtual clusters (None = all)
    - ``max_jobs``: the first N jobs by arrival (None = all 82,248)
    - ``load``: arrival-rate multiplier (2.0 = the same jobs arrive twice as fast)
    - ``reference_flops``: capacity ``C`` of the device the durations were measured on
    - ``max_gpus``: drop jobs wider than this (None = keep; the engine fails jobs wider than
      the cluster)
    - ``mem_bytes_per_device``: the same ``M_d`` for every job (the trace has no memory column)
    - ``skip_s``: drop the jobs submitted in the trace's first ``skip_s`` seconds (trace time,
      before ``load``); the rest arrive from their own offset past that point (the trace's
      first weeks are quiet: this picks a busier window)
    """

    SEED_VARIES = "nothing"  #: the trace is replayed as is, whatever the seed

    def __init__(
        self,
        path: str | Path = "data:pollux/philly.csv.gz",
        clusters: Sequence[str] | None = None,
        max_jobs: int | None = None,
        load: float = 1.0,
        reference_flops: float = 100e12,
        max_gpus: int | None = None,
        mem_bytes_per_device: int = 0,
        start_offset_s: float = 0.0,
        skip_s: float = 0.0,
    ) -> None:
        self.path = path
        self.clusters = None if clusters is None else [str(c) for c in clusters]
        self.max_jobs = optional_count("workload.max_jobs", max_jobs)
        self.load = positive("workload.load", load)
        self.reference_flops = positive("workload.reference_flops", reference_flops)
        self.max_gpus = optional_count("workload.max_gpus", max_gpus, 1)
        self.mem_bytes_per_device = count("workload.mem_bytes_per_device", mem_bytes_per_device)
        self.start_offset_s = non_negative("workload.start_offset_s", start_offset_s)
        self.skip_s = non_negative("workload.skip_s", skip_s)

    def frame(self):
        """The validated trace as a DataFrame (sorted by arrival, ``arrival_s`` added)."""
        df = read_csv_checked(self.path, COLUMNS)
        for col, ok in (("duration", df["duration"] >= 0), ("num_gpus", df["num_gpus"] >= 1)):
            if not ok.all():
                i = int(np.flatnonzero(~ok.to_numpy())[0])
                raise fail_row(self.path, i, col, f"must be {'>= 0' if col == 'duration' else '>= 1'}, got {df[col].iloc[i]}")
        df["line"] = np.arange(len(df)) + 2
        if self.clusters is not None:
            df = df[df["cluster"].isin(self.clusters)]
            if df.empty:
                raise TraceError(f"{self.path}: no jobs in clusters {self.clusters}")
        if self.max_gpus is not None:
            df = df[df["num_gpus"] <= self.max_gpus]
            if df.empty:
                raise TraceError(f"{self.path}: no jobs with at most max_gpus={self.max_gpus} GPUs")
        t0 = df["timestamp"].min()
        if self.skip_s:
            df = df[(df["timestamp"] - t0).dt.total_seconds() >= self.skip_s]
            if df.empty:
                raise TraceError(f"{self.path}: no jobs after skip_s={self.skip_s:g} s")
            t0 = t0 + pd.Timedelta(seconds=self.skip_s)
        df = df.assign(arrival_s=(df["timestamp"] - t0).dt.total_seconds() / self.load + self.start_offset_s)
        df = df.sort_values(["arrival_s", "line"], kind="stable")
        if self.max_jobs is not None:
            df = df.iloc[: int(self.max_jobs)]
        return df.reset_index(drop=True)

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        df = self.frame()
        work = (df["duration"] * df["num_gpus"] * self.reference_flops).tolist()
        m = self.mem_bytes_per_device
        return [
            Job(i, a, w, gpus=g, mem_bytes_per_device=m, tenant=c, duration_hint_s=None, name=f"philly-{ln}")
            for i, (a, w, g, c, ln) in enumerate(zip(df["arrival_s"].tolist(), work, df["num_gpus"].tolist(),
                                                     df["cluster"].tolist(), df["line"].tolist()))
        ]
