"""Pollux's synthetic workloads (``pollux/workloads/workload-{1..8}.csv``).

Columns: ``name`` (``<application>-<n>``), ``time`` (arrival, s), ``application`` (cifar10,
imagenet, bert, deepspeech2, yolov3, ncf), ``num_replicas`` (GPUs the user asked for),
``batch_size``. The Pollux repository drives each application with measured throughput and
convergence models that are not shipped here, so the work of a job is a documented, simple
assumption: a fixed amount of **reference-GPU-hours per application** (:data:`GPU_HOURS`),
set at the geometric middle of the size class the Pollux paper (OSDI'21, Table 1) gives each
application — Small 0.1–1, Medium 1–10, Large 10–100, XLarge 100–1000 GPU-hours:

=============  ==========  =========
application    size class  GPU-hours
=============  ==========  =========
cifar10        Small       0.3
ncf            Small       0.3
bert           Medium      3
deepspeech2    Medium      3
yolov3         Large       30
imagenet       XLarge      300
=============  ==========  =========

``work = GPU-hours × 3600 × reference_flops``: on ``num_replicas`` reference devices the job
runs ``GPU-hours × 3600 / num_replicas`` seconds (perfect scaling; add a communication cost
model for less). Jobs are elastic by default (Pollux adapts every job): ``min_gpus = 1``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from llmos_sim.types import Job
from llmos_sim.workload.base import Workload, fail_row, read_csv_checked

COLUMNS = {"name": "str", "time": "float", "application": "str", "num_replicas": "int", "batch_size": "int"}

#: reference-GPU-hours per application (see the module docstring for where they come from)
GPU_HOURS: dict[str, float] = {"cifar10": 0.3, "ncf": 0.3, "bert": 3.0, "deepspeech2": 3.0, "yolov3": 30.0,
                               "imagenet": 300.0}


class PolluxWorkload(Workload):
    """Jobs from one Pollux workload file.

    - ``gpu_hours``: overrides :data:`GPU_HOURS` per application
    - ``elastic``: ``min_gpus = 1`` (else rigid at ``num_replicas``)
    - ``max_gpus``: cap each job's demand (None = as recorded)
    - ``preprocess_s``, ``output_s``: seed steps 3 and 5 for every job (s)
    """

    def __init__(self, path: str | Path = "data:pollux/workloads/workload-1.csv", reference_flops: float = 125e12,
                 gpu_hours: Mapping[str, float] | None = None, elastic: bool = True, max_gpus: int | None = None,
                 load: float = 1.0, preprocess_s: float = 0.0, output_s: float = 0.0) -> None:
        if not (math.isfinite(load) and load > 0):  # NaN compares False: check finiteness
            raise ValueError(f"PolluxWorkload: workload.load must be a finite number > 0, got {load}")
        self.path = path
        self.reference_flops = float(reference_flops)
        self.gpu_hours = dict(GPU_HOURS)
        self.gpu_hours.update({str(k): float(v) for k, v in dict(gpu_hours or {}).items()})
        self.elastic = elastic
        self.max_gpus = max_gpus
        self.load = float(load)
        self.preprocess_s = float(preprocess_s)
        self.output_s = float(output_s)

    def frame(self):
        df = read_csv_checked(self.path, COLUMNS)
        for i, (app, n, t) in enumerate(zip(df["application"], df["num_replicas"], df["time"])):
            if app not in self.gpu_hours:
                raise fail_row(self.path, i, "application", f"unknown application {app!r} "
                               f"(known: {sorted(self.gpu_hours)}; pass gpu_hours to add one)")
            if n < 1:
                raise fail_row(self.path, i, "num_replicas", f"must be >= 1, got {n}")
            if t < 0:
                raise fail_row(self.path, i, "time", f"must be >= 0, got {t}")
        return df

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        df = self.frame()
        out = []
        for i, (name, t, app, n) in enumerate(zip(df["name"], df["time"].tolist(), df["application"],
                                                  df["num_replicas"].tolist())):
            g = int(min(n, self.max_gpus)) if self.max_gpus else int(n)
            work = self.gpu_hours[app] * 3600.0 * self.reference_flops
            out.append(Job(i, t / self.load, work, gpus=g, min_gpus=1 if self.elastic and g > 1 else None,
                           preprocess_s=self.preprocess_s, output_s=self.output_s, tenant=app, name=name))
        return out
