"""Heterogeneity-aware (Gavel-style) vs unaware placement on a mixed-GPU cluster (see README.md)."""
from __future__ import annotations

from pathlib import Path

from llmos_sim.experiments import bar_plot, run_grid, write

HERE = Path(__file__).resolve().parent

METRICS = ("jct_s_avg", "jct_s_p50", "jct_s_p99", "wait_s_avg", "makespan_s", "gpu_hours", "ftf_rho_avg",
           "ftf_tenant_rho_max")
ROWS = {
    "unaware fifo+pack": ["scheduler=fifo_skip", "placement=pack"],
    "unaware fifo+random": ["scheduler=fifo_skip", "placement=random"],
    "gavel throughput": ["scheduler=gavel", "scheduler.affinity=${affinity}", "scheduler.objective=throughput"],
    "gavel max_min": ["scheduler=gavel", "scheduler.affinity=${affinity}", "scheduler.objective=max_min"],
}

if __name__ == "__main__":
    frames = []
    for load in (1.0, 2.0):
        rows = {f"{k} @{load:g}": v + [f"workload.load={load}"] for k, v in ROWS.items()}
        extra = {f"{k} @{load:g}": {"policy": k, "load": load} for k in ROWS}
        frames.append(run_grid(rows, ["experiment=train_hetero"], metrics=METRICS, extra=extra))
    import pandas as pd

    df = pd.concat(frames, ignore_index=True).drop(columns=["run"])
    write(df, HERE)
    bar_plot(df, "policy", ["jct_s_avg", "makespan_s", "gpu_hours"], HERE / "hetero.png",
             "H100/A100/V100/T4 x 32, Pollux workload-1 (bars: load 1, 2)", hue="load")
    print(df.to_string(index=False))
