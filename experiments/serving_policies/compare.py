"""Batching policy × KV memory policy on the Azure conversation trace.

Question: on one H100 serving Llama-3.1-8B, how do static, Orca, vLLM (v0) continuous and
chunked-prefill batching compare in latency, throughput and KV use, with a paged KV cache
versus a contiguous reservation per request (each request reserves its own final length —
a lower bound on pre-vLLM waste)?

    python experiments/serving_policies/compare.py [--requests 4000] [--rate-scale 2.0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
from llmos_sim.run import compose  # noqa: E402
from llmos_sim.serving import simulate  # noqa: E402


def cfg(batching: str, memory: str, n: int, rate_scale: float, kv_blocks: int):
    """One H100 serving Llama-3.1-8B on the Azure conversation trace, composed as the command line would."""
    return compose(["mode=serving", "workload=azure_conv", f"workload.max_requests={n}",
                    f"workload.rate_scale={rate_scale}", f"batching={batching}", "router=round_robin",
                    f"memory={memory}", "model=llama31_8b", "gpu=h100", f"serving.num_kv_blocks={kv_blocks}"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rate-scale", type=float, default=2.0)
    ap.add_argument("--kv-blocks", type=int, default=4000, help="64k tokens: a loaded 24-40 GB-class cache")
    a = ap.parse_args()
    rows = []
    for batching in ("static", "orca", "continuous", "chunked_prefill"):
        for memory in ("paged", "contiguous"):
            r = simulate(cfg(batching, memory, a.requests, a.rate_scale, a.kv_blocks), seed=0)
            s = r.summary
            rows.append({"batching": batching, "memory": memory, **{k: s[k] for k in (
                "n_finished", "n_failed", "throughput_tok_s", "goodput_req_s", "slo_attainment", "ttft_s_p50",
                "ttft_s_p99", "tpot_s_p50", "tpot_s_p99", "e2e_s_p50", "n_preemptions", "kv_util_mean")}})
            print(rows[-1], flush=True)
    t = pd.DataFrame(rows)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    t.to_csv(out / "summary.csv", index=False)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for a_, col, title in zip(ax, ("ttft_s_p50", "tpot_s_p50", "throughput_tok_s"),
                              ("median TTFT (s)", "median TPOT (s)", "output tokens/s")):
        t.pivot(index="batching", columns="memory", values=col).plot.bar(ax=a_, rot=0)
        a_.set_title(title)
        if col == "ttft_s_p50":
            a_.set_yscale("log")
    fig.suptitle(f"Azure conv (first {a.requests} requests, x{a.rate_scale} rate), Llama-3.1-8B on one H100, "
                 f"{a.kv_blocks} KV blocks")
    fig.tight_layout()
    fig.savefig(out / "policies.png", dpi=110)
    print(t.to_string())


if __name__ == "__main__":
    main()
