"""Alibaba's OpenB GPU cluster trace (ATC'23 "Beware of Fragmentation"): pods and nodes.

Pods (``openb_pod_list_default.csv``): ``name, cpu_milli, memory_mib, num_gpu, gpu_milli``
(each GPU's share ×1000: below 1000 the pod shares a GPU), ``gpu_spec`` (allowed GPU models,
``|``-separated; empty = any), ``qos, pod_phase, creation_time, deletion_time,
scheduled_time`` (s). Mapping onto :class:`~llmos_sim.types.Job`:

- arrival = ``creation_time`` (relative to the first kept pod, divided by ``load``)
- run time = ``deletion_time − scheduled_time`` (pods never scheduled — ``Pending`` — have no
  run time and are dropped unless ``pending_runtime_s`` gives them one); work =
  run time × ``num_gpu`` × ``gpu_milli``/1000 × ``reference_flops``, so on reference devices at
  its share the pod runs exactly as long as it did
- ``gpu_milli`` → ``Job.gpu_milli``; ``num_gpu`` → ``Job.gpus``; CPU-only pods (``num_gpu``
  0) are dropped (this simulator schedules GPU jobs)
- ``cpu_milli``/1000 → cpu demand, ``memory_mib`` → host memory demand (``with_host_demand``)
- ``gpu_spec`` with one model → ``Job.device_type`` (that model); several or none → any
- ``qos`` → ``Job.tenant``

Nodes (``openb_node_list_gpu_node.csv``: ``sn, cpu_milli, memory_mib, gpu, model``) are read by
:func:`read_nodes`; :func:`llmos_sim.hardware.alibaba_cluster` builds the cluster.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from llmos_sim.types import Job
from llmos_sim.workload.base import TraceError, Workload, data_path, fail_row, read_csv_checked

POD_COLUMNS = {"name": "str", "cpu_milli": "int", "memory_mib": "int", "num_gpu": "int", "gpu_milli": "int",
               "gpu_spec": "str", "qos": "str", "pod_phase": "str", "creation_time": "float",
               "deletion_time": "float", "scheduled_time": "str"}
NODE_COLUMNS = {"sn": "str", "cpu_milli": "int", "memory_mib": "int", "gpu": "int", "model": "str"}


def read_nodes(path: str | Path = "data:alibaba_openb_2023/openb_node_list_gpu_node.csv"):
    """The validated node list (``gpu`` >= 1 per node, a model name on each)."""
    df = read_csv_checked(path, NODE_COLUMNS)
    for col, ok, what in (("gpu", df["gpu"] >= 1, "must be >= 1"), ("model", df["model"] != "", "must not be empty"),
                          ("cpu_milli", df["cpu_milli"] >= 0, "must be >= 0")):
        if not ok.all():
            i = int(np.flatnonzero(~ok.to_numpy())[0])
            raise fail_row(path, i, col, f"{what}, got {df[col].iloc[i]!r}")
    return df


class AlibabaTrace(Workload):
    """GPU pods of the OpenB trace as jobs (see the module docstring for the mapping).

    - ``max_jobs``: the first N kept pods by arrival
    - ``load``: arrival-rate multiplier
    - ``max_runtime_s``: cap each pod's run time (pods still running at the trace's end have
      long, censored lifetimes); None = as recorded
    - ``pending_runtime_s``: run time given to never-scheduled pods (None = drop them)
    - ``with_host_demand``: keep cpu and host-memory demands (else GPUs only)
    - ``whole_gpus``: round every fractional request up to a whole GPU (no sharing: the
      baseline for fractional-GPU packing); the work is unchanged, so a pod runs faster alone
      on its GPU only if the cost model lets it — here it keeps its recorded run time
    """

    def __init__(self, path: str | Path = "data:alibaba_openb_2023/openb_pod_list_default.csv.gz",
                 reference_flops: float = 65e12, max_jobs: int | None = None, load: float = 1.0,
                 max_runtime_s: float | None = None, pending_runtime_s: float | None = None,
                 with_host_demand: bool = True, whole_gpus: bool = False) -> None:
        if not (math.isfinite(load) and load > 0):  # NaN compares False: check finiteness
            raise ValueError(f"AlibabaTrace: workload.load must be a finite number > 0, got {load}")
        self.path = path
        self.reference_flops = float(reference_flops)
        self.max_jobs = max_jobs
        self.load = float(load)
        self.max_runtime_s = max_runtime_s
        self.pending_runtime_s = pending_runtime_s
        self.with_host_demand = with_host_demand
        self.whole_gpus = whole_gpus

    def frame(self):
        """The kept pods with ``arrival_s`` and ``runtime_s`` (sorted by arrival)."""
        import pandas as pd

        df = read_csv_checked(self.path, POD_COLUMNS)
        df["line"] = np.arange(len(df)) + 2
        sched = pd.to_numeric(df["scheduled_time"].replace("", np.nan), errors="coerce")
        bad = sched.isna() & (df["scheduled_time"] != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise fail_row(self.path, i, "scheduled_time", f"cannot read {df['scheduled_time'].iloc[i]!r} as float")
        for col, ok, what in (("gpu_milli", (df["gpu_milli"] > 0) & (df["gpu_milli"] <= 1000) | (df["num_gpu"] == 0),
                               "must be in (0, 1000]"), ("num_gpu", df["num_gpu"] >= 0, "must be >= 0"),
                              ("deletion_time", (df["deletion_time"] >= sched) | sched.isna(),
                               "must be >= scheduled_time")):
            if not ok.all():
                i = int(np.flatnonzero(~ok.to_numpy())[0])
                raise fail_row(self.path, i, col, f"{what}, got {df[col].iloc[i]!r}")
        run = df["deletion_time"] - sched
        if self.pending_runtime_s is not None:
            run = run.fillna(float(self.pending_runtime_s))
        df["runtime_s"] = run
        df = df[(df["num_gpu"] >= 1) & df["runtime_s"].notna()]
        if df.empty:
            raise TraceError(f"{data_path(self.path)}: no GPU pods with a run time")
        if self.max_runtime_s is not None:
            df = df.assign(runtime_s=df["runtime_s"].clip(upper=float(self.max_runtime_s)))
        t0 = df["creation_time"].min()
        df = df.assign(arrival_s=(df["creation_time"] - t0) / self.load).sort_values(["arrival_s", "line"],
                                                                                     kind="stable")
        if self.max_jobs is not None:
            df = df.iloc[: int(self.max_jobs)]
        return df.reset_index(drop=True)

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        df = self.frame()
        out = []
        for i, (a, rt, g, m, cpu, mem, spec, qos, name) in enumerate(zip(
                df["arrival_s"].tolist(), df["runtime_s"].tolist(), df["num_gpu"].tolist(), df["gpu_milli"].tolist(),
                df["cpu_milli"].tolist(), df["memory_mib"].tolist(), df["gpu_spec"].tolist(), df["qos"].tolist(),
                df["name"].tolist())):
            demand = {"cpu": cpu / 1000, "host_mem_bytes": float(mem) * 2**20} if self.with_host_demand else {}
            models = [s for s in spec.split("|") if s]
            work = rt * g * m / 1000 * self.reference_flops
            if self.whole_gpus:
                work, m = rt * g * self.reference_flops, 1000
            out.append(Job(i, a, work, gpus=int(g), gpu_milli=int(m),
                           demand=demand, tenant=qos or "default", device_type=models[0] if len(models) == 1 else None,
                           name=name))
        return out


__all__ = ["AlibabaTrace", "read_nodes"]
