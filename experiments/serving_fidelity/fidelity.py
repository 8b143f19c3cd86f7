"""Fidelity of the serving simulator against a real vLLM 0.19 run (Llama-3.1-8B, one RTX 4090).

Question: replaying the run's 300 requests with the engine's own settings, how close do the
simulated per-request TTFT, TPOT and end-to-end latency come to what was measured?

Measured side (``requests.jsonl``): ``arrival_time`` is the client's send time (wall clock);
``queued_ts``/``first_token_ts``/``last_token_ts`` are the server's monotonic clock. The two
clocks are aligned by the smallest ``queued_ts − arrival_time`` over all requests (i.e. the
fastest request's HTTP + tokenisation time counts as zero). Then, per request:

- start     = arrival_time + offset (the client-measured start, on the server clock)
- TTFT      = first_token_ts − start
- TPOT      = (last_token_ts − first_token_ts) / (output_toks − 1)
- e2e       = last_token_ts − start

The simulator replays ``arrival_time`` relative to the first request, so it sees the same
start; it does not model the front end (HTTP, tokenisation: 0–0.2 s here, 0.03 s on average).

Usage::

    python experiments/serving_fidelity/fidelity.py            # evaluate the config's factors
    python experiments/serving_fidelity/fidelity.py --fit      # refit on even ids, report odd ids
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from llmos_sim.serving import simulate  # noqa: E402
from llmos_sim.workload.requests import VllmBenchmarkRequests  # noqa: E402

CONFIGS = ROOT / "configs"
METRICS = ("ttft_s", "tpot_s", "e2e_s")


def compose(cost: dict | None = None) -> OmegaConf:
    """The fidelity experiment's config, composed by hand (the same files Hydra composes)."""
    exp = OmegaConf.load(CONFIGS / "experiment" / "fidelity_vllm_4090.yaml")
    cfg = OmegaConf.create({
        "mode": "serving",
        "workload": OmegaConf.load(CONFIGS / "workload" / "vllm_rtx4090.yaml"),
        "batching": OmegaConf.load(CONFIGS / "batching" / "chunked_prefill.yaml"),
        "router": OmegaConf.load(CONFIGS / "router" / "round_robin.yaml"),
        "memory": OmegaConf.load(CONFIGS / "memory" / "paged.yaml"),
        "model": OmegaConf.load(CONFIGS / "model" / "llama31_8b.yaml"),
        "gpu": OmegaConf.load(CONFIGS / "gpu" / "rtx4090.yaml"),
        "serving": OmegaConf.load(CONFIGS / "serving" / "default.yaml"),
    })
    cfg = OmegaConf.merge(cfg, {k: v for k, v in exp.items() if k not in ("defaults", "name")})
    if cost:
        cfg.serving.cost = OmegaConf.merge(cfg.serving.cost, cost)
    return cfg


def measured() -> pd.DataFrame:
    """Per-request measured TTFT, TPOT, e2e (seconds), client start aligned as documented."""
    m = VllmBenchmarkRequests().measured()
    offset = float((m["queued_ts"] - m["arrival_time"]).min())
    start = m["arrival_time"] + offset
    out = pd.DataFrame({
        "request_id": m["request_id"], "prompt_tokens": m["input_toks"], "output_tokens": m["output_toks"],
        "arrival_s": m["arrival_time"] - m["arrival_time"].min(),
        "frontend_s": m["queued_ts"] - start,
        "ttft_s": m["first_token_ts"] - start,
        "tpot_s": (m["last_token_ts"] - m["first_token_ts"]) / (m["output_toks"] - 1),
        "e2e_s": m["last_token_ts"] - start,
    })
    # the loader sorts by arrival (stable) and numbers requests 0..n-1 in that order
    out = out.iloc[np.argsort(out["arrival_s"].to_numpy(), kind="stable")].reset_index(drop=True)
    out.index.name = "request"
    return out


def compare(sim_req: pd.DataFrame, meas: pd.DataFrame) -> pd.DataFrame:
    """Per-request table: measured, simulated, relative error for each metric."""
    s = sim_req.set_index("request")
    t = meas.copy()
    for k in METRICS:
        t[f"sim_{k}"] = s[k].reindex(t.index).to_numpy()
        t[f"err_{k}"] = (t[f"sim_{k}"] - t[k]) / t[k]
    return t


def errors(t: pd.DataFrame, rows=None) -> dict[str, float]:
    """MAPE (mean |relative error|), MAE (s) and MAE / mean measured, per metric."""
    t = t if rows is None else t.loc[rows]
    out = {}
    for k in METRICS:
        out[f"{k}_mape"] = float(t[f"err_{k}"].abs().mean())
        out[f"{k}_mae_s"] = float((t[f"sim_{k}"] - t[k]).abs().mean())
        out[f"{k}_nmae"] = out[f"{k}_mae_s"] / float(t[k].mean())
        out[f"{k}_mean_meas"] = float(t[k].mean())
        out[f"{k}_mean_sim"] = float(t[f"sim_{k}"].mean())
    return out


def run(cost: dict | None = None) -> tuple[pd.DataFrame, dict]:
    res = simulate(compose(cost), seed=0)
    return compare(res.tables["requests"], measured()), res.summary


def fit(train) -> dict:
    """Fit mfu, mbu and overhead_s to the training rows (grid, then a finer grid around the
    best), minimising the mean of the TTFT, TPOT and e2e MAPEs. ``per_seq_s`` stays 0."""
    def loss(c):
        t, _ = run(c)
        e = errors(t, train)
        return (e["ttft_s_mape"] + e["tpot_s_mape"] + e["e2e_s_mape"]) / 3

    def search(mfus, mbus, ovs):
        best = None
        for mfu in mfus:
            for mbu in mbus:
                for ov in ovs:
                    c = {"mfu": round(float(mfu), 4), "mbu": round(float(mbu), 4), "overhead_s": round(float(ov), 5),
                         "per_seq_s": 0.0}
                    l_ = loss(c)
                    if best is None or l_ < best[0]:
                        best = (l_, c)
        print(f"  fit: loss {best[0]:.4f} at {best[1]}", flush=True)
        return best[1]

    c = search(np.arange(0.5, 1.001, 0.1), np.arange(0.75, 0.951, 0.05), np.arange(0.0, 0.0041, 0.001))
    return search(np.clip(c["mfu"] + np.array([-0.05, 0, 0.05]), 0.05, 1.0),
                  np.clip(c["mbu"] + np.array([-0.025, 0, 0.025]), 0.05, 1.0),
                  np.clip(c["overhead_s"] + np.array([-0.0005, 0, 0.0005]), 0.0, None))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", action="store_true", help="refit efficiencies on even requests")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meas = measured()
    even, odd = meas.index[meas.index % 2 == 0], meas.index[meas.index % 2 == 1]
    cost = None
    if a.fit:
        cost = fit(even)
        (out / "fitted_cost.json").write_text(json.dumps(cost, indent=2))
    t, summ = run(cost)
    t.to_csv(out / "per_request.csv")
    report = {"cost": cost or dict(compose().serving.cost), "all": errors(t), "train_even": errors(t, even),
              "test_odd": errors(t, odd), "sim_summary": {k: summ[k] for k in ("n_preemptions", "makespan_s", "n_iterations")}}
    (out / "errors.json").write_text(json.dumps(report, indent=2, default=str))
    for name in ("all", "train_even", "test_odd"):
        e = report[name]
        print(f"{name:11s} " + "  ".join(f"{k}: MAPE {e[k + '_mape']:.1%} nMAE {e[k + '_nmae']:.1%}" for k in METRICS))
    print("sim:", report["sim_summary"], "measured makespan:", float((meas["e2e_s"] + meas["arrival_s"]).max()))
    plot(t, out / "fidelity.png")


def plot(t: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    for a_, k, unit in zip(ax, METRICS, ("s", "ms", "s")):
        f = 1000 if unit == "ms" else 1
        a_.scatter(t[k] * f, t[f"sim_{k}"] * f, s=8, alpha=0.6)
        lo, hi = 0, max(t[k].max(), t[f"sim_{k}"].max()) * f * 1.05
        a_.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        a_.set_xlabel(f"measured {k[:-2]} ({unit})")
        a_.set_ylabel(f"simulated ({unit})")
        a_.set_title(f"{k[:-2].upper()}: MAPE {t[f'err_{k}'].abs().mean():.1%}")
    a_ = ax[3]
    a_.plot(t["arrival_s"], t["ttft_s"], ".", ms=3, label="measured TTFT")
    a_.plot(t["arrival_s"], t["sim_ttft_s"], ".", ms=3, label="simulated TTFT")
    a_.set_xlabel("arrival (s)")
    a_.set_ylabel("TTFT (s)")
    a_.legend()
    fig.suptitle("llmos_sim vs vLLM 0.19: Llama-3.1-8B on one RTX 4090, 300 requests")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
