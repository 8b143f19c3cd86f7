"""The plots one serving run writes (pure functions of its tables, like every plot here):

- ``latency_cdf.png``: CDFs of TTFT, TPOT, ITL (every token gap) and e2e latency, in ms;
- ``kv_queue.png``: per replica, the KV cache held (fraction of capacity) over time, and the
  requests waiting (arrived, not yet scheduled) and running (scheduled, not finished);
- ``throughput.png``: prompt and output tokens computed per second over time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim.metrics.plots import _save, plt, time_unit
from llmos_sim.serving.metrics import PERCENTILES


def _cdf(ax, x: np.ndarray, w: np.ndarray | None, label: str) -> None:
    ok = ~np.isnan(x)
    x = x[ok]
    w = np.ones(len(x)) if w is None else np.asarray(w, float)[ok]
    keep = w > 0
    x, w = x[keep], w[keep]
    if not len(x):
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        return
    o = np.argsort(x, kind="stable")
    x, y = x[o], np.cumsum(w[o]) / w.sum()
    ax.step(x, y, where="post")
    p99 = x[np.searchsorted(y, 0.99)] if y[-1] >= 0.99 else x[-1]
    ax.axvline(p99, color="0.5", ls=":", lw=1)
    ax.set_title(f"{label}: mean {np.average(x, weights=w):.4g} ms, p99 {p99:.4g} ms", fontsize=9)
    if x[0] > 0 and x[-1] / x[0] > 100:
        ax.set_xscale("log")
    ax.set_ylim(0, 1.01)
    ax.grid(True, alpha=0.3)


def latency_cdfs(req: pd.DataFrame, itl: tuple[np.ndarray, np.ndarray], path: str | Path, title: str = "") -> Path:
    """TTFT, TPOT, ITL and e2e CDFs over completed requests (ITL: over all token gaps)."""
    done = req[req["finish_s"].notna()]
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), dpi=110)
    for ax, (label, x, w) in zip(axes.flat, [
            ("TTFT", done["ttft_s"].to_numpy(float) * 1e3, None),
            ("TPOT", done["tpot_s"].to_numpy(float) * 1e3, None),
            ("ITL", np.asarray(itl[0], float) * 1e3, itl[1]),
            ("e2e latency", done["e2e_s"].to_numpy(float) * 1e3, None)]):
        _cdf(ax, x, w, label)
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction ≤ x")
    fig.suptitle(title or f"latency CDFs ({len(done)} completed requests; dotted: p{PERCENTILES[-1]})")
    return _save(fig, path)


def kv_queue_timeline(req: pd.DataFrame, kv: pd.DataFrame, path: str | Path) -> Path:
    """KV held per replica and the waiting/running request counts over time."""
    t_end = float(np.nanmax([req["finish_s"].max(), req["arrival_s"].max(), kv["time_s"].max() if len(kv) else 0]))
    unit, div = time_unit(t_end)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5.6), dpi=110, sharex=True)
    for rep, g in kv.groupby("replica"):
        a1.step(g["time_s"].to_numpy(float) / div, g["utilisation"].to_numpy(float), where="post", lw=0.8,
                label=f"replica {rep}")
    a1.set_ylabel("KV held / capacity")
    a1.set_ylim(0, 1.02)
    a1.grid(True, alpha=0.3)
    if kv["replica"].nunique() <= 8:
        a1.legend(fontsize=7, loc="upper right")
    # counts over time: +1 at arrival, -1 at first schedule (waiting); +1 at first schedule,
    # -1 at finish (running; a request failed after its schedule stays counted)
    sched, fin = req["schedule_s"].to_numpy(float), req["finish_s"].to_numpy(float)
    arr = req["arrival_s"].to_numpy(float)
    never = np.isnan(sched)  # failed before any batch: leaves the queue at once
    for label, ups, downs in [("waiting", arr, np.where(never, arr, sched)), ("running", sched, fin)]:
        ups, downs = ups[~np.isnan(ups)], downs[~np.isnan(downs)]
        t = np.concatenate([ups, downs])
        d = np.concatenate([np.ones(len(ups)), -np.ones(len(downs))])
        o = np.argsort(t, kind="stable")
        a2.step(t[o] / div, np.cumsum(d[o]), where="post", lw=0.8, label=label)
    a2.set_ylabel("requests")
    a2.set_xlabel(f"time ({unit})")
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=8, loc="upper right")
    fig.suptitle("KV cache and queue over time (all replicas' requests)")
    return _save(fig, path)


def throughput_timeline(batches: pd.DataFrame, path: str | Path, bins: int = 120) -> Path:
    """Prompt and output tokens computed per second, in ``bins`` time bins (a fast-forwarded
    span's tokens spread evenly over its duration)."""
    t0 = batches["time_s"].to_numpy(float)
    t1 = t0 + batches["duration_s"].to_numpy(float)
    end = float(t1.max()) if len(t1) else 1.0
    unit, div = time_unit(end)
    edges = np.linspace(0.0, max(end, 1e-9), bins + 1)
    rep = batches["replica"].to_numpy()
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    for col, label in (("n_prefill_tokens", "prompt (prefill) tokens/s"), ("n_decode_tokens", "output (decode) tokens/s")):
        tok = batches[col].to_numpy(float)
        cum = np.zeros(len(edges))
        for r in np.unique(rep):  # a replica's records do not overlap: its cumulative tokens are
            m = rep == r           # piecewise linear through (start, before) and (end, after)
            c = np.cumsum(tok[m])
            ts = np.column_stack([t0[m], t1[m]]).ravel()
            cs = np.column_stack([c - tok[m], c]).ravel()
            cum += np.interp(edges, ts, cs, left=0.0, right=float(c[-1]))
        rate = np.diff(cum) / np.diff(edges)
        ax.step(edges[:-1] / div, rate, where="post", label=label, lw=0.9)
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("tokens / s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("throughput over time (all replicas)")
    return _save(fig, path)


def write_serving_plots(tables: dict, log, folder: str | Path) -> list[Path]:
    """The three plots of a serving run (its tables and event log) into ``folder``."""
    from llmos_sim.serving.metrics import Frames, itl_samples

    folder = Path(folder)
    req, bat, kv = tables["requests"], tables["batches"], tables["kv"]
    out = []
    if len(req):
        out.append(latency_cdfs(req, itl_samples(Frames(log), bat), folder / "latency_cdf.png"))
        out.append(kv_queue_timeline(req, kv, folder / "kv_queue.png"))
    if len(bat):
        out.append(throughput_timeline(bat, folder / "throughput.png"))
    return out


def replicas_plot(replicas: pd.DataFrame, path: str | Path, requests: pd.DataFrame | None = None) -> Path:
    """Autoscaled services (the ``replicas`` table): per service, the replicas ready, ready or
    provisioning, and asked for (queued at the cluster scheduler) over time, and for a
    disaggregated service the ready ones per pool; with ``requests``, the service's arrivals
    per minute on a second axis."""
    from llmos_sim.serving.cluster import COLOCATED, ready_per_pool

    services = list(dict.fromkeys(replicas["service"].astype(str)))
    fig, axes = plt.subplots(len(services), 1, figsize=(8, 2.8 * len(services)), squeeze=False)
    unit, per = time_unit(float(replicas["time_s"].max()) if len(replicas) else 0.0)
    for ax, name in zip(axes[:, 0], services):
        d = replicas[replicas["service"].astype(str) == name]
        t = d["time_s"].to_numpy(float) / per
        ready = d["n_ready"].to_numpy(int)
        prov = ready + d["n_provisioning"].to_numpy(int)
        asked = prov + d["n_queued"].to_numpy(int)
        ax.step(t, asked, where="post", color="0.6", ls=":", label="asked for (+ queued)")
        ax.step(t, prov, where="post", color="tab:orange", label="ready + provisioning")
        ax.step(t, ready, where="post", color="tab:blue", lw=2, label="ready")
        per_pool = ready_per_pool(d)
        pools = [p for p in per_pool.columns[1:] if p != COLOCATED]
        for pool, color, nudge in zip(pools, ("tab:purple", "tab:red"), (-0.05, 0.05)):  # (apart where equal)
            ax.step(t, per_pool[pool] + nudge, where="post", color=color, lw=1, label=f"ready {pool}")
        ax.set_ylabel("replicas")
        ax.set_title(f"service {name}", fontsize=9)
        ax.set_ylim(0, max(int(asked.max()) if len(asked) else 1, 1) + 0.5)
        ax.grid(True, alpha=0.3)
        if requests is not None and "service" in requests and len(requests):
            a = requests.loc[requests["service"].astype(str) == name, "arrival_s"].to_numpy(float)
            if len(a):
                edges = np.arange(0.0, a.max() + 60.0, 60.0)
                n, _ = np.histogram(a, bins=edges)
                ax2 = ax.twinx()
                ax2.step(edges[:-1] / per, n, where="post", color="tab:green", alpha=0.5, lw=1)
                ax2.set_ylabel("arrivals / min", color="tab:green")
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel(f"time ({unit})")
    return _save(fig, path)
