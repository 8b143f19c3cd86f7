"""Fairness metrics of a training run, from its jobs table (itself from the event log).

- Jain's index over per-job or per-tenant values (:func:`jain_index`)
- finish-time fairness (Themis, NSDI'20): ``ρ = JCT_shared / JCT_isolated`` per job, and per
  tenant the mean of its jobs' ρ. ``JCT_isolated`` is estimated as the job's run time alone on
  its full demand of average devices, ``work / (gpus · C̄)`` (no queueing, no contention);
  ρ = 1 means the job finished as if it had the cluster to itself, larger is worse. (Themis
  takes 1/N of the cluster as the isolated share; the full-demand estimate is the stricter
  reference available from a trace.)
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd


def jain_index(x) -> float:
    """Jain's fairness index ``(Σx)² / (n Σx²)``: 1 = equal shares, 1/n = one takes all."""
    a = np.asarray(x, dtype=float)
    if a.size == 0 or not np.any(a):
        return float("nan")
    return float(a.sum() ** 2 / (a.size * np.square(a).sum()))


def isolated_jct_s(jobs: pd.DataFrame, mean_flops: float) -> pd.Series:
    """Estimated JCT of each job alone on its demand of average devices (s)."""
    return jobs["work_flops"] / (jobs["gpus"].astype(float) * float(mean_flops))


def finish_time_fairness(jobs: pd.DataFrame, mean_flops: float,
                         tenants: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Per tenant: ``n_jobs``, ``rho_avg`` (mean ρ over completed jobs), ``rho_max``,
    ``gpu_hours`` (device-hours held). ``tenants`` maps job id → tenant (all "default" if
    omitted)."""
    done = jobs[jobs["status"] == "completed"].copy()
    iso = isolated_jct_s(done, mean_flops)
    with np.errstate(divide="ignore", invalid="ignore"):
        done["rho"] = np.where(iso > 0, done["jct_s"] / iso, np.nan)
    if tenants is not None:
        t = jobs["job_id"].map(dict(tenants))
    elif "tenant" in jobs:
        t = jobs["tenant"].astype(str)
    else:
        t = pd.Series("default", index=jobs.index)
    done["tenant"] = t.loc[done.index].fillna("default")
    g = done.groupby("tenant", sort=True)
    out = pd.DataFrame({"n_jobs": g.size(), "rho_avg": g["rho"].mean(), "rho_max": g["rho"].max()})
    hours = jobs.assign(tenant=t.fillna("default")).groupby("tenant")["device_s"].sum() / 3600.0
    out["gpu_hours"] = hours.reindex(out.index).fillna(0.0)
    return out


def fairness_summary(jobs: pd.DataFrame, mean_flops: float | None = None,
                     tenants: Mapping[int, str] | None = None) -> dict[str, float]:
    """Scalar fairness metrics:

    - ``jain_slowdown``: Jain's index over completed jobs' 1/slowdown (1 = all equally slowed)
    - with ``mean_flops``: ``ftf_rho_avg``, ``ftf_rho_max`` over jobs, ``ftf_rho_p99``; and
      with tenants (``tenants``, else the jobs table's ``tenant`` column) also ``ftf_tenant_rho_max`` (the worst tenant's mean ρ) and
      ``jain_tenant_rho`` (Jain over tenants' mean 1/ρ)
    """
    done = jobs[jobs["status"] == "completed"]
    out: dict[str, float] = {}
    sd = done["slowdown"].to_numpy(dtype=float)
    sd = sd[np.isfinite(sd) & (sd > 0)]
    out["jain_slowdown"] = jain_index(1.0 / sd) if sd.size else float("nan")
    if mean_flops:
        iso = isolated_jct_s(done, mean_flops).to_numpy(dtype=float)
        jct = done["jct_s"].to_numpy(dtype=float)
        ok = iso > 0
        rho = jct[ok] / iso[ok]
        out["ftf_rho_avg"] = float(rho.mean()) if rho.size else float("nan")
        out["ftf_rho_p99"] = float(np.percentile(rho, 99)) if rho.size else float("nan")
        out["ftf_rho_max"] = float(rho.max()) if rho.size else float("nan")
        if tenants is not None or "tenant" in jobs:
            per = finish_time_fairness(jobs, mean_flops, tenants)
            out["ftf_tenant_rho_max"] = float(per["rho_avg"].max()) if len(per) else float("nan")
            out["jain_tenant_rho"] = jain_index(1.0 / per["rho_avg"].to_numpy(dtype=float)) if len(per) else float("nan")
    return out
