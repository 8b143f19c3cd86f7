"""A disaggregated LLM service (prefill and decode pools) beside Philly training jobs on one
cluster, static vs autoscaled per pool, against the co-located service (see README.md): the
service's SLO attainment vs the training jobs' completion time. The Azure code trace (the
prefill-bound case), the Azure conversation trace, and long generations (the decode-bound
case: synthetic lengths, as no shipped trace has them), the latter over several seeds (the
traces are replayed as is: a seed changes nothing in them)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from llmos_sim.compare import aggregate
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
#: seeds of the synthetic stream's runs (each seed draws other arrivals and lengths)
SEEDS = (0, 1, 2, 3, 4)

VARIANTS = {  # label -> overrides
    "co-located static 2": STATIC + ["services.code.replicas=2"],
    "co-located static 4": STATIC + ["services.code.replicas=4"],
    "co-located autoscaled 2-4": ["services.code.replicas=2"] + AUTO,
    "disagg static 1P+1D": STATIC + disagg(1, 1),
    "disagg static 3P+1D": STATIC + disagg(3, 1),
    "disagg autoscaled 1P+1D to 4": disagg(1, 1) + AUTO,
    "disagg autoscaled, down 600 s": disagg(1, 1) + AUTO + ["autoscaler.down_idle_s=600"],
    "conv: disagg autoscaled 1P+1D to 4": CONV + disagg(1, 1) + AUTO,
}
LONG_VARIANTS = {
    "long: co-located static 2": LONG + STATIC + ["services.code.replicas=2"],
    "long: co-located static 4": LONG + STATIC + ["services.code.replicas=4"],
    "long: disagg static 1P+1D": LONG + STATIC + disagg(1, 1),
    "long: disagg static 1P+3D": LONG + STATIC + disagg(1, 3),
    "long: disagg autoscaled 1P+1D to 4": LONG + disagg(1, 1) + AUTO,
}
#: the synthetic stream's runs: every configuration under every seed ("<label> seed <s>")
SEEDED = {f"{label} seed {s}": ov + [f"seed={s}"] for label, ov in LONG_VARIANTS.items() for s in SEEDS}


def run(label: str, overrides: list[str]) -> tuple[dict, dict]:
    cfg = compose(BASE + overrides + ["output.plots=false"])
    t0 = time.process_time()
    res = run_config(cfg)
    cpu = time.process_time() - t0
    s = res.summary
    reps = res.tables.get("replicas")
    ups = reps[(reps["event"] == "scale") & (reps["delta"] > 0)] if reps is not None else None
    row = {
        "run": label.split(" seed ")[0],
        "seed": int(cfg.seed),
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


METRICS = ("slo_attainment", "ttft_p90_s", "tpot_p90_ms", "service_gpu_h", "decode_ups", "train_jct_avg_s")


def over_seeds(seeded: pd.DataFrame) -> pd.DataFrame:
    """Per configuration of the synthetic stream: each metric's mean ± t-based 95 % half-width
    over the seeds (identical runs count once, :func:`llmos_sim.compare.aggregate`), then its
    range; a metric equal under every seed is that value alone."""
    agg = aggregate(seeded.drop(columns="cpu_s"), list(METRICS), by=["run"]).set_index("run")
    lo, hi = seeded.groupby("run", sort=False).min(), seeded.groupby("run", sort=False).max()
    rows = []
    for run_, a in agg.iterrows():
        row = {"run": run_, "seeds": int(a["n"]) if a["n"] == a["n_distinct"] else f"{a['n']:.0f} ({a['n_distinct']:.0f} distinct)"}
        for m in METRICS:
            low, high = lo.loc[run_, m], hi.loc[run_, m]
            row[m] = f"{low:.4g}" if low == high else f"{a[m]:.4g} ± {a[f'{m}_ci95']:.2g} ({low:.4g}–{high:.4g})"
        rows.append(row)
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, seeded: pd.DataFrame, traces: dict, path: Path) -> Path:
    fig, ((a0, a1), (a2, a3)) = plt.subplots(2, 2, figsize=(15, 8))
    _pools(a0, traces, (("disagg autoscaled 1P+1D to 4", "-"), ("disagg autoscaled, down 600 s", "--")),
           "Azure code hour (prefill-bound), autoscaled per pool, beside 98 Philly jobs")
    _pools(a1, traces, (("long: disagg autoscaled 1P+1D to 4 seed 0", "-"), ("conv: disagg autoscaled 1P+1D to 4", ":")),
           "long generations (decode-bound, seed 0) and the Azure conversation hour, autoscaled per pool")
    code = ~df["run"].str.contains(":")
    tradeoff_scatter(a2, df[code])
    a2.set_title("Azure code hour", fontsize=9)
    tradeoff_scatter(a3, seeded)
    a3.legend(fontsize=7, loc="center")  # (lower right, it would hide the 1P+1D points)
    a3.set_title(f"long generations (15 min at 4/s): {len(SEEDS)} seeds (small) and their mean (large)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


if __name__ == "__main__":
    df, traces = run_variants(VARIANTS, run)
    seeded, seeded_traces = run_variants(SEEDED, run)
    write(df.drop(columns="seed"), HERE)
    seeded.to_csv(HERE / "results_long_by_seed.csv", index=False)
    long = over_seeds(seeded)
    (HERE / "results_long.md").write_text(markdown(long))
    plot(df, seeded, {**traces, **seeded_traces}, HERE / "disagg.png")
    print(markdown(df.drop(columns="seed")))
    print(markdown(long))
