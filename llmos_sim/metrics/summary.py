"""Summary metrics of a run, computed from its tables (which come from the event log)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmos_sim.metrics.fairness import fairness_summary


def _stats(prefix: str, x: pd.Series) -> dict[str, float]:
    x = x.dropna()
    if x.empty:
        return {f"{prefix}_avg": float("nan"), f"{prefix}_p50": float("nan"), f"{prefix}_p99": float("nan")}
    a = x.to_numpy(dtype=float)
    return {f"{prefix}_avg": float(a.mean()), f"{prefix}_p50": float(np.percentile(a, 50)),
            f"{prefix}_p99": float(np.percentile(a, 99))}


def training_summary(jobs: pd.DataFrame, timeline: pd.DataFrame, n_devices: int, mean_flops: float | None = None,
                     tenants=None) -> dict[str, float]:
    """avg/p50/p99 of JCT, wait and slowdown over completed jobs; makespan (first arrival to
    last finish); utilisation = busy device-seconds / (devices × makespan); counts by status;
    preemptions; GPU-hours; fairness (:func:`llmos_sim.metrics.fairness.fairness_summary`:
    Jain's index over slowdowns always, Themis finish-time fairness ρ when ``mean_flops`` —
    the cluster's average device FLOP/s — is given, per tenant when ``tenants`` (job id →
    tenant) is given too)."""
    done = jobs[jobs["status"] == "completed"]
    out: dict[str, float] = {
        "n_jobs": int(len(jobs)),
        "n_completed": int(len(done)),
        "n_failed": int((jobs["status"] == "failed").sum()),
        "n_unfinished": int(jobs["status"].isin(["queued", "running"]).sum()),
    }
    out |= _stats("jct_s", done["jct_s"])
    out |= _stats("wait_s", done["wait_s"])
    out |= _stats("slowdown", done["slowdown"])
    if len(done):
        makespan = float(done["finish_s"].max() - jobs["arrival_s"].min())
    else:
        makespan = 0.0
    out["makespan_s"] = makespan
    busy_s = float(jobs["device_s"].sum())
    out["device_hours"] = busy_s / 3600.0
    out["utilisation"] = busy_s / (n_devices * makespan) if makespan > 0 else float("nan")
    out["n_preemptions"] = int(jobs["n_preempt"].sum())
    out["gpu_hours"] = out["device_hours"]
    out |= fairness_summary(jobs, mean_flops, tenants)
    if len(timeline) > 1:
        t = timeline["time_s"].to_numpy(dtype=float)
        q = timeline["queue_len"].to_numpy(dtype=float)
        dt = np.diff(t)
        out["queue_len_avg"] = float((q[:-1] * dt).sum() / dt.sum()) if dt.sum() > 0 else float(q.mean())
    else:
        out["queue_len_avg"] = 0.0
    return out
