"""Tiresias's simulator inputs: the 60-job trace and the ``n32g4`` cluster spec.

``60_job.csv`` columns: ``job_id, num_gpu, submit_time`` (s), ``iterations, model_name,
duration`` (s, on ``num_gpu`` GPUs), ``interval`` (s since the previous submission). Each row
becomes a job arriving at ``submit_time`` whose work is ``duration × num_gpu × reference_flops``
(its measured duration on ``num_gpu`` reference devices), named ``<model_name>-<job_id>`` so
its class is the model (see :func:`llmos_sim.hardware.job_class`).

The cluster spec (``n32g4.csv``: ``num_switch, num_node_p_switch, num_gpu_p_node,
num_cpu_p_node, mem_p_node`` (GB)) is read by :func:`read_cluster_spec`;
:func:`llmos_sim.hardware.tiresias_cluster` builds the :class:`~llmos_sim.types.Cluster`.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from llmos_sim.types import Job
from llmos_sim.workload.base import TraceError, Workload, data_path, fail_row, read_csv_checked

COLUMNS = {"job_id": "int", "num_gpu": "int", "submit_time": "float", "iterations": "int", "model_name": "str",
           "duration": "float", "interval": "float"}
SPEC_COLUMNS = {"num_switch": "int", "num_node_p_switch": "int", "num_gpu_p_node": "int", "num_cpu_p_node": "int",
                "mem_p_node": "int"}


def read_cluster_spec(path: str | Path = "data:tiresias/n32g4.csv") -> dict[str, int]:
    """The one-row cluster spec as a dict; every field must be a positive integer."""
    df = read_csv_checked(path, SPEC_COLUMNS)
    if len(df) != 1:
        raise TraceError(f"{data_path(path)}: a cluster spec has exactly one data row, found {len(df)}")
    out = {c: int(df[c].iloc[0]) for c in SPEC_COLUMNS}
    for c, v in out.items():
        if v < 1 and c not in ("num_cpu_p_node", "mem_p_node"):
            raise fail_row(path, 0, c, f"must be >= 1, got {v}")
    return out


class TiresiasTrace(Workload):
    """Jobs from Tiresias's ``60_job.csv``.

    - ``reference_flops``: capacity ``C`` of the device the durations were measured on
    - ``load``: arrival-rate multiplier (2.0 = twice as fast)
    - ``walltime_factor``: if set, each job's ``duration_hint_s`` = duration × this (a user's
      over-estimate, for EASY backfilling); ``None`` = no hint
    - ``preprocess_s``, ``output_s``: seed steps 3 and 5 for every job (s)
    """

    def __init__(self, path: str | Path = "data:tiresias/60_job.csv", reference_flops: float = 21.2e12,
                 load: float = 1.0, walltime_factor: float | None = None, preprocess_s: float = 0.0,
                 output_s: float = 0.0) -> None:
        if not (math.isfinite(load) and load > 0):  # NaN compares False: check finiteness
            raise ValueError(f"TiresiasTrace: workload.load must be a finite number > 0, got {load}")
        self.path = path
        self.reference_flops = float(reference_flops)
        self.load = float(load)
        self.walltime_factor = walltime_factor
        self.preprocess_s = float(preprocess_s)
        self.output_s = float(output_s)

    def frame(self):
        df = read_csv_checked(self.path, COLUMNS)
        for col, ok, what in (("num_gpu", df["num_gpu"] >= 1, ">= 1"), ("duration", df["duration"] >= 0, ">= 0"),
                              ("submit_time", df["submit_time"] >= 0, ">= 0")):
            if not ok.all():
                i = int(np.flatnonzero(~ok.to_numpy())[0])
                raise fail_row(self.path, i, col, f"must be {what}, got {df[col].iloc[i]}")
        dup = df["job_id"].duplicated()
        if dup.any():
            i = int(np.flatnonzero(dup.to_numpy())[0])
            raise fail_row(self.path, i, "job_id", f"duplicate id {df['job_id'].iloc[i]}")
        return df

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        df = self.frame()
        out = []
        for jid, g, t, m, d in zip(df["job_id"].tolist(), df["num_gpu"].tolist(), df["submit_time"].tolist(),
                                   df["model_name"].tolist(), df["duration"].tolist()):
            hint = d * self.walltime_factor if self.walltime_factor is not None else None
            out.append(Job(int(jid), t / self.load, d * g * self.reference_flops, gpus=int(g), duration_hint_s=hint,
                           preprocess_s=self.preprocess_s, output_s=self.output_s, name=f"{m}-{jid}"))
        return out
