"""Replay a trace through a pool and record the pool's stats after every operation."""
from __future__ import annotations

import pandas as pd

from llmos_sim.memtrace.trace import validate_trace
from llmos_sim.policies.memory.base import Allocation, MemoryPool

REPLAY_COLUMNS = (
    "time_s", "op", "id", "nbytes", "ok", "requested_bytes", "allocated_bytes", "reserved_bytes",
    "largest_free_bytes", "free_bytes", "internal_frag_bytes", "external_frag", "n_live", "n_failures",
)


def replay(trace: pd.DataFrame, pool: MemoryPool) -> pd.DataFrame:
    """Apply every row of ``trace`` to ``pool``; one output row per trace row.

    ``ok`` is False for a failed alloc (the pool returned ``None``) and for a free whose
    alloc failed or never happened; such frees are skipped, so a failure never corrupts
    the pool. Stats columns are the pool's :class:`PoolStats` right after the operation.
    """
    trace = validate_trace(trace)
    live: dict[int, Allocation] = {}
    out: list[tuple] = []
    for t, op, i, n in zip(trace["time_s"].tolist(), trace["op"].tolist(), trace["id"].tolist(), trace["nbytes"].tolist()):
        if op == "alloc":
            if i in live:  # re-use of a live id: the trace is wrong, say so
                raise ValueError(f"replay: id {i} allocated twice without a free (time_s={t})")
            a = pool.allocate(n, tag=i)
            ok = a is not None
            if ok:
                live[i] = a
        else:
            a = live.pop(i, None)
            ok = a is not None
            if ok:
                pool.free(a)
        s = pool.stats()
        out.append((t, op, i, n, ok, s.requested_bytes, s.allocated_bytes, s.reserved_bytes, s.largest_free_bytes,
                    s.free_bytes, s.internal_frag_bytes, s.external_frag, s.n_live, s.n_failures))
    return pd.DataFrame(out, columns=list(REPLAY_COLUMNS))


def summarize(result: pd.DataFrame) -> dict[str, float]:
    """One row of headline numbers for a replay result (bytes, fractions, counts)."""
    return {
        "peak_reserved_bytes": int(result["reserved_bytes"].max()) if len(result) else 0,
        "peak_allocated_bytes": int(result["allocated_bytes"].max()) if len(result) else 0,
        "peak_requested_bytes": int(result["requested_bytes"].max()) if len(result) else 0,
        "mean_external_frag": float(result["external_frag"].mean()) if len(result) else 0.0,
        "mean_internal_frag_bytes": float(result["internal_frag_bytes"].mean()) if len(result) else 0.0,
        "failures": int(((result["op"] == "alloc") & ~result["ok"]).sum()),
        "ops": int(len(result)),
    }
