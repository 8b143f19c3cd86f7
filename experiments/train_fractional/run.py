"""Fractional-GPU packing on the Alibaba OpenB trace: sharing vs whole GPUs (see README.md). ~3 min."""
from __future__ import annotations

from pathlib import Path

from llmos_sim.experiments import bar_plot, run_grid, write

HERE = Path(__file__).resolve().parent

METRICS = ("jct_s_avg", "jct_s_p50", "jct_s_p99", "wait_s_avg", "wait_s_p99", "makespan_s", "gpu_hours",
           "utilisation")

if __name__ == "__main__":
    rows, extra = {}, {}
    for load in (100, 200, 400):
        for whole in (False, True):
            mode = "whole GPUs" if whole else "shared (gpu_milli)"
            rows[f"{mode} @{load}"] = [f"workload.load={load}", f"workload.whole_gpus={str(whole).lower()}"]
            extra[f"{mode} @{load}"] = {"mode": mode, "load": load}
    df = run_grid(rows, ["experiment=train_fractional"], metrics=METRICS, extra=extra).drop(columns=["run"])
    write(df, HERE)
    bar_plot(df, "load", ["jct_s_avg", "wait_s_avg", "gpu_hours"], HERE / "fractional.png",
             "Alibaba OpenB pods on 842 T4s: sharing vs whole GPUs", hue="mode")
    print(df.to_string(index=False))
