"""Allocation patterns for memory-pool policies: a trace format, readers (CSV, PyTorch
memory snapshots), seeded generators, and a replay driver that records per-op pool stats.

Standalone use: ``python -m llmos_sim.memtrace --help``.
"""
from llmos_sim.memtrace.generate import kv_cache_trace, transformer_training_trace
from llmos_sim.memtrace.replay import REPLAY_COLUMNS, replay, summarize
from llmos_sim.memtrace.snapshot import load_snapshot, read_snapshot
from llmos_sim.memtrace.trace import (
    TRACE_COLUMNS, TraceFormatError, TraceOp, make_trace, read_csv, validate_trace, write_csv,
)
from llmos_sim.memtrace.policies import POLICY_NAMES, make_pool

__all__ = [
    "TRACE_COLUMNS", "REPLAY_COLUMNS", "TraceFormatError", "TraceOp", "make_trace", "read_csv",
    "validate_trace", "write_csv", "load_snapshot", "read_snapshot", "transformer_training_trace",
    "kv_cache_trace", "replay", "summarize", "make_pool", "POLICY_NAMES",
]
