"""Placement policies under a ring all-reduce communication model (see README.md)."""
from __future__ import annotations

from pathlib import Path

from llmos_sim.experiments import bar_plot, run_grid, write

HERE = Path(__file__).resolve().parent

PLACEMENTS = ["pack", "topology", "first_free", "random", "spread"]
SEEDS = [0, 1, 2]
METRICS = ("jct_s_avg", "jct_s_p50", "jct_s_p99", "wait_s_avg", "makespan_s", "gpu_hours", "utilisation")

if __name__ == "__main__":
    rows, extra = {}, {}
    for p in PLACEMENTS:
        for s in SEEDS:
            rows[f"{p}/s{s}"] = [f"placement={p}", f"seed={s}"]
            extra[f"{p}/s{s}"] = {"placement": p, "seed": s}
    df = run_grid(rows, ["experiment=train_placement"], metrics=METRICS, extra=extra)
    mean = df.groupby("placement", sort=False)[list(METRICS)].mean().reset_index()
    write(mean, HERE)
    df.to_csv(HERE / "results_by_seed.csv", index=False)
    bar_plot(mean, "placement", ["jct_s_avg", "jct_s_p99", "gpu_hours"], HERE / "placement.png",
             "16x8 A100, 4 switches, ring all-reduce: mean of 3 seeds")
    print(mean.to_string(index=False))
