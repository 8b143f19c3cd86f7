"""Static (min, max) vs autoscaled replicas of an LLM service sharing a cluster with Philly
training jobs (see README.md): SLO attainment of the service vs training JCT. ~10 CPU-s."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim.experiments import markdown, run_variants, service_columns, tradeoff_scatter, write
from llmos_sim.metrics.plots import _save, plt
from llmos_sim.run import compose, run_config

HERE = Path(__file__).resolve().parent
BASE = ["experiment=shared_autoscale"]
MIN, MAX = 1, 4  # services.code.replicas (the floor) and autoscaler.max_replicas in the config

VARIANTS = {  # label -> overrides
    f"static {MIN}": ["services.code.autoscaler=null", f"services.code.replicas={MIN}"],
    f"static {MAX}": ["services.code.autoscaler=null", f"services.code.replicas={MAX}"],
    f"autoscaled {MIN}-{MAX}": [],
    f"autoscaled {MIN}-{MAX}, fifo": ["scheduler=fifo"],
    f"autoscaled {MIN}-{MAX}, down 600 s": ["autoscaler.down_idle_s=600"],
    # the service's own replicas load their weights when its job starts too (a cold start)
    f"static {MAX}, cold start": ["services.code.autoscaler=null", f"services.code.replicas={MAX}",
                                  "services.code.provision_floor=true"],
    f"autoscaled {MIN}-{MAX}, cold floor": ["services.code.provision_floor=true"],
}


def run(label: str, overrides: list[str]) -> tuple[dict, dict]:
    cfg = compose(BASE + overrides + ["output.plots=false"])
    t0 = time.process_time()
    res = run_config(cfg)
    cpu = time.process_time() - t0
    s, jobs = res.summary, res.tables["jobs"]
    svc = jobs[jobs["tenant"].astype(str).str.startswith("service:")]
    reps = res.tables.get("replicas")
    row = {
        "run": label,
        **service_columns(res),
        "max_ready": int(reps["n_ready"].max()) if reps is not None else int(svc["n_devices"].sum()),
        "scale_ups": int(((reps["event"] == "scale") & (reps["delta"] > 0)).sum()) if reps is not None else 0,
        "train_jct_avg_s": s["jct_s_avg"],
        "train_jct_p50_s": s["jct_s_p50"],
        "train_wait_avg_s": s["wait_s_avg"],
        "cpu_s": cpu,
    }
    print(f"{label:>24}: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)),
          file=sys.stderr, flush=True)
    return row, {"replicas": reps, "requests": res.tables["requests"]}


def plot(df: pd.DataFrame, traces: dict, path: Path) -> Path:
    fig, (a0, a1, a2) = plt.subplots(3, 1, figsize=(8, 9))
    req = traces[f"autoscaled {MIN}-{MAX}"]["requests"]
    a = req["arrival_s"].to_numpy(float) / 60
    for width, style in ((1.0, dict(color="tab:green", alpha=0.35, lw=1)), (5.0, dict(color="tab:green", lw=2))):
        edges = np.arange(0.0, a.max() + width, width)
        a0.step(edges[:-1], np.histogram(a, bins=edges)[0] / width, where="post", **style,
                label=f"per {width:g}-min bin")
    a0.set_ylabel("requests / min")
    a0.legend(fontsize=7)
    a0.set_title("Azure code trace, one hour as shipped: the service's load", fontsize=9)
    styles = iter([dict(lw=2.2, color="tab:blue"), dict(lw=1.2, ls="--", color="tab:red"),
                   dict(lw=1.2, ls="-.", color="tab:purple"), dict(lw=1.0, ls=":", color="tab:orange")])
    for label, tr in traces.items():
        reps = tr["replicas"]
        if reps is None:
            if "cold" in label:  # (the same count as its warm run, from its ready time)
                continue
            n = int(label.split()[-1])
            a1.hlines(n, 0, edges[-1], colors="0.6", linestyles=":", label=label)
        else:
            a1.step(reps["time_s"].to_numpy(float) / 60, reps["n_ready"], where="post", label=f"{label}: ready",
                    **next(styles))
    a1.set_ylabel("replicas serving")
    a1.set_xlabel("time (min)")
    a1.legend(fontsize=7)
    for ax in (a0, a1):
        ax.set_xlim(0, edges[-1])
        ax.grid(True, alpha=0.3)
    tradeoff_scatter(a2, df)
    return _save(fig, path)


if __name__ == "__main__":
    df, traces = run_variants(VARIANTS, run)
    write(df, HERE)
    plot(df, traces, HERE / "autoscale.png")
    print(markdown(df))
