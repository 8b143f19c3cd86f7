"""A disaggregated LLM service (prefill and decode pools) beside Philly training jobs on one
cluster, static vs autoscaled per pool, against the co-located service (see README.md): the
service's SLO attainment vs the training jobs' completion time."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from llmos_sim.experiments import markdown, run_variants, service_columns, tradeoff_scatter, write
from llmos_sim.metrics.plots import _save, plt
from llmos_sim.run import compose, run_config
from llmos_sim.serving.cluster import ready_per_pool

HERE = Path(__file__).resolve().parent
BASE = ["experiment=shared_autoscale"]  # the same cluster, trace, jobs, scheduler and SLOs
MAX = 4  # autoscaler.max_replicas: both pools together for a disaggregated service
STATIC = ["services.code.autoscaler=null"]


def disagg(p: int, d: int) -> list[str]:
    return ["topology=disaggregated", f"topology.prefill.replicas={p}", f"topology.decode.replicas={d}"]


VARIANTS = {  # label -> overrides
    "co-located static 2": STATIC + ["services.code.replicas=2"],
    "co-located static 4": STATIC + ["services.code.replicas=4"],
    "co-located autoscaled 2-4": ["services.code.replicas=2", f"autoscaler.max_replicas={MAX}"],
    "disagg static 1P+1D": STATIC + disagg(1, 1),
    "disagg static 3P+1D": STATIC + disagg(3, 1),
    "disagg autoscaled 1P+1D to 4": disagg(1, 1) + [f"autoscaler.max_replicas={MAX}"],
    "disagg autoscaled, down 600 s": disagg(1, 1) + [f"autoscaler.max_replicas={MAX}", "autoscaler.down_idle_s=600"],
}


def run(label: str, overrides: list[str]) -> tuple[dict, dict]:
    cfg = compose(BASE + overrides + ["output.plots=false"])
    t0 = time.process_time()
    res = run_config(cfg)
    cpu = time.process_time() - t0
    s = res.summary
    reps = res.tables.get("replicas")
    ups = reps[(reps["event"] == "scale") & (reps["delta"] > 0)] if reps is not None else None
    row = {
        "run": label,
        **service_columns(res),
        "prefill_ups": int((ups["pool"] == "prefill").sum()) if ups is not None else 0,
        "decode_ups": int((ups["pool"] == "decode").sum()) if ups is not None else 0,
        "scale_ups": len(ups) if ups is not None else 0,
        "train_jct_avg_s": s["jct_s_avg"],
        "train_wait_avg_s": s["wait_s_avg"],
        "cpu_s": cpu,
    }
    print(f"{label:>30}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)),
          file=sys.stderr, flush=True)
    return row, {"replicas": reps}


def plot(df: pd.DataFrame, traces: dict, path: Path) -> Path:
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(8, 7.5))
    end = 0.0
    for label, style in (("disagg autoscaled 1P+1D to 4", "-"), ("disagg autoscaled, down 600 s", "--")):
        pools = ready_per_pool(traces[label]["replicas"])
        t = pools["time_s"].to_numpy(float) / 60
        end = max(end, t.max())
        a0.step(t, pools["prefill"], where="post", color="tab:blue", ls=style, label=f"{label}: prefill ready")
        a0.step(t, pools["decode"] + 0.05, where="post", color="tab:red", ls=style, label=f"{label}: decode ready")
    a0.set_xlim(0, end)
    a0.set_xlabel("time (min)")
    a0.set_ylabel("replicas serving per pool")
    a0.set_title("Disaggregated service, autoscaled per pool (Azure code hour beside 98 Philly jobs)", fontsize=9)
    a0.legend(fontsize=7)
    a0.grid(True, alpha=0.3)
    tradeoff_scatter(a1, df)
    return _save(fig, path)


if __name__ == "__main__":
    df, traces = run_variants(VARIANTS, run)
    write(df, HERE)
    plot(df, traces, HERE / "disagg.png")
    print(markdown(df))
