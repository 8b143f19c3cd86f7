"""Read the serving_disagg sweep (run.sh) and write its tables and plot into results/.

    python experiments/serving_disagg/analyze.py [sweep dir]

For every run (a folder with ``summary.json`` under ``<sweep>/<trace>/<setup>/``): the request
rate, SLO attainment (the share of requests that finished within both the TTFT and the TPOT
SLO — the run's ``slo_met`` column, recomputed here with the SLOs scaled by 0.5, 1 and 2),
goodput, TTFT/TPOT percentiles and the mean KV transfer time. Per trace and setup, the goodput
as DistServe defines it: the highest request rate at which at least 90 % of the requests
meet their SLOs — where the attainment first falls below 90 %, interpolated linearly between
the two rates swept around it (0 when the lowest rate misses; the highest rate swept when none does).

The link sweep (``<sweep>/link/``: 2P+2D on conv at three link bandwidths) goes to
``results/link.csv``. Writes ``results/runs.csv``, ``results/goodput.csv``, ``results/link.csv``
and ``results/disagg.png``, and prints the tables as markdown.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

HERE = Path(__file__).resolve().parent
SCALES = (0.5, 1.0, 2.0)
SETUPS = ("colocated_continuous", "colocated_chunked", "disagg_1p3d", "disagg_2p2d", "disagg_3p1d")
LABELS = {"colocated_continuous": "co-located, continuous (vLLM v0)", "colocated_chunked": "co-located, chunked prefill",
          "disagg_1p3d": "disaggregated 1P+3D", "disagg_2p2d": "disaggregated 2P+2D", "disagg_3p1d": "disaggregated 3P+1D"}
TARGET = 0.9  # DistServe's goodput: the rate at which 90 % of the requests meet their SLOs
SCAN_RATE = {"conv": 8.0, "code": 3.0}  # rate_scale of the SLO-scale panel


def attainment(req: pd.DataFrame, ttft_s: float, tpot_s: float) -> float:
    ok = req["finish_s"].notna() & (req["ttft_s"] <= ttft_s) & (req["tpot_s"].fillna(0.0) <= tpot_s)
    return float(ok.mean())


def load(sweep: Path) -> tuple[pd.DataFrame, dict]:
    rows, reqs = [], {}
    for summ in sorted(sweep.glob("*/*/*/summary.json")):
        run = summ.parent
        trace, setup = run.parts[-3], run.parts[-2]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        s = json.loads(summ.read_text())
        req = pd.read_parquet(run / "requests.parquet")
        ttft, tpot = float(cfg["serving"]["slo_ttft_s"]), float(cfg["serving"]["slo_tpot_s"])
        span = req["arrival_s"].max() - req["arrival_s"].min()
        rs = float(cfg["workload"]["rate_scale"])
        row = {"trace": trace, "setup": setup, "rate_scale": rs, "rate_req_s": round(len(req) / span, 2),
               "link_gbit_s": (8e-9 * float(cfg["topology"]["link"]["bw_bytes_s"])
                               if cfg["topology"]["kind"] == "disaggregated" else float("nan")),
               "slo_ttft_s": ttft, "slo_tpot_s": tpot}
        for k in SCALES:
            row[f"attain_x{k:g}"] = attainment(req, k * ttft, k * tpot)
        done = req[req["finish_s"].notna()]
        row.update({"goodput_req_s": s["goodput_req_s"], "throughput_req_s": s["throughput_req_s"],
                    "ttft_p50_s": done["ttft_s"].quantile(0.5), "ttft_p99_s": done["ttft_s"].quantile(0.99),
                    "tpot_p50_ms": 1e3 * done["tpot_s"].quantile(0.5), "tpot_p99_ms": 1e3 * done["tpot_s"].quantile(0.99),
                    "itl_p99_ms": s["p99_itl_ms"], "kv_transfer_ms": 1e3 * s.get("kv_transfer_s_mean", float("nan")),
                    "preemptions": s["n_preemptions"], "failed": s["n_failed"]})
        rows.append(row)
        reqs[(trace, setup, rs)] = (req, ttft, tpot)
    if not rows:
        raise SystemExit(f"no runs under {sweep} (run experiments/serving_disagg/run.sh first)")
    df = pd.DataFrame(rows).sort_values(["trace", "setup", "rate_scale", "link_gbit_s"], key=lambda c: c.map(
        {s: i for i, s in enumerate(SETUPS)}) if c.name == "setup" else c).reset_index(drop=True)
    return df, reqs


def goodput(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (trace, setup), g in df.groupby(["trace", "setup"], sort=False):
        row = {"trace": trace, "setup": setup}
        rate = g["rate_req_s"].to_numpy()
        for k in SCALES:
            a = g[f"attain_x{k:g}"].to_numpy()
            n = len(a) if (a >= TARGET).all() else int(np.argmin(a >= TARGET))  # rates up to the first miss
            if n == 0:
                gp = 0.0
            elif n == len(a):
                gp = float(rate[-1])  # (at least: no rate swept misses)
            else:  # where the attainment crosses 90 %, linearly between the two rates around it
                gp = float(rate[n - 1] + (a[n - 1] - TARGET) / (a[n - 1] - a[n]) * (rate[n] - rate[n - 1]))
            row[f"goodput_x{k:g}_req_s"] = round(gp, 1)
        out.append(row)
    return pd.DataFrame(out)


def plot(df: pd.DataFrame, reqs: dict, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    scales = np.geomspace(0.25, 4, 17)
    for i, trace in enumerate(("conv", "code")):
        ax = axes[i, 0]
        for setup in SETUPS:
            g = df[(df.trace == trace) & (df.setup == setup)]
            if len(g):
                ax.plot(g["rate_req_s"], 100 * g["attain_x1"], "o-" if setup.startswith("disagg") else "s--",
                        label=LABELS[setup], ms=4)
        ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
        g0 = df[df.trace == trace].iloc[0]
        ax.set(xlabel="request rate (req/s)", ylabel="SLO attainment (%)", ylim=(0, 102),
               title=f"Azure {trace}: TTFT ≤ {g0.slo_ttft_s:g} s and TPOT ≤ {1e3 * g0.slo_tpot_s:g} ms")
        ax.grid(alpha=0.3)
        ax = axes[i, 1]
        for setup in SETUPS:
            key = (trace, setup, SCAN_RATE[trace])
            if key in reqs:
                req, ttft, tpot = reqs[key]
                ax.plot(scales, [100 * attainment(req, k * ttft, k * tpot) for k in scales],
                        "o-" if setup.startswith("disagg") else "s--", label=LABELS[setup], ms=3)
        rate = df[(df.trace == trace) & (df.rate_scale == SCAN_RATE[trace])]["rate_req_s"]
        ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="SLO scale (both SLOs × this)", ylabel="SLO attainment (%)", ylim=(0, 102),
               title=f"Azure {trace} at {rate.iloc[0]:.1f} req/s: tighter and looser SLOs" if len(rate) else trace)
        ax.set_xticks([0.25, 0.5, 1, 2, 4], ["0.25", "0.5", "1", "2", "4"])
        ax.minorticks_off()
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Llama-3.1-8B on 4 H100s: co-located vs prefill/decode disaggregated (simulated)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> None:
    sweep = Path(argv[1]) if len(argv) > 1 else Path("outputs/multirun/serving_disagg")
    df, reqs = load(sweep)
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    link = df[df.trace == "link"].drop(columns=["trace"])
    df = df[df.trace != "link"]
    df.round(4).to_csv(res / "runs.csv", index=False)
    link.round(4).to_csv(res / "link.csv", index=False)
    gp = goodput(df)
    gp.to_csv(res / "goodput.csv", index=False)
    plot(df, reqs, res / "disagg.png")
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else str(x)  # noqa: E731
    cols = ["rate_req_s", "link_gbit_s", "attain_x0.5", "attain_x1", "tpot_p50_ms", "tpot_p99_ms", "itl_p99_ms",
            "kv_transfer_ms"]
    for name, t in (("goodput (req/s at which >= 90 % meet the SLOs)", gp), ("link (conv, 2P+2D)", link[cols]),
                    ("runs", df)):
        print(f"\n{name}\n")
        print("| " + " | ".join(t.columns) + " |")
        print("|" + "---|" * len(t.columns))
        for r in t.itertuples(index=False):
            print("| " + " | ".join(fmt(x) for x in r) + " |")


if __name__ == "__main__":
    main(sys.argv)
