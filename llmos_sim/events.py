"""The append-only event log: the single source of truth of a run.

Every table, metric and plot is a pure function of this log (see :mod:`llmos_sim.metrics`).
Records are plain tuples ``(time_s, kind, subject, data)`` appended in the order they happen;
their position is the run's sequence number, which breaks ties in time deterministically.

- ``kind`` is one of the string constants below.
- ``subject`` is the id of what the event is about (a job, a request, a device).
- ``data`` is a small tuple whose layout is fixed per kind (``FIELDS``).

Appending a tuple is the cheapest thing Python can do per event, which keeps a million-job
run fast; columns are built once, at the end, by :meth:`EventLog.frame`.
"""
from __future__ import annotations

from typing import Any, Iterator

import pandas as pd

# job life cycle (the seed's five steps: receive, allocate & schedule, preprocess, run, output)
ARRIVE = "arrive"  # data: (gpus, work_flops, gpu_milli, tenant)
START = "start"  # data: (devices tuple, share_milli, rate_flops_s)
FINISH = "finish"  # data: ()
PREEMPT = "preempt"  # data: (devices tuple, done_flops so far)
RESIZE = "resize"  # data: (old devices, new devices)
FAIL = "fail"  # data: (reason,)
REJECT = "reject"  # a decision the engine could not apply; data: (reason,)
# memory
MEM_ALLOC = "mem_alloc"  # subject: device; data: (owner, offset, nbytes, requested, stats...)
MEM_FREE = "mem_free"  # subject: device; data: (owner, offset, nbytes, requested, stats...)
MEM_FAIL = "mem_fail"  # subject: device; data: (owner, requested, stats...)
# serving (request streams); subject: request id
REQ_ARRIVE = "req_arrive"  # data: (service, prompt_tokens, output_tokens)
REQ_SCHEDULE = "req_schedule"  # first time the request enters a batch; data: (replica,)
REQ_FIRST_TOKEN = "req_first_token"  # data: (replica,)
REQ_FINISH = "req_finish"  # data: (replica,)
REQ_PREEMPT = "req_preempt"  # data: (replica, mode)
REQ_FAIL = "req_fail"  # data: (reason,)
BATCH = "batch"  # subject: replica; data: (n_prefill_tokens, n_decode_tokens, n_seqs, duration_s, kv_used_bytes)
# a run of n_iters pure-decode iterations of an unchanged batch, fast-forwarded in one step;
# token counts and duration are totals over the run, kv_used_bytes its end value
BATCH_SPAN = "batch_span"  # subject: replica; data: (n_iters, n_prefill_tokens, n_decode_tokens, n_seqs, duration_s, kv_used_bytes)
KV_SAMPLE = "kv_sample"  # subject: replica; data: (used_bytes, token_bytes, capacity_bytes, free_blocks)
# real execution (torch backend): one record per finished run segment; subject: job id;
# times are wall seconds since the run started (perf_counter in the worker); status is
# "done" | "cancelled" | "failed"; matmul_n is the operand size used (smaller than calibrated
# when the job's allocation could not hold the calibrated size); cpu_s is the CPU time of the
# worker threads while computing (on a CPU device, cpu_s / (end - start) < threads means other
# processes took the cores)
MEASURED = "measured"  # data: (segment, devices, wall_start_s, wall_end_s, done_flops, achieved_flops_s, setup_s, status, matmul_n, cpu_s)
# engine
SCHEDULE = "schedule"  # a scheduling pass; data: (n_queued, n_running)
END = "end"  # the run stopped; data: (reason,)

#: names of the ``data`` fields per kind, used to build typed tables
FIELDS: dict[str, tuple[str, ...]] = {
    ARRIVE: ("gpus", "work_flops", "gpu_milli", "tenant"),
    START: ("devices", "share_milli", "rate_flops_s"),
    FINISH: (),
    PREEMPT: ("devices", "done_flops"),
    RESIZE: ("old_devices", "devices"),
    FAIL: ("reason",),
    REJECT: ("reason",),
    MEM_ALLOC: ("owner", "offset", "nbytes", "requested", "pool_allocated", "pool_reserved",
                "pool_requested", "pool_largest_free"),
    MEM_FREE: ("owner", "offset", "nbytes", "requested", "pool_allocated", "pool_reserved",
               "pool_requested", "pool_largest_free"),
    MEM_FAIL: ("owner", "requested", "pool_allocated", "pool_reserved", "pool_requested",
               "pool_largest_free"),
    REQ_ARRIVE: ("service", "prompt_tokens", "output_tokens"),
    REQ_SCHEDULE: ("replica",),
    REQ_FIRST_TOKEN: ("replica",),
    REQ_FINISH: ("replica",),
    REQ_PREEMPT: ("replica", "mode"),
    REQ_FAIL: ("reason",),
    BATCH: ("n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s", "kv_used_bytes"),
    BATCH_SPAN: ("n_iters", "n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s", "kv_used_bytes"),
    KV_SAMPLE: ("used_bytes", "token_bytes", "capacity_bytes", "free_blocks"),
    MEASURED: ("segment", "devices", "wall_start_s", "wall_end_s", "done_flops", "achieved_flops_s", "setup_s",
               "status", "matmul_n", "cpu_s"),
    SCHEDULE: ("n_queued", "n_running"),
    END: ("reason",),
}


class EventLog:
    """Append-only list of ``(time_s, kind, subject, data)`` records."""

    __slots__ = ("records",)

    def __init__(self) -> None:
        self.records: list[tuple[float, str, Any, tuple]] = []

    def emit(self, time_s: float, kind: str, subject: Any, data: tuple = ()) -> None:
        """Append one record. The hot path: keep it this small."""
        self.records.append((time_s, kind, subject, data))

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[tuple[float, str, Any, tuple]]:
        return iter(self.records)

    def of(self, *kinds: str) -> list[tuple[int, float, Any, tuple]]:
        """``(seq, time_s, subject, data)`` of the records of the given kinds, in order."""
        ks = set(kinds)
        return [(i, t, s, d) for i, (t, k, s, d) in enumerate(self.records) if k in ks]

    def frame(self, kind: str) -> pd.DataFrame:
        """One kind's records as a typed table: ``seq, time_s, subject`` + its data fields."""
        cols = FIELDS.get(kind, ())
        rows = [(i, t, s, *d) for i, (t, k, s, d) in enumerate(self.records) if k == kind]
        names = ["seq", "time_s", "subject", *cols]
        if rows and len(rows[0]) != len(names):
            names = ["seq", "time_s", "subject", *[f"f{j}" for j in range(len(rows[0]) - 3)]]
        return pd.DataFrame.from_records(rows, columns=names)

    def table(self) -> pd.DataFrame:
        """The whole log, one row per record, data kept as a string (for the ``events`` table)."""
        recs = self.records
        if not recs:
            return pd.DataFrame({"seq": [], "time_s": [], "kind": [], "subject": [], "data": []})
        # a list comprehension per column (``zip(*recs)`` builds one 4-tuple per record first)
        raw = [r[3] for r in recs]
        data = list(map(repr, raw))
        if not all(raw):  # no data: an empty string
            data = [x if d else "" for x, d in zip(data, raw)]
        return pd.DataFrame(
            {
                "seq": range(len(recs)),
                "time_s": [r[0] for r in recs],
                "kind": [r[1] for r in recs],
                "subject": list(map(str, [r[2] for r in recs])),
                "data": data,
            }
        )
