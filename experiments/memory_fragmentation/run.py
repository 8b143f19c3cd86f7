"""How much memory does each pool policy waste on realistic allocation patterns?

Replays two traces through every policy in ``configs/memory/`` and writes, next to this
file: ``results.csv`` (one row per trace x policy), ``timeline_<trace>.png`` (requested,
allocated and reserved bytes over the trace, one panel per policy) and
``fragmentation.png`` (peak reserved / peak requested and mean external fragmentation).

    python experiments/memory_fragmentation/run.py

Capacity per trace = 1.15 x the trace's peak live requested bytes (the ideal pool's peak),
so a policy fails where its rounding or fragmentation costs more than 15 %.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from llmos_sim.memtrace import POLICY_NAMES, kv_cache_trace, make_pool, replay, summarize  # noqa: E402
from llmos_sim.memtrace import transformer_training_trace  # noqa: E402

HERE = Path(__file__).resolve().parent
HEADROOM = 1.15
GiB = 1 << 30


def traces() -> dict[str, pd.DataFrame]:
    """The two patterns, fixed seeds."""
    return {
        "training": transformer_training_trace(layers=12, hidden=2048, seq=1024, batch=4, dtype_bytes=2,
                                               steps=4, seed=0),
        "kv_cache": kv_cache_trace(n_requests=1500, arrival_rate_per_s=20.0, mean_prompt_tokens=512,
                                   mean_output_tokens=256, max_len_tokens=2048, kv_bytes_per_token=16384,
                                   seed=0),
    }


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (floats to 3 places) without optional dependencies."""
    fmt = [lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt[0](v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main() -> pd.DataFrame:
    rows, results = [], {}
    for tname, trace in traces().items():
        peak = int(replay(trace, make_pool("ideal", 1 << 62))["requested_bytes"].max())
        cap = int(HEADROOM * peak)
        for pname in POLICY_NAMES:
            res = replay(trace, make_pool(pname, cap))
            results[tname, pname] = res
            rows.append({"trace": tname, "policy": pname, "capacity_GiB": cap / GiB, **summarize(res)})
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "results.csv", index=False)

    show = df.assign(
        peak_reserved_GiB=df["peak_reserved_bytes"] / GiB,
        peak_allocated_GiB=df["peak_allocated_bytes"] / GiB,
        peak_requested_GiB=df["peak_requested_bytes"] / GiB,
    )[["trace", "policy", "capacity_GiB", "peak_reserved_GiB", "peak_allocated_GiB", "peak_requested_GiB",
       "mean_external_frag", "failures", "ops"]]
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(show.to_string(index=False))
    (HERE / "results.md").write_text(markdown_table(show))

    for tname in traces():
        n = len(POLICY_NAMES)
        cols = 4
        fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(16, 3.2 * ((n + cols - 1) // cols)),
                                 sharex=True, sharey=True)
        for ax, pname in zip(axes.flat, POLICY_NAMES):
            r = results[tname, pname]
            x = range(len(r))
            ax.plot(x, r["reserved_bytes"] / GiB, label="reserved", lw=1.6, color="tab:red")
            ax.plot(x, r["allocated_bytes"] / GiB, label="allocated", lw=1.2, color="tab:blue")
            ax.plot(x, r["requested_bytes"] / GiB, label="requested", lw=1.0, color="black", ls="--")
            cap = df[(df.trace == tname) & (df.policy == pname)]["capacity_GiB"].iloc[0]
            ax.axhline(cap, color="grey", lw=0.8, ls=":")
            fails = int(((r["op"] == "alloc") & ~r["ok"]).sum())
            ax.set_title(f"{pname}" + (f"  ({fails} failed allocs)" if fails else ""), fontsize=10)
            ax.grid(alpha=0.3)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("operation #")
        for ax in axes[:, 0]:
            ax.set_ylabel("GiB")
        axes.flat[0].legend(loc="upper left", fontsize=8)
        fig.suptitle(f"{tname} trace: requested / allocated / reserved over time (dotted: capacity)", fontsize=12)
        fig.tight_layout()
        fig.savefig(HERE / f"timeline_{tname}.png", dpi=90)
        plt.close(fig)

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 5))
    w = 0.4
    for k, tname in enumerate(traces()):
        d = df[df.trace == tname].set_index("policy").loc[list(POLICY_NAMES)]
        xs = [i + (k - 0.5) * w for i in range(len(d))]
        ax1.bar(xs, d["peak_reserved_bytes"] / d["peak_requested_bytes"], w, label=tname)
        ax2.bar(xs, d["mean_external_frag"], w, label=tname)
        n_alloc = (traces()[tname]["op"] == "alloc").sum()
        ax3.bar(xs, 100 * d["failures"] / n_alloc, w, label=tname)
    for ax in (ax1, ax2, ax3):
        ax.set_xticks(range(len(POLICY_NAMES)), POLICY_NAMES, rotation=40, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    ax1.axhline(1.0, color="black", lw=0.8)
    ax1.axhline(HEADROOM, color="grey", lw=0.8, ls=":")
    ax1.set_ylabel("peak reserved / peak requested")
    ax1.set_title("memory overhead (dotted: capacity)")
    ax2.set_ylabel("mean external fragmentation\n1 - largest free / total free")
    ax2.set_title("external fragmentation")
    ax3.set_ylabel("failed allocations (% of allocs)")
    ax3.set_title("failures at capacity = 1.15 x peak request")
    fig.tight_layout()
    fig.savefig(HERE / "fragmentation.png", dpi=90)
    plt.close(fig)
    return df


if __name__ == "__main__":
    main()
