"""FIFO vs SJF vs SRTF vs LAS vs 2D-LAS under rising load (see README.md). ~2 min on 2 cores."""
from __future__ import annotations

from pathlib import Path

from llmos_sim.experiments import bar_plot, run_grid, write

HERE = Path(__file__).resolve().parent

POLICIES = ["fifo", "sjf", "srtf", "las", "tiresias"]
LOADS = [1.0, 2.0, 3.0]

if __name__ == "__main__":
    rows, extra = {}, {}
    for load in LOADS:
        for p in POLICIES:
            label = f"{p}@{load:g}"
            rows[label] = [f"scheduler={p}", f"workload.load={load}"]
            extra[label] = {"scheduler": p, "load": load}
    df = run_grid(rows, ["experiment=train_policies"], extra=extra)
    write(df, HERE)
    bar_plot(df, "load", ["jct_s_avg", "jct_s_p50", "jct_s_p99", "n_preemptions"], HERE / "jct_vs_load.png",
             "Philly VC 6c71a0 on 64 A100: JCT vs load", hue="scheduler",
             log=("jct_s_avg", "jct_s_p50", "jct_s_p99", "n_preemptions"))
    print(df.to_string(index=False))
