"""A disaggregated LLM service (prefill and decode pools) beside Philly training jobs on one
cluster, static vs autoscaled per pool, against the co-located service (see README.md): the
service's SLO attainment vs the training jobs' completion time. The Azure code trace (the
prefill-bound case), the Azure conversation trace, and long generations (the decode-bound
case: synthetic lengths, as no shipped trace has them)."""
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


CONV = ["services.code.workload.kind=conv"]  # the Azure conversation trace's hour (19,366 requests)
#: long generations, the decode-bound case: 3,600 requests at 4/s (15 min), prompts uniform in
#: 128-1,024 tokens, outputs in 1,024-4,096 (as reasoning models write; no shipped trace has
#: them), so that one prefill replica keeps up and one decode replica does not
LONG = ["~services.code.workload", "+services.code.workload={_target_: llmos_sim.workload.requests.SyntheticRequests, "
        "n: 3600, rate_per_s: 4.0, prompt_min: 128, prompt_max: 1024, output_min: 1024, output_max: 4096}"]
AUTO = [f"autoscaler.max_replicas={MAX}"]

VARIANTS = {  # label -> overrides
    "co-located static 2": STATIC + ["services.code.replicas=2"],
    "co-located static 4": STATIC + ["services.code.replicas=4"],
    "co-located autoscaled 2-4": ["services.code.replicas=2"] + AUTO,
    "disagg static 1P+1D": STATIC + disagg(1, 1),
    "disagg static 3P+1D": STATIC + disagg(3, 1),
    "disagg autoscaled 1P+1D to 4": disagg(1, 1) + AUTO,
    "disagg autoscaled, down 600 s": disagg(1, 1) + AUTO + ["autoscaler.down_idle_s=600"],
    "conv: disagg autoscaled 1P+1D to 4": CONV + disagg(1, 1) + AUTO,
    "long: co-located static 2": LONG + STATIC + ["services.code.replicas=2"],
    "long: co-located static 4": LONG + STATIC + ["services.code.replicas=4"],
    "long: disagg static 1P+1D": LONG + STATIC + disagg(1, 1),
    "long: disagg static 1P+3D": LONG + STATIC + disagg(1, 3),
    "long: disagg autoscaled 1P+1D to 4": LONG + disagg(1, 1) + AUTO,
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


def _pools(ax, traces: dict, runs: tuple, title: str) -> None:
    """Ready replicas per pool over time in the autoscaled runs ``runs`` (label, line style)."""
    end = 0.0
    for label, style in runs:
        pools = ready_per_pool(traces[label]["replicas"])
        t = pools["time_s"].to_numpy(float) / 60
        end = max(end, t.max())
        ax.step(t, pools["prefill"], where="post", color="tab:blue", ls=style, label=f"{label}: prefill ready")
        ax.step(t, pools["decode"] + 0.05, where="post", color="tab:red", ls=style, label=f"{label}: decode ready")
    ax.set_xlim(0, end)
    ax.set_xlabel("time (min)")
    ax.set_ylabel("replicas serving per pool")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)


def plot(df: pd.DataFrame, traces: dict, path: Path) -> Path:
    fig, ((a0, a1), (a2, a3)) = plt.subplots(2, 2, figsize=(15, 8))
    _pools(a0, traces, (("disagg autoscaled 1P+1D to 4", "-"), ("disagg autoscaled, down 600 s", "--")),
           "Azure code hour (prefill-bound), autoscaled per pool, beside 98 Philly jobs")
    _pools(a1, traces, (("long: disagg autoscaled 1P+1D to 4", "-"), ("conv: disagg autoscaled 1P+1D to 4", ":")),
           "long generations (decode-bound) and the Azure conversation hour, autoscaled per pool")
    code = ~df["run"].str.contains(":")
    tradeoff_scatter(a2, df[code])
    a2.set_title("Azure code hour", fontsize=9)
    tradeoff_scatter(a3, df[df["run"].str.startswith("long:")])
    a3.set_title("long generations (15 min at 4/s)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


if __name__ == "__main__":
    df, traces = run_variants(VARIANTS, run)
    write(df, HERE)
    plot(df, traces, HERE / "disagg.png")
    print(markdown(df))
