"""Standalone pool replay: ``python -m llmos_sim.memtrace [--trace FILE | --generate KIND] ...``.

Replays one trace through one or more memory policies (``configs/memory/*.yaml``) and
prints the summary table; ``--out DIR`` also writes per-op stats as ``<policy>.csv``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from llmos_sim.memtrace.generate import kv_cache_trace, transformer_training_trace
from llmos_sim.memtrace.policies import POLICY_NAMES, make_pool
from llmos_sim.memtrace.replay import replay, summarize
from llmos_sim.memtrace.snapshot import read_snapshot
from llmos_sim.memtrace.trace import TraceFormatError, read_csv


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(prog="python -m llmos_sim.memtrace", description=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="trace CSV, or a PyTorch memory snapshot (.pickle/.json)")
    src.add_argument("--generate", choices=["transformer", "kv"], help="use a generated trace")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--policy", nargs="*", default=list(POLICY_NAMES), help=f"of {', '.join(POLICY_NAMES)}")
    ap.add_argument("--capacity-bytes", type=int, default=None,
                    help="pool capacity (default: 1.25 x the trace's peak live requested bytes)")
    ap.add_argument("--out", type=Path, default=None, help="folder for per-op stats CSVs")
    args = ap.parse_args(argv)

    if args.trace:
        p = Path(args.trace)
        try:
            trace = read_csv(p) if p.suffix == ".csv" else read_snapshot(p)
        except (TraceFormatError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
    elif args.generate == "transformer":
        trace = transformer_training_trace(seed=args.seed)
    else:
        trace = kv_cache_trace(seed=args.seed)
    cap = args.capacity_bytes or int(1.25 * replay(trace, make_pool("ideal", 1 << 62))["requested_bytes"].max())
    rows = []
    for name in args.policy:
        res = replay(trace, make_pool(name, cap))
        rows.append({"policy": name, **summarize(res)})
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            res.to_csv(args.out / f"{name}.csv", index=False)
    table = pd.DataFrame(rows)
    print(f"capacity_bytes={cap}  ops={len(trace)}")
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
