"""Speed of every memory policy in steady state: alloc+free ops/s at 100, 10k, 100k live blocks.

For each policy and N: fill the pool with N live allocations, then time a loop of
"free a random live one, allocate a new one" (sizes log-uniform in [256 B, 64 KiB], fixed
seed; capacity = 2x the expected live bytes, so the pool is about half full). ops/s counts
the free and the allocate as one op each. One core, plain Python. Writes
``benchmarks/results/memory.csv``.

    python benchmarks/bench_memory.py            # full run (about 1 minute)
    python benchmarks/bench_memory.py --quick    # smaller op counts
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim.memtrace.policies import POLICY_NAMES, make_pool

LIVE = (100, 10_000, 100_000)
MIN_B, MAX_B = 256, 64 << 10
OVERRIDES = {"paged": {"block_bytes": 16 << 10}, "contiguous": {"max_len_bytes": MAX_B}}


def sizes(rng: np.random.Generator, n: int) -> list[int]:
    return np.exp(rng.uniform(np.log(MIN_B), np.log(MAX_B), n)).astype(np.int64).tolist()


def bench(name: str, n_live: int, n_iter: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mean = (MAX_B - MIN_B) / np.log(MAX_B / MIN_B)
    slot = MAX_B if name == "contiguous" else (16 << 10 if name == "paged" else mean)
    cap = int(2 * n_live * max(slot, mean)) + (64 << 20)
    pool = make_pool(name, cap, **OVERRIDES.get(name, {}))
    held = []
    for n in sizes(rng, n_live):
        a = pool.allocate(n)
        assert a is not None, f"{name}: setup allocation failed"
        held.append(a)
    new_sizes = sizes(rng, n_iter)
    victims = rng.integers(0, n_live, n_iter).tolist()
    alloc, free = pool.allocate, pool.free
    fails = 0
    t0 = time.perf_counter()
    for n, v in zip(new_sizes, victims):
        free(held[v])
        a = alloc(n)
        if a is None:  # keep N live: a failure re-allocates the smallest size (counted)
            fails += 1
            a = alloc(MIN_B)
        held[v] = a
    dt = time.perf_counter() - t0
    return {"policy": name, "live_blocks": n_live, "ops": 2 * n_iter, "seconds": dt,
            "ops_per_s": 2 * n_iter / dt, "failures": fails}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--policy", nargs="*", default=list(POLICY_NAMES))
    args = ap.parse_args()
    iters = {100: 200_000, 10_000: 200_000, 100_000: 50_000}
    if args.quick:
        iters = {k: v // 10 for k, v in iters.items()}
    rows = [bench(p, n, iters[n]) for p in args.policy for n in LIVE]
    df = pd.DataFrame(rows)
    table = df.pivot(index="policy", columns="live_blocks", values="ops_per_s").round(-3).astype(int)
    table.columns = [f"ops/s @{c} live" for c in table.columns]
    print(table.to_string())
    if df["failures"].any():
        print("\nfailures (re-allocated at the minimum size):")
        print(df[df["failures"] > 0][["policy", "live_blocks", "failures"]].to_string(index=False))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    df.to_csv(out / "memory.csv", index=False)
    print(f"\nwrote {out / 'memory.csv'}")


if __name__ == "__main__":
    main()
