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

The run's 1-second engine samples (``timeseries.csv``: running, waiting, KV-cache usage,
prompt and generation throughput) are compared with the same quantities sampled from the
simulation (:func:`sim_timeseries`): a check of the scheduler and KV model on their own.

Usage::

    python experiments/serving_fidelity/fidelity.py            # evaluate the config's factors
    python experiments/serving_fidelity/fidelity.py --fit      # refit on even ids, report odd ids
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

from llmos_sim.fidelity import SERIES  # noqa: E402  (the engine series the fidelity command compares)
from llmos_sim.serving import simulate  # noqa: E402
from llmos_sim.workload.requests import DATA_DIR, VllmBenchmarkRequests  # noqa: E402

CONFIGS = ROOT / "configs"
RUN_DIR = DATA_DIR / "vllm_rtx4090_llama31_8b"
METRICS = ("ttft_s", "tpot_s", "e2e_s")
#: a request whose TPOT exceeds this decoded with a pause (preempted after its first token):
#: 1.2x the median TPOT of the run (30.8 ms measured), above every unpaused request's TPOT
PAUSED_TPOT_S = 0.036


#: dotted overrides applied to every composed config (``--set key=value``)
OVERRIDES: list[str] = []


def compose(cost: dict | None = None) -> OmegaConf:
    """The fidelity experiment's config, composed by hand (the same files Hydra composes),
    with :data:`OVERRIDES` applied."""
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
        "cost": OmegaConf.load(CONFIGS / "cost" / "roofline.yaml"),
    })
    cfg = OmegaConf.merge(cfg, {k: v for k, v in exp.items() if k not in ("defaults", "name")})
    if OVERRIDES:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(OVERRIDES))
    if cost:
        cfg.cost = OmegaConf.merge(cfg.cost, cost)
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


def run(cost: dict | None = None, result: bool = False):
    """Simulate with ``cost`` merged into the config's cost model: the per-request table and
    the summary (and the whole :class:`ServingResult` when ``result``, run without
    fast-forward so that the KV timeline is exact per iteration; request times are the same)."""
    cfg = compose(cost)
    if result:
        cfg.serving.fast_forward = False
    res = simulate(cfg, seed=0)
    t = compare(res.tables["requests"], measured())
    return (t, res.summary, res) if result else (t, res.summary)


def tpot_breakdown(t: pd.DataFrame, rows=None) -> dict:
    """Where the TPOT error comes from: requests split by whether their measured and their
    simulated TPOT show a pause (> :data:`PAUSED_TPOT_S`, i.e. preempted after the first
    token); per group its size, TPOT MAPE, mean signed error and share of the summed |error|."""
    t = t if rows is None else t.loc[rows]
    m, s_ = t["tpot_s"] > PAUSED_TPOT_S, t["sim_tpot_s"] > PAUSED_TPOT_S
    a = t["err_tpot_s"].abs()
    out = {}
    for name, mask in (("neither_paused", ~m & ~s_), ("both_paused", m & s_), ("only_measured_paused", m & ~s_),
                       ("only_sim_paused", ~m & s_)):
        out[name] = {"n": int(mask.sum()), "tpot_mape": float(a[mask].mean()) if mask.any() else float("nan"),
                     "mean_signed_err": float(t["err_tpot_s"][mask].mean()) if mask.any() else float("nan"),
                     "share_of_abs_err": float(a[mask].sum() / a.sum())}
    return out


def decode_regression(t: pd.DataFrame, res, rows) -> dict:
    """How TPOT depends on the batch, measured vs simulated: for the requests in ``rows`` that
    show no pause in either (TPOT <= :data:`PAUSED_TPOT_S`), the features of their decode
    window in the simulation (per iteration, time-weighted: sequences in the batch, context
    tokens held, in thousands; prefill tokens computed per output token) and a least-squares
    fit of the measured and of the simulated TPOT (ms) on them. A cost model of the right
    shape gives the simulated TPOT the measured coefficients. ``res`` must come from a run
    without fast-forward (one record per iteration)."""
    b, k, rq = res.tables["batches"], res.tables["kv"], res.tables["requests"].set_index("request")
    start = b["time_s"].to_numpy(float)
    end = start + b["duration_s"].to_numpy(float)
    ctx = k["token_bytes"].to_numpy(float) / float(res.extra["kv_capacity_bytes"]) * float(
        res.extra["kv_blocks_per_replica"]) * 16 / 1000  # thousands of tokens (16-token blocks)
    sel = t.loc[rows]
    sel = sel[(sel["tpot_s"] <= PAUSED_TPOT_S) & (sel["sim_tpot_s"] <= PAUSED_TPOT_S)]
    feats = []
    for i, r in sel.iterrows():
        m = (start >= rq.at[i, "first_token_s"]) & (end <= rq.at[i, "finish_s"])
        w = b["duration_s"].to_numpy(float)[m]
        feats.append([1.0, float(b["n_prefill_tokens"].to_numpy(float)[m].sum() / (r["output_tokens"] - 1)),
                      float((b["n_seqs"].to_numpy(float)[m] * w).sum() / w.sum()), float((ctx[m] * w).sum() / w.sum())])
    X = np.array(feats)
    out = {"n": int(len(sel)), "features": ["1", "prefill_tokens_per_output_token", "seqs_in_batch", "ctx_k_tokens"]}
    for name, y in (("measured", sel["tpot_s"].to_numpy(float) * 1000), ("simulated", sel["sim_tpot_s"].to_numpy(float) * 1000)):
        c = np.linalg.lstsq(X, y, rcond=None)[0]
        out[name] = {"coef_ms": [float(v) for v in c],
                     "r2": float(1 - ((y - X @ c) ** 2).sum() / ((y - y.mean()) ** 2).sum()),
                     "fit_mape": float((np.abs(X @ c - y) / y).mean())}
    out["sim_mape"] = float(sel["err_tpot_s"].abs().mean())
    return out


# -- the engine's 1-second samples ----------------------------------------------------------
def measured_timeseries() -> pd.DataFrame:
    """``timeseries.csv`` with ``sim_t``: its tick on the simulator's clock. Ticks count from
    the harness start (``meta.json`` ``started_at``); the simulator's 0 is the first request's
    send time, 0.09 s later."""
    ts = pd.read_csv(RUN_DIR / "timeseries.csv")
    meta = json.loads((RUN_DIR / "meta.json").read_text())
    start = datetime.datetime.fromisoformat(meta["started_at"].replace("Z", "+00:00")).timestamp()
    lag = float(VllmBenchmarkRequests().measured()["arrival_time"].min()) - start
    return ts.assign(sim_t=ts["t"] - lag)


def sim_timeseries(res, ticks: np.ndarray) -> pd.DataFrame:
    """The engine's samples from a simulation, at ``ticks`` (s, simulator clock), as vLLM
    reports them: ``running`` (sequences in the iteration in progress), ``waiting`` (arrived,
    not finished, not running), ``kv_cache_pct`` (100 · held blocks / all blocks, at the last
    iteration start), ``prompt_throughput`` (prompt tokens of the requests whose first token
    came in the second before the tick: vLLM counts a prompt once, at its first token) and
    ``gen_throughput`` (tokens emitted in that second; a fast-forwarded span's tokens spread
    evenly over it)."""
    b, k, rq = res.tables["batches"], res.tables["kv"], res.tables["requests"]
    start = b["time_s"].to_numpy(float)
    end = start + b["duration_s"].to_numpy(float)
    i = np.searchsorted(start, ticks, side="right") - 1
    ic = np.clip(i, 0, None)
    running = np.where((i >= 0) & (ticks < end[ic]), b["n_seqs"].to_numpy()[ic], 0)
    arrived = np.searchsorted(np.sort(rq["arrival_s"].to_numpy(float)), ticks, side="right")
    finished = np.searchsorted(np.sort(rq["finish_s"].to_numpy(float)), ticks, side="right")
    j = np.clip(np.searchsorted(k["time_s"].to_numpy(float), ticks, side="right") - 1, 0, None)
    total = float(res.extra["kv_blocks_per_replica"])
    kv = 100.0 * (1.0 - k["free_blocks"].to_numpy(float)[j] / total)
    kv = np.where((finished >= len(rq)) | (ticks < k["time_s"].min()), 0.0, kv)
    ft, pt = rq["first_token_s"].to_numpy(float), rq["prompt_tokens"].to_numpy(float)
    span, n_dec = b["n_iters"].to_numpy() > 1, b["n_decode_tokens"].to_numpy(float)
    dur = np.maximum(end - start, 1e-12)

    def decoded_by(x: float) -> float:  # decode tokens emitted by time x
        frac = np.where(span, np.clip((x - start) / dur, 0.0, 1.0), (x >= end).astype(float))
        return float((n_dec * frac).sum())

    prompt, gen = [], []
    for t in ticks:
        first = (ft > t - 1) & (ft <= t)
        prompt.append(pt[first].sum())
        gen.append(decoded_by(t) - decoded_by(t - 1) + first.sum())
    return pd.DataFrame({"running": running, "waiting": arrived - finished - running, "kv_cache_pct": kv,
                         "prompt_throughput": prompt, "gen_throughput": gen})


def timeseries_table(res) -> pd.DataFrame:
    """Measured and simulated samples side by side (``sim_<column>``), one row per tick."""
    ts = measured_timeseries()
    sim = sim_timeseries(res, ts["sim_t"].to_numpy(float))
    return pd.concat([ts.reset_index(drop=True), sim.add_prefix("sim_")], axis=1)


def timeseries_errors(ts: pd.DataFrame) -> dict:
    """Per sampled quantity: measured and simulated means, MAE, mean signed error (bias) and
    the correlation of the two series."""
    out = {}
    for c in SERIES:
        m, s_ = ts[c].to_numpy(float), ts[f"sim_{c}"].to_numpy(float)
        out[c] = {"mean_meas": float(m.mean()), "mean_sim": float(s_.mean()), "mae": float(np.abs(s_ - m).mean()),
                  "bias": float((s_ - m).mean()), "corr": float(np.corrcoef(m, s_)[0, 1])}
    return out


#: cost-model variants ``--fit`` can fit: the model class, the coarse grid per parameter and
#: the step of the finer grid around the coarse optimum (the fixed parameters stay as listed)
VARIANTS = {
    "roofline": ("llmos_sim.serving.cost.RooflineCost",
                 {"mfu": [0.7, 0.8, 0.85, 0.9, 0.95, 1.0], "mbu": [0.8, 0.85, 0.9, 0.95, 1.0],
                  "overhead_s": [0.0, 0.001, 0.002, 0.003, 0.004], "per_seq_s": [0.0]},
                 {"mfu": 0.025, "mbu": 0.025, "overhead_s": 0.0005}),
    "roofline_per_seq": ("llmos_sim.serving.cost.RooflineCost",
                         {"mfu": [0.8, 0.85, 0.9, 0.95, 1.0], "mbu": [0.85, 0.9, 0.95, 1.0],
                          "overhead_s": [0.0, 0.001, 0.002, 0.003], "per_seq_s": [0.0, 5e-5, 1e-4, 1.5e-4, 2e-4]},
                         {"mfu": 0.025, "mbu": 0.025, "overhead_s": 0.0005, "per_seq_s": 2.5e-5}),
    "operator": ("llmos_sim.serving.cost.OperatorRooflineCost",
                 {"mfu": [0.8, 0.85, 0.9, 0.95, 1.0], "mbu": [0.85, 0.9, 0.95, 1.0],
                  "overhead_s": [0.0, 0.001, 0.002, 0.003], "attn_mbu": [0.3, 0.4, 0.5, 0.6, 0.8], "per_seq_s": [0.0]},
                 {"mfu": 0.025, "mbu": 0.025, "overhead_s": 0.0005, "attn_mbu": 0.05}),
}
BOUNDS = {"mfu": (0.05, 1.0), "mbu": (0.05, 1.0), "attn_mbu": (0.05, 1.0), "overhead_s": (0.0, None), "per_seq_s": (0.0, None)}

_TRAIN = None  # the training rows, for the worker processes


def _init(train, overrides: list[str]) -> None:
    """A worker process's state (whatever the start method): the training rows, the overrides."""
    global _TRAIN
    _TRAIN = train
    OVERRIDES[:] = overrides


def _loss(c: dict) -> tuple[dict, dict]:
    t, _ = run(c)
    e = errors(t, _TRAIN)
    return c, {"loss": (e["ttft_s_mape"] + e["tpot_s_mape"] + e["e2e_s_mape"]) / 3,
               **{f"{k}_mape": e[f"{k}_mape"] for k in METRICS}}


def fit(train, variant: str = "roofline", jobs: int = 2) -> tuple[dict, pd.DataFrame]:
    """Fit the variant's parameters to the training rows only: its coarse grid, then a finer
    grid (the optimum ± one step) around the best, minimising the mean of the TTFT, TPOT and
    e2e MAPEs. Returns the best cost (with ``_target_``) and every point evaluated (training
    errors only)."""
    global _TRAIN
    target, coarse, step = VARIANTS[variant]
    _TRAIN = train
    rows = []

    def search(grid: dict) -> dict:
        keys = list(grid)
        cs = [{**dict(zip(keys, (round(float(v), 7) for v in vals))), "_target_": target}
              for vals in itertools.product(*(grid[k] for k in keys))]
        if jobs > 1:
            from multiprocessing import Pool
            with Pool(jobs, initializer=_init, initargs=(train, list(OVERRIDES))) as pool:
                res = pool.map(_loss, cs, chunksize=4)
        else:
            res = [_loss(c) for c in cs]
        rows.extend({**{k: v for k, v in c.items() if k != "_target_"}, **e} for c, e in res)
        c, e = min(res, key=lambda r: r[1]["loss"])
        print(f"  fit {variant}: {len(cs)} points, loss {e['loss']:.4f} at "
              f"{ {k: v for k, v in c.items() if k != '_target_'} }", flush=True)
        return c

    best = search(coarse)
    fine = {}
    for k, vals in coarse.items():
        if k in step:
            lo, hi = BOUNDS[k]
            fine[k] = sorted({min(max(best[k] + d * step[k], lo), hi if hi is not None else np.inf) for d in (-1, 0, 1)})
        else:
            fine[k] = vals
    best = search(fine)
    return best, pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fit", nargs="?", const="roofline", choices=sorted(VARIANTS),
                    help="refit a cost-model variant on the even requests (default: roofline)")
    ap.add_argument("--jobs", type=int, default=2, help="processes for --fit")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides, e.g. serving.async_scheduling=true")
    ap.add_argument("--out", default=str(HERE / "results"))
    a = ap.parse_args()
    OVERRIDES[:] = a.set
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meas = measured()
    even, odd = meas.index[meas.index % 2 == 0], meas.index[meas.index % 2 == 1]
    cost = None
    if a.fit:
        cost, grid = fit(even, a.fit, a.jobs)
        grid.drop_duplicates().sort_values("loss").to_csv(out / f"fit_grid_{a.fit}.csv", index=False)
        (out / "fitted_cost.json").write_text(json.dumps({"variant": a.fit, **cost}, indent=2))
    t, summ, res = run(cost, result=True)
    t.to_csv(out / "per_request.csv")
    ts = timeseries_table(res)
    ts.to_csv(out / "timeseries.csv", index=False)
    report = {"cost": cost or dict(compose().cost), "all": errors(t), "train_even": errors(t, even),
              "test_odd": errors(t, odd), "tpot_breakdown_all": tpot_breakdown(t),
              "tpot_breakdown_odd": tpot_breakdown(t, odd), "decode_regression_even": decode_regression(t, res, even),
              "timeseries": timeseries_errors(ts),
              "sim_summary": {k: summ[k] for k in ("n_preemptions", "makespan_s", "n_iterations")}}
    (out / "errors.json").write_text(json.dumps(report, indent=2, default=str))
    for name in ("all", "train_even", "test_odd"):
        e = report[name]
        print(f"{name:11s} " + "  ".join(f"{k}: MAPE {e[k + '_mape']:.1%} nMAE {e[k + '_nmae']:.1%}" for k in METRICS))
    print("sim:", report["sim_summary"], "measured makespan:", float((meas["e2e_s"] + meas["arrival_s"]).max()))
    for c, e in report["timeseries"].items():
        print(f"  {c:17s} measured mean {e['mean_meas']:8.1f}  sim {e['mean_sim']:8.1f}  MAE {e['mae']:7.1f}  "
              f"bias {e['bias']:+7.1f}  corr {e['corr']:.3f}")
    for g, e in report["tpot_breakdown_all"].items():
        print(f"  {g:21s} n {e['n']:3d}  TPOT MAPE {e['tpot_mape']:.1%}  share of |error| {e['share_of_abs_err']:.0%}")
    r_ = report["decode_regression_even"]
    print(f"  TPOT (ms) on [1, prefill tok/output tok, seqs, ctx k tokens], {r_['n']} unpaused even requests: "
          f"measured {np.round(r_['measured']['coef_ms'], 3).tolist()}  simulated {np.round(r_['simulated']['coef_ms'], 3).tolist()}")
    plot(t, out / "fidelity.png")
    from llmos_sim.fidelity import plot_series_frame

    plot_series_frame(ts, out / "timeseries.png",
                      "Engine state over time: vLLM 0.19 vs llmos_sim (Llama-3.1-8B, RTX 4090, 300 requests)",
                      "time since the run started (s); 1-second engine samples")


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
    plt.close(fig)


if __name__ == "__main__":
    main()
