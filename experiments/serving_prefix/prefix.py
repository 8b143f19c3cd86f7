"""Prefix caching and prefix-aware routing on the Mooncake conversation trace.

Question: on one hour of a production chat service (12,031 requests, mean prompt 12k tokens,
prefix block hashes over 512-token blocks), how much prompt does vLLM-style prefix caching
reuse, what does it do to TTFT, how does the hit rate grow with cache capacity (the Mooncake
paper reports up to ~50 % with enough cache), and does routing to the replica holding the
longest cached prefix beat round-robin and least-outstanding routing?

    python experiments/serving_prefix/prefix.py [--replicas 3] [--requests N]

Writes ``results/routing.csv`` (caching off/on × routers), ``results/capacity.csv`` (hit rate
against KV capacity, one replica) and ``results/prefix.png``.
"""
from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
from llmos_sim.run import compose  # noqa: E402
from llmos_sim.serving import simulate  # noqa: E402
from llmos_sim.workload.mooncake import MooncakeTrace  # noqa: E402

KEYS = ("prefix_hit_rate_tokens", "prefix_hit_rate_blocks", "prefix_host_hit_rate_blocks", "mean_ttft_ms", "median_ttft_ms", "p90_ttft_ms",
        "p99_ttft_ms", "mean_tpot_ms", "p99_itl_ms", "output_throughput", "request_throughput", "n_preemptions",
        "completed")


def cfg(router: str, caching: bool, replicas: int, n: int | None, kv_blocks: int | None = None,
        load_tokens: float | None = None, rate_scale: float = 1.0, host_gb: float | None = None):
    """The shipped experiment config (``experiment=serving_prefix``) with this run's overrides."""
    o = [f"router={router}", f"serving.prefix_caching={str(caching).lower()}", f"serving.replicas={replicas}",
         f"workload.max_requests={'null' if n is None else n}", f"workload.rate_scale={rate_scale}",
         f"serving.num_kv_blocks={'null' if kv_blocks is None else kv_blocks}",
         f"serving.host_kv_bytes={'null' if host_gb is None else int(host_gb * 1e9)}"]
    if load_tokens is not None:
        o.append(f"router.load_tokens={load_tokens}")
    return compose(["experiment=serving_prefix", *o])


def run(c) -> dict:
    t = time.process_time()
    r = simulate(c, seed=0)
    cpu = time.process_time() - t
    s = r.summary
    return {**{k: s[k] for k in KEYS}, "kv_blocks_per_replica": r.extra["kv_blocks_per_replica"],
            "sim_cpu_s": round(cpu, 2), "requests_per_cpu_s": round(len(r.tables["requests"]) / cpu)}


def lru_hit_rate(n: int | None, capacity_blocks: int) -> float:
    """Reference: the hash-block hit rate of one LRU cache of ``capacity_blocks`` 512-token
    blocks fed the trace's requests in order, each inserted as soon as it arrives (no
    concurrency, no compute): what the trace allows at that capacity."""
    reqs = MooncakeTrace(max_requests=n).requests()
    cache: OrderedDict = OrderedDict()
    hit = tot = 0
    for q in reqs:
        h, limit = q.prefix_hashes, (q.prompt_tokens - 1) // 512
        k = 0
        while k < min(len(h), limit) and h[k] in cache:
            k += 1
        hit += k
        tot += len(h)
        for x in h[: q.prompt_tokens // 512]:
            cache[x] = None
            cache.move_to_end(x)
        while len(cache) > capacity_blocks:
            cache.popitem(last=False)
    return hit / tot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--requests", type=int, default=None, help="first N requests (default: all 12,031)")
    ap.add_argument("--parts", default="routing,capacity,host", help="which tables to (re)compute")
    a = ap.parse_args()
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    parts = set(a.parts.split(","))

    if "routing" in parts:  # GPU memory only: caching off/on, three routers
        rows = []
        for label, router, caching, lt in [("round_robin, no caching", "round_robin", False, None),
                                           ("round_robin", "round_robin", True, None),
                                           ("least_outstanding", "least_outstanding", True, None),
                                           ("prefix_aware (load 2048)", "prefix_aware", True, 2048.0),
                                           ("prefix_aware (load 8192)", "prefix_aware", True, 8192.0)]:
            rows.append({"run": label, **run(cfg(router, caching, a.replicas, a.requests, load_tokens=lt))})
            print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(out / "routing.csv", index=False)

    if "capacity" in parts:
        # hit rate against capacity: one replica at a quarter of the rate (the order of
        # requests, which decides the hits, is the trace's), KV blocks of 16 tokens pinned
        caps = []
        for tokens in (100_000, 400_000, 1_000_000, 4_000_000, 16_000_000, 32_000_000):
            blocks = tokens // 16
            r = run(cfg("round_robin", True, 1, a.requests, kv_blocks=blocks, rate_scale=0.25))
            caps.append({"kv_tokens": tokens, "kv_blocks": blocks, **r,
                         "lru_reference": lru_hit_rate(a.requests, tokens // 512)})
            print(caps[-1], flush=True)
        pd.DataFrame(caps).to_csv(out / "capacity.csv", index=False)

    if "host" in parts:  # the GPU cache backed by a host-memory tier, per replica
        rows = []
        for gb in (0.0, 64.0, 256.0, 1024.0):
            for router, lt in (("round_robin", None), ("prefix_aware", 2048.0)):
                r = run(cfg(router, True, a.replicas, a.requests, load_tokens=lt, host_gb=gb))
                rows.append({"host_gb_per_replica": gb, "router": router, **r})
                print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(out / "host.csv", index=False)

    routing, capacity = pd.read_csv(out / "routing.csv"), pd.read_csv(out / "capacity.csv")
    host = pd.read_csv(out / "host.csv") if (out / "host.csv").exists() else None
    plot(routing, capacity, host, lru_hit_rate(a.requests, 1 << 40), out / "prefix.png", a.replicas)
    for t in (routing, capacity, host):
        if t is not None:
            print(t.to_string())


def plot(routing: pd.DataFrame, capacity: pd.DataFrame, host: pd.DataFrame | None, unbounded: float, path: Path,
         replicas: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4 if host is not None else 3, figsize=(21 if host is not None else 16, 4.6))
    x = capacity["kv_tokens"] / 1e6
    ax[0].plot(x, 100 * capacity["prefix_hit_rate_blocks"], "o-", label="simulated (hash blocks)")
    ax[0].plot(x, 100 * capacity["prefix_hit_rate_tokens"], "s--", label="simulated (tokens)")
    ax[0].plot(x, 100 * capacity["lru_reference"], ":", color="0.4", label="LRU over the trace (reference)")
    ax[0].axhline(100 * unbounded, color="tab:green", lw=1, label=f"unbounded cache: {100 * unbounded:.1f} %")
    ax[0].axhline(50, color="tab:red", lw=1, ls="--", label="Mooncake paper: up to ~50 %")
    ax[0].set_xscale("log")
    ax[0].set_xlabel("KV cache capacity (million tokens, one replica)")
    ax[0].set_ylabel("prefix cache hit rate (%)")
    ax[0].set_ylim(0, 60)
    ax[0].grid(True, alpha=0.3)
    ax[0].legend(fontsize=7)
    ax[0].set_title("hit rate against cache capacity")
    lab = routing["run"].str.replace(", ", "\n").str.replace(" (", "\n(")
    ax[1].bar(lab, 100 * routing["prefix_hit_rate_blocks"].fillna(0))
    ax[1].set_ylabel("hit rate (% of hash blocks)")
    ax[1].set_title(f"routing over {replicas} replicas: hit rate")
    w = 0.38
    pos = range(len(routing))
    ax[2].bar([p - w / 2 for p in pos], routing["median_ttft_ms"] / 1e3, w, label="median")
    ax[2].bar([p + w / 2 for p in pos], routing["p90_ttft_ms"] / 1e3, w, label="p90")
    ax[2].set_xticks(list(pos), lab)
    ax[2].set_ylabel("TTFT (s)")
    ax[2].set_title("TTFT")
    ax[2].legend(fontsize=8)
    for a_ in ax[1:3]:
        a_.tick_params(axis="x", labelsize=7)
        a_.grid(True, axis="y", alpha=0.3)
    if host is not None:
        for router, g in host.groupby("router"):
            ax[3].plot(g["host_gb_per_replica"], 100 * g["prefix_hit_rate_blocks"], "o-", label=f"{router}: hit rate")
        ax[3].set_xscale("symlog", linthresh=64)
        ax[3].set_xlabel("host-memory KV tier per replica (GB)")
        ax[3].set_ylabel("hit rate (% of hash blocks)")
        ax[3].axhline(100 * unbounded, color="tab:green", lw=1)
        ax[3].set_ylim(0, 60)
        ax[3].grid(True, alpha=0.3)
        t2 = ax[3].twinx()
        for router, g in host.groupby("router"):
            t2.plot(g["host_gb_per_replica"], g["mean_ttft_ms"] / 1e3, "x:", label=f"{router}: mean TTFT")
        t2.set_ylabel("mean TTFT (s, dotted)")
        h1, l1 = ax[3].get_legend_handles_labels()
        h2, l2 = t2.get_legend_handles_labels()
        ax[3].legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
        ax[3].set_title(f"{replicas} replicas with a host tier")
    fig.suptitle("Mooncake conversation trace (12,031 requests, 1 h), Llama-3.1-8B on H100, chunked prefill, paged KV")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
