"""Export a run as a Chrome / Perfetto trace (``trace.json``), and device segments for Gantt charts.

Open ``trace.json`` in https://ui.perfetto.dev or ``chrome://tracing``. Layout:

- process "devices": one track (thread) per device; each job is a slice ``job <id>`` over the
  time it held that device (a preempted or resized job has several slices; ``args.end`` says
  how the slice ended: finish, preempt, resize, fail, end-of-run);
- process "memory": counters ``allocated GB`` / ``reserved GB`` summed over devices (from the
  ``memory`` table);
- process "replicas" (serving runs): one track per replica with each batch (or fast-forwarded
  span of decode iterations) as a slice, and a ``KV used`` counter per replica.

Trace time is simulated time in whole microseconds; each slice's start and end are rounded
once, so slices that follow each other on a track never overlap by rounding. Enabled per run by ``output.trace=true``
(``python -m llmos_sim ... output.trace=true``); :func:`write_trace` works on any run's tables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from llmos_sim.events import parse_data

_SEG_KINDS = ("start", "preempt", "finish", "resize", "fail", "end")


def _devices(data: Any, key: str, legacy: int) -> tuple:
    """The device list ``key`` of an events-table ``data`` cell (JSON; field ``legacy`` of the
    tuple ``repr`` older tables hold)."""
    d = parse_data(data)
    devs = d.get(key, d.get(f"f{legacy}", ()))
    return tuple(devs) if isinstance(devs, (list, tuple)) else ()


def device_segments(events: pd.DataFrame | None, jobs: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """One row per (job, device, interval) a job held a device: ``job, device, start_s, end_s, end``.

    Built from the ``events`` table (start / resize / preempt / finish / fail records), so a
    preempted job has one segment per stint; without events, from the ``jobs`` table (first
    start to finish on the last device set). ``None`` when neither is usable (e.g. serving runs).
    """
    if events is not None and len(events) and {"kind", "subject", "data", "time_s"} <= set(events.columns):
        ev = events[events["kind"].isin(_SEG_KINDS)]
        open_: dict[str, tuple[float, tuple]] = {}
        rows: list[tuple] = []
        end_t = float(events["time_s"].max())
        for t, kind, subj, data in zip(ev["time_s"].to_numpy(float), ev["kind"], ev["subject"], ev["data"]):
            if kind == "start":
                open_[subj] = (t, _devices(data, "devices", 0))
            elif kind in ("preempt", "finish", "fail", "resize") and subj in open_:
                t0, devs = open_.pop(subj)
                rows += [(subj, int(dv), t0, t, kind) for dv in devs]
                if kind == "resize":
                    open_[subj] = (t, _devices(data, "devices", 1) or devs)
        for subj, (t0, devs) in open_.items():
            rows += [(subj, int(dv), t0, end_t, "end") for dv in devs]
        if rows:
            seg = pd.DataFrame(rows, columns=["job", "device", "start_s", "end_s", "end"])
            return seg.sort_values(["device", "start_s"], kind="stable").reset_index(drop=True)
    if jobs is not None and len(jobs) and {"devices", "start_s", "finish_s", "job_id"} <= set(jobs.columns):
        rows = []
        end_t = float(np.nanmax(jobs[["start_s", "finish_s"]].to_numpy(float))) if len(jobs) else 0.0
        for j, devs, t0, t1 in zip(jobs["job_id"], jobs["devices"], jobs["start_s"], jobs["finish_s"]):
            if isinstance(devs, str):  # tables of earlier versions: "0,1,2"
                devs = [int(d) for d in devs.split(",") if d]
            if devs is None or not len(devs) or not np.isfinite(t0):
                continue
            end = "finish" if np.isfinite(t1) else "end"
            rows += [(str(j), int(d), float(t0), float(t1) if np.isfinite(t1) else end_t, end) for d in devs]
        if rows:
            return pd.DataFrame(rows, columns=["job", "device", "start_s", "end_s", "end"])
    return None


def _us(t_s: float) -> int:
    """A time in whole microseconds (the trace's unit)."""
    return round(float(t_s) * 1e6)


def _slice(t0_s: float, t1_s: float) -> dict:
    """``ts`` and ``dur`` of a slice from its boundaries, each rounded once: a slice ending where
    the next begins ends on the same microsecond, and rounding is monotone, so slices that do
    not overlap in time never overlap in the trace."""
    ts = _us(t0_s)
    return {"ts": ts, "dur": max(_us(t1_s) - ts, 0)}


def trace_events(tables: Mapping[str, pd.DataFrame], name: str = "run", max_counter_points: int = 20_000) -> dict:
    """The trace as a Chrome trace-event JSON object (``{"traceEvents": [...], ...}``)."""
    ev: list[dict] = []
    meta = lambda pid, tid, what, label: ev.append(  # noqa: E731
        {"ph": "M", "pid": pid, "tid": tid, "name": what, "args": {"name": label}})
    seg = device_segments(tables.get("events"), tables.get("jobs"))
    if seg is not None and len(seg):
        meta(1, 0, "process_name", "devices")
        for d in sorted(seg["device"].unique()):
            meta(1, int(d), "thread_name", f"device {int(d)}")
            ev.append({"ph": "M", "pid": 1, "tid": int(d), "name": "thread_sort_index", "args": {"sort_index": int(d)}})
        for j, d, t0, t1, end in seg.itertuples(index=False):
            ev.append({"ph": "X", "pid": 1, "tid": int(d), "name": f"job {j}", "cat": "job", **_slice(t0, t1),
                       "args": {"job": str(j), "end": end}})
    mem = tables.get("memory")
    if mem is not None and len(mem) and {"pool_allocated", "pool_reserved", "device"} <= set(mem.columns):
        from llmos_sim.metrics.plots import memory_totals

        tot = memory_totals(mem)
        step = max(1, len(tot) // max_counter_points)
        meta(2, 0, "process_name", "memory")
        for t, a, r in zip(tot["time_s"].to_numpy(float)[::step], tot["allocated_bytes"].to_numpy(float)[::step],
                           tot["reserved_bytes"].to_numpy(float)[::step]):
            ev.append({"ph": "C", "pid": 2, "tid": 0, "name": "device memory (GB, all devices)", "ts": _us(t),
                       "args": {"allocated": round(a / 1e9, 4), "reserved": round(r / 1e9, 4)}})
    b = tables.get("batches")
    if b is not None and len(b) and {"time_s", "replica", "duration_s"} <= set(b.columns):
        meta(3, 0, "process_name", "replicas")
        for r in sorted(b["replica"].dropna().unique()):
            meta(3, int(r), "thread_name", f"replica {int(r)}")
        n_iters = b["n_iters"] if "n_iters" in b else pd.Series(1, index=b.index)
        for t, r, dur, it, pf, dc, ns in zip(b["time_s"].to_numpy(float), b["replica"], b["duration_s"].to_numpy(float),
                                             n_iters, b.get("n_prefill_tokens", n_iters * 0),
                                             b.get("n_decode_tokens", n_iters * 0), b.get("n_seqs", n_iters * 0)):
            if int(it) > 1:
                label = "decode span"
            else:
                label = "prefill+decode" if pf and dc else ("prefill" if pf else "decode")
            ev.append({"ph": "X", "pid": 3, "tid": int(r), "name": label, "cat": "batch",
                       **_slice(t, t + max(dur, 0.0)), "args": {"iters": int(it), "prefill_tokens": int(pf),
                                                           "decode_tokens": int(dc), "seqs": int(ns)}})
    kv = tables.get("kv")
    if kv is not None and len(kv) and {"time_s", "replica", "used_bytes"} <= set(kv.columns):
        step = max(1, len(kv) // max_counter_points)
        for t, r, u in zip(kv["time_s"].to_numpy(float)[::step], kv["replica"].to_numpy()[::step],
                           kv["used_bytes"].to_numpy(float)[::step]):
            ev.append({"ph": "C", "pid": 3, "tid": 0, "name": f"KV used GB (replica {int(r)})", "ts": _us(t),
                       "args": {"used": round(u / 1e9, 4)}})
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": {"run": name, "time": "simulated"}}


def write_trace(tables: Mapping[str, pd.DataFrame], path: str | Path, name: str = "run") -> Path:
    """Write :func:`trace_events` to ``path`` (compact JSON)."""
    from llmos_sim.outputs import replace_file

    text = json.dumps(trace_events(tables, name), separators=(",", ":"))
    return replace_file(path, lambda p: p.write_text(text))  # a symlink named trace.json is replaced


def trace_run_dir(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write ``trace.json`` for a finished run folder from its parquet tables."""
    run_dir = Path(run_dir)
    tables = {p.stem: pd.read_parquet(p) for p in run_dir.glob("*.parquet")}
    return write_trace(tables, path or run_dir / "trace.json", name=run_dir.name)


if __name__ == "__main__":
    import sys

    for d in sys.argv[1:] or ["."]:
        print(trace_run_dir(d))
