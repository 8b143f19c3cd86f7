"""Tables as pure functions of the event log: nothing is derived during the run.

- :func:`jobs_table`: one row per arrived job
- :func:`timeline_table`: device utilisation, queue length and running count after each change
- :func:`memory_table`: one row per memory operation with the pool's levels after it
- :func:`events_table`: the log itself
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmos_sim import events as E
from llmos_sim.events import EventLog
from llmos_sim.types import Cluster

JOB_COLUMNS = ["job_id", "tenant", "arrival_s", "gpus", "gpu_milli", "work_flops", "start_s", "finish_s", "wait_s",
               "jct_s", "run_s", "ideal_s", "slowdown", "devices", "n_devices", "n_nodes", "n_preempt", "n_resize", "device_s", "status",
               "reason"]


def jobs_table(log: EventLog, cluster: Cluster | None = None) -> pd.DataFrame:
    """One row per arrived job.

    ``start_s`` is the first start, ``wait_s = start − arrival``, ``jct_s = finish − arrival``,
    ``run_s = finish − start`` (includes preemption gaps), ``ideal_s`` the job's time alone on
    its full demand of average devices of ``cluster`` (``T / (gpus · share · C̄)``, NaN without
    a cluster), ``slowdown = jct / ideal`` (1 = as if alone; preemption gaps, queueing and slower
    placements all raise it), ``devices`` the last device set (a list of device indices,
    ``[]`` before the first start; a ``list<int64>`` column in parquet), ``device_s`` the device-seconds it held
    (fraction-weighted). ``status``: completed, failed, running (still running at the end)
    or queued (still waiting at the end).
    """
    rows: dict[int, dict] = {}
    held: dict[int, tuple[float, tuple, float]] = {}  # job -> (since, devices, share)
    node_of = [d.node for d in cluster.devices] if cluster is not None else None
    for t, kind, subj, data in log.records:
        if kind == E.ARRIVE:
            rows[subj] = {"job_id": subj, "tenant": data[3], "arrival_s": t, "gpus": data[0], "gpu_milli": data[2],
                          "work_flops": data[1], "start_s": np.nan,
                          "finish_s": np.nan, "devices": [], "n_devices": 0, "n_nodes": 0, "n_preempt": 0,
                          "n_resize": 0, "device_s": 0.0, "status": "queued", "reason": ""}
        elif kind == E.START:
            r = rows[subj]
            if np.isnan(r["start_s"]):
                r["start_s"] = t
            r["status"] = "running"
            held[subj] = (t, data[0], data[1] / 1000)
            _set_devices(r, data[0], node_of)
        elif kind == E.RESIZE:
            since, devs, share = held[subj]
            rows[subj]["device_s"] += (t - since) * len(devs) * share
            held[subj] = (t, data[1], share)
            rows[subj]["n_resize"] += 1
            _set_devices(rows[subj], data[1], node_of)
        elif kind in (E.FINISH, E.PREEMPT):
            r = rows[subj]
            since, devs, share = held.pop(subj)
            r["device_s"] += (t - since) * len(devs) * share
            if kind == E.FINISH:
                r["finish_s"] = t
                r["status"] = "completed"
            else:
                r["n_preempt"] += 1
                r["status"] = "queued"
        elif kind == E.FAIL:
            r = rows[subj]
            r["status"] = "failed"
            r["reason"] = data[0]
            if subj in held:  # failed while running (e.g. a real out-of-memory error)
                since, devs, share = held.pop(subj)
                r["device_s"] += (t - since) * len(devs) * share
                r["finish_s"] = np.nan
    end_t = log.records[-1][0] if log.records else 0.0
    for j, (since, devs, share) in held.items():  # still running at the end
        rows[j]["device_s"] += (end_t - since) * len(devs) * share
    derived = ("wait_s", "jct_s", "run_s", "ideal_s", "slowdown")
    df = pd.DataFrame.from_records(list(rows.values()), columns=[c for c in JOB_COLUMNS if c not in derived])
    # int64 arrays, so parquet stores list<int64> even when every list is empty
    df["devices"] = [np.asarray(d, dtype=np.int64) for d in df["devices"]]
    df["wait_s"] = df["start_s"] - df["arrival_s"]
    df["jct_s"] = df["finish_s"] - df["arrival_s"]
    df["run_s"] = df["finish_s"] - df["start_s"]
    mean_c = cluster.total_flops / cluster.n_devices if cluster is not None else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        df["ideal_s"] = df["work_flops"] / (df["gpus"] * df["gpu_milli"].astype(float) / 1000 * mean_c)
        df["slowdown"] = df["jct_s"] / df["ideal_s"]
    return df[JOB_COLUMNS].sort_values("job_id", kind="stable").reset_index(drop=True)


def _set_devices(row: dict, devices: tuple, node_of: list[int] | None) -> None:
    row["devices"] = [int(d) for d in devices]
    row["n_devices"] = len(devices)
    row["n_nodes"] = len({node_of[d] for d in devices}) if node_of else 0


def timeline_table(log: EventLog, cluster: Cluster) -> pd.DataFrame:
    """Busy devices (fraction-weighted), utilisation, queue length and running jobs after each
    event that changes them; one row per instant (the last state at that time)."""
    n_dev = cluster.n_devices
    busy = 0.0
    queued = running = 0
    held: dict[int, float] = {}
    t_out, b_out, q_out, r_out = [], [], [], []
    for t, kind, subj, data in log.records:
        if kind == E.ARRIVE:
            queued += 1
        elif kind == E.START:
            w = len(data[0]) * data[1] / 1000
            held[subj] = w
            busy += w
            queued -= 1
            running += 1
        elif kind == E.RESIZE:
            w_new = len(data[1]) * held[subj] / max(len(data[0]), 1)
            busy += w_new - held[subj]
            held[subj] = w_new
        elif kind in (E.FINISH, E.PREEMPT):
            busy -= held.pop(subj)
            running -= 1
            if kind == E.PREEMPT:
                queued += 1
        elif kind == E.FAIL:
            if subj in held:
                busy -= held.pop(subj)
                running -= 1
            else:
                queued -= 1
        else:
            continue
        if t_out and t_out[-1] == t:
            b_out[-1], q_out[-1], r_out[-1] = busy, queued, running
        else:
            t_out.append(t)
            b_out.append(busy)
            q_out.append(queued)
            r_out.append(running)
    df = pd.DataFrame({"time_s": t_out, "busy_devices": np.round(b_out, 9), "queue_len": q_out, "running": r_out})
    df["utilisation"] = df["busy_devices"] / n_dev
    return df


def memory_table(log: EventLog, cluster: Cluster) -> pd.DataFrame:
    """One row per memory operation (alloc, free, fail) with the device pool's levels after it."""
    cols = ["seq", "time_s", "device", "op", "owner", "offset", "nbytes", "requested", "pool_allocated",
            "pool_reserved", "pool_requested", "pool_largest_free"]
    rows = []
    for i, (t, kind, subj, d) in enumerate(log.records):
        if kind == E.MEM_ALLOC:
            rows.append((i, t, subj, "alloc", *d))
        elif kind == E.MEM_FREE:
            rows.append((i, t, subj, "free", *d))
        elif kind == E.MEM_FAIL:
            rows.append((i, t, subj, "fail", d[0], -1, 0, d[1], *d[2:]))
    df = pd.DataFrame.from_records(rows, columns=cols)
    df["owner"] = df["owner"].astype(str)
    cap = np.array([dv.spec.mem_bytes for dv in cluster.devices], dtype=np.int64)
    df["capacity"] = cap[df["device"].to_numpy(dtype=np.int64)] if len(df) else np.zeros(0, np.int64)
    free = df["capacity"] - df["pool_allocated"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["external_frag"] = np.where(free > 0, 1.0 - df["pool_largest_free"] / free.where(free > 0, 1), 0.0)
    df["internal_frag_bytes"] = df["pool_allocated"] - df["pool_requested"]
    return df


def events_table(log: EventLog) -> pd.DataFrame:
    """The log, one row per record (``data`` as text)."""
    return log.table()
