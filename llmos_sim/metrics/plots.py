"""Per-run plots (matplotlib, Agg). Each takes tables and a path and writes one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def cdf_plot(series: Mapping[str, pd.Series], path: str | Path, xlabel: str, title: str, logx: bool = True,
             ylabel: str = "fraction of jobs ≤ x") -> Path:
    """Empirical CDFs of one metric, one line per label (a run or a policy)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, s in series.items():
        x = np.sort(s.dropna().to_numpy(dtype=float))
        if x.size == 0:
            continue
        y = np.arange(1, x.size + 1) / x.size
        ax.step(x, y, where="post", label=f"{label} (n={x.size})")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    from llmos_sim.outputs import replace_file

    try:
        return replace_file(path, fig.savefig)  # renamed into place: a symlink there is replaced, not followed
    finally:
        plt.close(fig)


def time_unit(t_max_s: float) -> tuple[str, float]:
    """A readable time unit for an axis spanning ``t_max_s`` seconds: ``(name, seconds per unit)``."""
    if t_max_s > 3 * 86400:
        return "d", 86400.0
    if t_max_s > 3 * 3600:
        return "h", 3600.0
    if t_max_s > 3 * 60:
        return "min", 60.0
    return "s", 1.0


def jct_cdf(jobs: pd.DataFrame, path: str | Path, label: str = "run") -> Path:
    """CDF of job completion time over completed jobs (the legend counts the others)."""
    done = jobs[jobs["status"] == "completed"]
    positive = done["jct_s"] > 0
    lost = len(jobs) - len(done)
    if lost:
        label = f"{label} ({lost} of {len(jobs)} not completed)"
    return cdf_plot({label: done["jct_s"]}, path, "job completion time (s)", "JCT CDF, completed jobs",
                    logx=bool(positive.all() and len(done)))


def timeline_plot(timeline: pd.DataFrame, path: str | Path, title: str = "cluster timeline") -> Path:
    """Utilisation (left axis) and queue length (right axis) over time, as step functions."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    t = timeline["time_s"].to_numpy(dtype=float)
    unit, scale = ("h", 3600.0) if t.size and t.max() > 3 * 3600 else ("s", 1.0)
    ax.step(t / scale, timeline["utilisation"], where="post", color="tab:blue", label="utilisation")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("device utilisation", color="tab:blue")
    ax.set_xlabel(f"time ({unit})")
    ax2 = ax.twinx()
    ax2.step(t / scale, timeline["queue_len"], where="post", color="tab:red", alpha=0.7, label="queue")
    ax2.set_ylabel("queued jobs", color="tab:red")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from llmos_sim.outputs import replace_file

    try:
        return replace_file(path, fig.savefig)  # renamed into place: a symlink there is replaced, not followed
    finally:
        plt.close(fig)


def memory_totals(memory: pd.DataFrame) -> pd.DataFrame:
    """Allocated and reserved bytes summed over devices after each memory operation.

    The ``memory`` table holds each device pool's levels after an operation on it; the total
    is the running sum of per-device changes. One row per instant (the last state at that time):
    ``time_s, allocated_bytes, reserved_bytes``.
    """
    m = memory.sort_values("seq", kind="stable") if "seq" in memory else memory
    out = {"time_s": m["time_s"].to_numpy(dtype=float)}
    for col, name in (("pool_allocated", "allocated_bytes"), ("pool_reserved", "reserved_bytes")):
        level = m[col].astype(float)
        delta = level - level.groupby(m["device"]).shift(1).fillna(0.0)
        out[name] = delta.cumsum().to_numpy()
    df = pd.DataFrame(out)
    return df.groupby("time_s", sort=True).last().reset_index()


def memory_plot(totals: Mapping[str, pd.DataFrame] | pd.DataFrame, path: str | Path,
                title: str = "device memory, all devices") -> Path:
    """Allocated (solid) and reserved (dashed) memory over time, one colour per label.

    ``totals``: one :func:`memory_totals` frame, or a mapping label -> frame (a policy each).
    """
    if isinstance(totals, pd.DataFrame):
        totals = {"run": totals}
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=120)
    t_max = max((float(d["time_s"].max()) for d in totals.values() if len(d)), default=0.0)
    unit, scale = time_unit(t_max)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, d) in enumerate(totals.items()):
        c = colors[i % len(colors)]
        t = d["time_s"].to_numpy(float) / scale
        ax.step(t, d["allocated_bytes"] / 1e9, where="post", color=c, lw=1.3, label=f"{label}")
        if not np.allclose(d["reserved_bytes"], d["allocated_bytes"]):
            ax.step(t, d["reserved_bytes"] / 1e9, where="post", color=c, lw=1.0, ls="--", alpha=0.8)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("GB (solid: allocated, dashed: reserved)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, ncol=2 if len(totals) > 4 else 1)
    return _save(fig, path)


def gantt_plot(segments: pd.DataFrame, path: str | Path, title: str = "device allocation",
               max_devices: int = 64) -> Path:
    """Gantt chart of device allocation: a row per device, a bar per job stint on it.

    ``segments``: ``job, device, start_s, end_s, end`` (see
    :func:`llmos_sim.trace_export.device_segments`). Colours cycle per job; a stint that ended
    in a preemption is hatched. Shows at most ``max_devices`` devices (the first ones).
    """
    seg = segments[segments["device"] < segments["device"].min() + max_devices]
    devices = sorted(seg["device"].unique())
    row = {d: i for i, d in enumerate(devices)}
    t_max = float(seg["end_s"].max()) if len(seg) else 0.0
    unit, scale = time_unit(t_max)
    height = min(9.0, 1.6 + 0.16 * len(devices))
    fig, ax = plt.subplots(figsize=(8.5, height), dpi=120)
    cmap = plt.get_cmap("tab20")
    jobs = {j: i for i, j in enumerate(pd.unique(seg["job"]))}
    for (j, d, t0, t1, end) in seg[["job", "device", "start_s", "end_s", "end"]].itertuples(index=False):
        ax.barh(row[d], (t1 - t0) / scale, left=t0 / scale, height=0.8, color=cmap(jobs[j] % 20),
                edgecolor="black" if end == "preempt" else "none", linewidth=0.4,
                hatch="////" if end == "preempt" else None)
    ax.set_yticks(range(len(devices)))
    step = max(1, len(devices) // 16)
    ax.set_yticklabels([str(d) if i % step == 0 else "" for i, d in enumerate(devices)], fontsize=7)
    ax.set_ylim(-0.6, len(devices) - 0.4)
    ax.invert_yaxis()
    ax.set_ylabel("device")
    ax.set_xlabel(f"time ({unit})")
    n_pre = int((seg["end"] == "preempt").sum())
    ax.set_title(f"{title} — {len(jobs)} jobs" + (f", {n_pre} preempted stints (hatched)" if n_pre else ""))
    ax.grid(True, axis="x", alpha=0.3)
    return _save(fig, path)
