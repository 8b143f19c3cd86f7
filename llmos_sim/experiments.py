"""The package's experiment driver (used by ``experiments/train_*/run.py``).

Runs a grid of Hydra override lists through ``llmos_sim.run.compose`` + ``run_config``,
adds per-tenant fairness (which needs the job list: re-drawn from the same seed stream, so
identical), and writes ``results.csv``, ``results.md`` and a plot into the experiment folder.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import pandas as pd
from hydra.utils import instantiate

from llmos_sim.metrics import training_summary
from llmos_sim.run import compose, rngs, run_config

DEFAULT_METRICS = ("jct_s_avg", "jct_s_p50", "jct_s_p99", "wait_s_avg", "slowdown_avg", "makespan_s",
                   "utilisation", "n_preemptions", "gpu_hours", "jain_slowdown", "ftf_rho_avg", "ftf_tenant_rho_max")


def run_one(overrides: Sequence[str]) -> dict:
    """One run; its summary with fairness per tenant added."""
    cfg = compose(list(overrides) + ["output.plots=false", "engine.log_memory=false"])
    t0 = time.perf_counter()
    res = run_config(cfg)
    wall = time.perf_counter() - t0
    jobs = instantiate(cfg.workload).jobs(rngs(int(cfg.seed))["workload"])
    cl = res.cluster
    s = training_summary(res.tables["jobs"], res.tables["timeline"], cl.n_devices,
                         mean_flops=cl.total_flops / cl.n_devices, tenants={j.id: j.tenant for j in jobs})
    s["wall_s"] = wall
    return s


def run_grid(rows: dict[str, Sequence[str]], base: Sequence[str], metrics: Sequence[str] = DEFAULT_METRICS,
             extra: dict[str, dict] | None = None) -> pd.DataFrame:
    """``rows``: label → overrides (added to ``base``). Returns one row per label."""
    out = []
    for label, ov in rows.items():
        s = run_one(list(base) + list(ov))
        row = {"run": label, **(extra or {}).get(label, {}), **{m: s.get(m) for m in metrics}, "wall_s": s["wall_s"]}
        print(f"{label:>28}: " + ", ".join(f"{m}={s.get(m):.4g}" for m in metrics[:4]), file=sys.stderr, flush=True)
        out.append(row)
    return pd.DataFrame(out)


def service_columns(res) -> dict:
    """A shared-cluster run's service columns: SLO attainment, p90 TTFT (s) and TPOT (ms), and
    the device-hours of the service's jobs (its own and every replica job it added)."""
    s, jobs = res.summary, res.tables["jobs"]
    svc = jobs[jobs["tenant"].astype(str).str.startswith("service:")]
    return {"slo_attainment": s["serving_slo_attainment"], "ttft_p90_s": s["serving_p90_ttft_ms"] / 1e3,
            "tpot_p90_ms": s["serving_p90_tpot_ms"], "service_gpu_h": float(svc["device_s"].sum()) / 3600}


def run_variants(variants: dict[str, Sequence[str]], run) -> tuple[pd.DataFrame, dict]:
    """``run(label, overrides) -> (row, trace)`` for each variant: the rows as a frame, the
    traces by label."""
    rows, traces = [], {}
    for label, ov in variants.items():
        row, traces[label] = run(label, ov)
        rows.append(row)
    return pd.DataFrame(rows), traces


def tradeoff_scatter(ax, df: pd.DataFrame) -> None:
    """Each run of a shared-cluster experiment as a point: the training jobs' mean JCT (min)
    against the service's SLO attainment, labelled with the service's device-hours. A run
    with several rows (seeds) shows each as a small point and their mean as a large one,
    labelled with the mean device-hours."""
    markers = iter("osD^v<>")
    for run, g in df.groupby("run", sort=False):
        x, y, marker = g["train_jct_avg_s"] / 60, g["slo_attainment"], next(markers)
        label = f"{run} ({g['service_gpu_h'].mean():.{1 if len(g) == 1 else 2}f} service GPU-h)"
        if len(g) == 1:
            ax.scatter(x, y, s=45, marker=marker, alpha=0.8, label=label)
            continue
        dots = ax.scatter(x, y, s=14, marker=marker, alpha=0.5)
        ax.scatter(x.mean(), y.mean(), s=60, marker=marker, color=dots.get_facecolor()[0][:3], edgecolor="k",
                   label=label)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("training jobs: mean JCT (min)")
    ax.set_ylabel("service SLO attainment")
    ax.set_ylim(0, 1.05)
    ax.grid(True, alpha=0.3)


def markdown(df: pd.DataFrame) -> str:
    """A GitHub table (no tabulate dependency); floats to 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write(df: pd.DataFrame, folder: Path) -> None:
    df.to_csv(folder / "results.csv", index=False)
    (folder / "results.md").write_text(markdown(df))


def bar_plot(df: pd.DataFrame, x: str, metrics: Sequence[str], path: Path, title: str, hue: str | None = None,
             log: Sequence[str] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    for ax, m in zip(axes if len(metrics) > 1 else [axes], metrics):
        if hue:
            piv = df.pivot(index=x, columns=hue, values=m)
            if pd.api.types.is_numeric_dtype(df[x]):
                piv.plot(kind="line", marker="o", ax=ax)
            else:
                piv.plot(kind="bar", ax=ax, rot=30)
        else:
            ax.bar(df[x].astype(str), df[m])
            ax.tick_params(axis="x", rotation=45)
        if m in log:
            ax.set_yscale("log")
        ax.set_title(m)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
