"""Comparison plots over the runs of a sweep (matplotlib, Agg, PNG). Inputs are the tables of
:mod:`llmos_sim.compare`: the per-run table, its per-policy aggregate, per-policy run tables."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from llmos_sim.metrics.plots import _save, time_unit  # noqa: E402

#: axis labels of well-known metrics
LABELS = {
    "jct_s_avg": "mean JCT (s)", "jct_s_p50": "median JCT (s)", "jct_s_p99": "p99 JCT (s)",
    "wait_s_avg": "mean wait (s)", "makespan_s": "makespan (s)", "utilisation": "utilisation",
    "queue_len_avg": "mean queue length", "ttft_s_mean": "mean TTFT (s)", "ttft_s_p99": "p99 TTFT (s)",
    "e2e_s_mean": "mean e2e latency (s)", "e2e_s_p99": "p99 e2e latency (s)",
    "throughput_tok_s": "throughput (tok/s)", "goodput_req_s": "goodput (req/s)",
    "failed_frac": "failed fraction (of jobs / requests)", "n_failed": "failed jobs / requests",
}


def label(metric: str) -> str:
    """A metric's axis label; latencies over completed jobs (finished requests) say so."""
    from llmos_sim.compare import COMPLETED_ONLY

    text = LABELS.get(metric, metric)
    return f"{text}, completed only" if metric.startswith(COMPLETED_ONLY) else text


def metric_bars(runs: pd.DataFrame, agg: pd.DataFrame, metrics: Sequence[str], factors: Sequence[str],
                path: str | Path) -> Path:
    """One panel per metric: bars = mean over seeds per policy, whiskers = t-based 95 % CI,
    dots = the individual seeds. With two or more varied factors the last one is the bar
    colour (hue) and the others the x groups; with one, it is the x axis."""
    factors = [f for f in factors if f in agg.columns]
    if len(factors) >= 2:
        hue, xcols = factors[-1], factors[:-1]
    else:
        hue, xcols = None, (factors or ["policy"])
    from llmos_sim.compare import join_labels, text

    xkey = lambda df: join_labels(df, xcols)  # noqa: E731
    xs = list(dict.fromkeys(xkey(agg)))
    hues = list(dict.fromkeys(text(agg[hue]))) if hue else [None]
    n = len(metrics)
    ncol = min(n, 2)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(5.2, 1.0 + 0.9 * len(xs) * len(hues) ** 0.5) * ncol, 3.4 * nrow),
                             dpi=120, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(hues)
    agg_x, runs_x = xkey(agg), xkey(runs)
    for ax, m in zip(axes.flat, metrics):
        for hi, h in enumerate(hues):
            sel = agg if h is None else agg[text(agg[hue]) == h]
            sx = agg_x[sel.index]
            pos = np.array([xs.index(x) for x in sx]) + (hi - (len(hues) - 1) / 2) * width
            err = sel[f"{m}_ci95"].to_numpy(float)
            ax.bar(pos, sel[m].to_numpy(float), width * 0.92, color=colors[hi % len(colors)], alpha=0.85,
                   label=h, yerr=np.where(np.isfinite(err), err, 0.0), capsize=3, error_kw={"lw": 1})
            rsel = runs if h is None else runs[text(runs[hue]) == h]
            rpos = np.array([xs.index(x) for x in runs_x[rsel.index]], dtype=float) + (hi - (len(hues) - 1) / 2) * width
            ax.scatter(rpos, rsel[m].to_numpy(float), s=9, color="black", zorder=3, alpha=0.7)
        ax.set_xticks(range(len(xs)))
        tilt = max(map(len, xs)) > 8
        ax.set_xticklabels(xs, rotation=20 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
        ax.set_ylabel(label(m), fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title(label(m), fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if hue:
        axes.flat[0].legend(title=hue, fontsize=7, title_fontsize=8, loc="lower right", framealpha=0.9)
    n_seeds = int(agg["n"].max()) if "n" in agg else 1
    fig.suptitle(f"mean over seeds (n ≤ {n_seeds}), whiskers: 95 % CI, dots: seeds"
                 + (f" — x: {' / '.join(xcols)}" if xcols else ""), fontsize=9)
    return _save(fig, path)


def timelines(per_policy: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """Utilisation (top) and queue length (bottom) over time, one line per policy."""
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8.0, 5.8), dpi=120, sharex=True, layout="constrained")
    t_max = max(float(t["time_s"].max()) for t in per_policy.values())
    unit, scale = time_unit(t_max)
    for label, t in per_policy.items():
        x = t["time_s"].to_numpy(float) / scale
        a1.step(x, t["utilisation"], where="post", lw=1.0, label=label, alpha=0.85)
        a2.step(x, t["queue_len"], where="post", lw=1.0, label=label, alpha=0.85)
    a1.set_ylabel("device utilisation")
    a1.set_ylim(0, 1.05)
    a2.set_ylabel("queued jobs")
    a2.set_ylim(bottom=0)
    a2.set_xlabel(f"time ({unit})")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    fig.legend(*a1.get_legend_handles_labels(), loc="outside lower center", fontsize=8,
               ncol=min(len(per_policy), 3), frameon=False)
    fig.suptitle("utilisation and queue over time (lowest seed per policy)", fontsize=10)
    return _save(fig, path)


def kv_timelines(per_policy: Mapping[str, pd.DataFrame], path: str | Path) -> Path:
    """KV-cache utilisation over time (mean over replicas at each sample), one line per policy."""
    fig, ax = plt.subplots(figsize=(8.0, 3.6), dpi=120)
    t_max = max(float(k["time_s"].max()) for k in per_policy.values())
    unit, scale = time_unit(t_max)
    for label, k in per_policy.items():
        u = k.groupby("time_s")["utilisation"].mean()
        ax.step(u.index.to_numpy(float) / scale, u.to_numpy(), where="post", lw=1.0, label=label)
    ax.set_ylabel("KV-cache utilisation")
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("KV-cache utilisation (lowest seed per policy)", fontsize=10)
    return _save(fig, path)
