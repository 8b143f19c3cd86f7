"""Per-run plots (matplotlib, Agg). Each takes tables and a path and writes one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def cdf_plot(series: Mapping[str, pd.Series], path: str | Path, xlabel: str, title: str, logx: bool = True) -> Path:
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
    ax.set_ylabel("fraction of jobs ≤ x")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def jct_cdf(jobs: pd.DataFrame, path: str | Path, label: str = "run") -> Path:
    """CDF of job completion time over completed jobs."""
    done = jobs[jobs["status"] == "completed"]
    positive = done["jct_s"] > 0
    return cdf_plot({label: done["jct_s"]}, path, "job completion time (s)", "JCT CDF",
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
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
