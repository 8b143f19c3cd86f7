"""Tables as pure functions of the event log: nothing is derived during the run.

- :func:`jobs_table`: one row per arrived job
- :func:`timeline_table`: device utilisation, queue length and running count after each change
- :func:`memory_table`: one row per memory operation with the pool's levels after it
- :func:`events_table`: the log itself
"""
from __future__ import annotations

from collections.abc import MutableMapping
from itertools import chain
from operator import itemgetter

import numpy as np
import pandas as pd

from llmos_sim import events as E
from llmos_sim.events import EventLog
from llmos_sim.kernel import sparse_gc
from llmos_sim.types import ARRIVE_FIELDS, Arrivals, Cluster

JOB_COLUMNS = ["job_id", "tenant", "arrival_s", "gpus", "gpu_milli", "work_flops", "start_s", "finish_s", "wait_s",
               "jct_s", "run_s", "ideal_s", "slowdown", "devices", "n_devices", "n_nodes", "n_preempt", "n_resize", "device_s", "status",
               "reason"]


def jobs_table(log: EventLog, cluster: Cluster | None = None) -> pd.DataFrame:
    """One row per arrived job (see :func:`_jobs_table_loop` for the columns): built from the
    log's columns with numpy (:class:`_Life`); a log whose job records do not have the
    engine's shapes (a record for a job that never arrived, a repeated arrival, data of
    another layout) goes through the record-by-record loop, which gives the same table."""
    with sparse_gc():  # many short-lived containers: the collector would rescan the log's objects
        try:
            life = _Life(log)
        except _Irregular:
            return _jobs_table_loop(log, cluster)
        return life.jobs_table(cluster)


def _jobs_table_loop(log: EventLog, cluster: Cluster | None = None) -> pd.DataFrame:
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
    return _finish_jobs_table(dict(df.items()), cluster)


def _finish_jobs_table(cols: dict, cluster: Cluster | None) -> pd.DataFrame:
    """The jobs table from its columns (``cols``: name -> array, list or Series, each one
    value per job) and the derived ones (wait, JCT, run time, ideal time, slowdown), made
    in the table's order at once: no column is inserted or reordered after, so the frame's
    data are not copied again (a 300k-job table is ~85 MB)."""
    c = {k: v if isinstance(v, pd.Series) else pd.Series(v, copy=False) for k, v in cols.items()}
    c["wait_s"] = c["start_s"] - c["arrival_s"]
    c["jct_s"] = c["finish_s"] - c["arrival_s"]
    c["run_s"] = c["finish_s"] - c["start_s"]
    mean_c = cluster.total_flops / cluster.n_devices if cluster is not None else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        c["ideal_s"] = c["work_flops"] / (c["gpus"] * c["gpu_milli"].astype(float) / 1000 * mean_c)
        c["slowdown"] = c["jct_s"] / c["ideal_s"]
    df = pd.DataFrame({k: c.pop(k) for k in JOB_COLUMNS}, copy=False)
    if not df["job_id"].is_monotonic_increasing:  # (ids in arrival order need no sort)
        df = df.sort_values("job_id", kind="stable")
    return df.reset_index(drop=True)


def _set_devices(row: dict, devices: tuple, node_of: list[int] | None) -> None:
    row["devices"] = [int(d) for d in devices]
    row["n_devices"] = len(devices)
    row["n_nodes"] = len({node_of[d] for d in devices}) if node_of else 0


def jobs_and_timeline(log: EventLog, cluster: Cluster) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`jobs_table` and :func:`timeline_table` from one reading of the log's columns."""
    with sparse_gc():
        try:
            life = _Life(log)
        except _Irregular:
            return _jobs_table_loop(log, cluster), _timeline_table_loop(log, cluster)
        timeline = life.timeline_table(cluster)  # first: its working columns are gone before the jobs table's
        return life.jobs_table(cluster), timeline


def timeline_table(log: EventLog, cluster: Cluster) -> pd.DataFrame:
    """Busy devices (fraction-weighted), utilisation, queue length and running jobs after each
    event that changes them; one row per instant (the last state at that time). Built from
    the log's columns (:class:`_Life`), or record by record where they are irregular."""
    with sparse_gc():
        try:
            life = _Life(log)
        except _Irregular:
            return _timeline_table_loop(log, cluster)
        return life.timeline_table(cluster)


def _timeline_table_loop(log: EventLog, cluster: Cluster) -> pd.DataFrame:
    """:func:`timeline_table`, one record at a time."""
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
    """One row per memory operation (alloc, free, fail) with the device pool's levels after it.

    Built from the log's columns: the memory records are found by kind code and their data
    split into columns by ``zip``; rows of an irregular layout go record by record."""
    with sparse_gc():
        return _memory_table(log, cluster)


_MEM_COLUMNS = ["seq", "time_s", "device", "op", "owner", "offset", "nbytes", "requested", "pool_allocated",
                "pool_reserved", "pool_requested", "pool_largest_free"]


class _MemoryRows:
    """The memory records of a log when every one is a row of one
    :class:`~llmos_sim.events.IntRows` (the engine's alloc and free records) and every device
    an exact int: their positions, each one's row, device and whether it is a free, read from
    the log's columns once. The table's columns are slices of these (:meth:`columns`)."""

    def __init__(self, log: EventLog, pos: np.ndarray, rows: np.ndarray, device: np.ndarray) -> None:
        self.pos, self.rows, self.device = pos, rows, device
        self.time = np.frombuffer(log.time, dtype=np.float64)
        self.int_rows = log.derived[log._codes[E.MEM_ALLOC if E.MEM_ALLOC in log._codes else E.MEM_FREE]]
        self.is_free = np.frombuffer(log.code, dtype=np.uint16)[pos] == log._codes.get(E.MEM_FREE, -1)

    @classmethod
    def of(cls, log: EventLog) -> "_MemoryRows | None":
        pos = log.positions(E.MEM_ALLOC, E.MEM_FREE, E.MEM_FAIL)
        if not len(pos) or E.MEM_FAIL in log._codes and \
                (np.frombuffer(log.code, dtype=np.uint16)[pos] == log._codes[E.MEM_FAIL]).any():
            return None
        made = {log.derived.get(log._codes.get(k)) for k in (E.MEM_ALLOC, E.MEM_FREE) if k in log._codes}
        if len(made) != 1:
            return None
        made = made.pop()
        if not isinstance(made, E.IntRows) or made.width != 8:
            return None
        rows = made.rows_at(log.data, pos)
        device = E.ints_at(log.subject, pos) if rows is not None else None
        return None if device is None else cls(log, pos, rows, device)

    def __len__(self) -> int:
        return len(self.pos)

    def columns(self, cluster: Cluster, lo: int = 0, hi: "int | None" = None) -> dict[str, np.ndarray]:
        """The memory table's columns for its rows ``lo:hi`` (numpy; ``op`` and ``owner`` as
        the codes and ints their texts are made from)."""
        pos = self.pos[lo:hi]
        m = self.int_rows.take(self.rows[lo:hi])
        dev = self.device[lo:hi]
        cols = {"seq": pos.astype(np.int64), "time_s": self.time[pos], "device": dev,
                "op": self.is_free[lo:hi].astype(np.intp), **{k: m[:, j] for j, k in enumerate(_MEM_COLUMNS[4:])}}
        cap = _capacities(cluster)
        cols["capacity"] = cap[dev]
        free = cols["capacity"] - cols["pool_allocated"]
        with np.errstate(divide="ignore", invalid="ignore"):
            cols["external_frag"] = np.where(free > 0, 1.0 - cols["pool_largest_free"] / np.where(free > 0, free, 1),
                                             0.0)
        cols["internal_frag_bytes"] = cols["pool_allocated"] - cols["pool_requested"]
        return cols

    def frame(self, cluster: Cluster) -> pd.DataFrame:
        """The memory table (as :func:`_memory_derived` makes it from the records)."""
        cols = self.columns(cluster)
        cols["op"] = _OPS.array.take(cols["op"])
        cols["owner"] = pd.Series(cols["owner"]).astype(str)
        return pd.DataFrame(cols)

    def write(self, cluster: Cluster, path, block: int = 1 << 16) -> None:
        """Write the memory table to parquet ``path`` from Arrow arrays, ``block`` rows per
        row group: reading it gives :meth:`frame`."""
        import pyarrow as pa

        ops = pa.array(_OPS.tolist(), type=pa.large_string())
        writer = None
        try:
            for lo in range(0, len(self), block):
                cols = self.columns(cluster, lo, lo + block)
                if writer is None:  # the schema (and pandas' metadata) of the table's frame
                    head = {k: v[:1] for k, v in cols.items()}
                    head["op"] = _OPS.array.take(head["op"])
                    head["owner"] = pd.Series(head["owner"]).astype(str)
                    writer = E.parquet_writer(path, pa.Schema.from_pandas(pd.DataFrame(head), preserve_index=False))
                arrays = {k: pa.array(v) for k, v in cols.items()}
                arrays["op"] = ops.take(arrays["op"])
                arrays["owner"] = arrays["owner"].cast(pa.large_string())
                writer.write_table(pa.Table.from_arrays([arrays[f.name] for f in writer.schema], schema=writer.schema))
        finally:
            if writer is not None:
                writer.close()


_OPS = pd.Series(["alloc", "free"])


def _capacities(cluster: Cluster) -> np.ndarray:
    return np.array([dv.spec.mem_bytes for dv in cluster.devices], dtype=np.int64)


def write_memory_table(log: EventLog, cluster: Cluster, path) -> None:
    """Write :func:`memory_table` to the parquet file ``path``; the engine's records are
    written from the log's columns block by block, without making the table."""
    with sparse_gc():
        rows = _MemoryRows.of(log)
        if rows is None:
            E.write_frame(memory_table(log, cluster), path)
        else:
            rows.write(cluster, path)


def _memory_table(log: EventLog, cluster: Cluster) -> pd.DataFrame:
    rows = _MemoryRows.of(log)
    if rows is not None:  # every record is a row of ints: the columns are slices of the rows
        return rows.frame(cluster)
    pos = log.positions(E.MEM_ALLOC, E.MEM_FREE, E.MEM_FAIL)
    seq = pos.tolist()
    kinds = list(map(log.kinds.__getitem__, log.codes_array()[pos].tolist()))
    data = log.data_at(seq)
    time_s = list(map(log.time.__getitem__, seq))
    device = list(map(log.subject.__getitem__, seq))
    op = {E.MEM_ALLOC: "alloc", E.MEM_FREE: "free", E.MEM_FAIL: "fail"}
    # a failed request has no offset and no block: (owner, -1, 0, requested, levels...)
    rows = [d if k != E.MEM_FAIL else (d[0], -1, 0, d[1], *d[2:]) for k, d in zip(kinds, data)] \
        if E.MEM_FAIL in log._codes else data
    if rows and len(set(map(len, rows))) == 1 and len(rows[0]) == 8:
        cols = dict(zip(_MEM_COLUMNS[4:], zip(*rows)))
        df = pd.DataFrame({"seq": seq, "time_s": time_s, "device": device, "op": list(map(op.__getitem__, kinds)),
                           **{k: list(v) for k, v in cols.items()}}, columns=_MEM_COLUMNS)
    else:
        df = pd.DataFrame.from_records([(i, t, dv, op[k], *d) for i, t, dv, k, d in
                                        zip(seq, time_s, device, kinds, rows)], columns=_MEM_COLUMNS)
    return _memory_derived(df, cluster)


def _memory_derived(df: pd.DataFrame, cluster: Cluster) -> pd.DataFrame:
    """The memory table's columns derived from its records: owner as text, capacity, fragmentation."""
    df["owner"] = df["owner"].astype(str)
    cap = _capacities(cluster)
    df["capacity"] = cap[df["device"].to_numpy(dtype=np.int64)] if len(df) else np.zeros(0, np.int64)
    free = df["capacity"] - df["pool_allocated"]
    with np.errstate(divide="ignore", invalid="ignore"):
        df["external_frag"] = np.where(free > 0, 1.0 - df["pool_largest_free"] / free.where(free > 0, 1), 0.0)
    df["internal_frag_bytes"] = df["pool_allocated"] - df["pool_requested"]
    return df


class Tables(MutableMapping):
    """A run's tables by name, in order. A *lazy* table (:meth:`add_lazy`) is made the first
    time it is read (and kept); written to parquet before that (:meth:`to_parquet`), it is
    written by its own writer, which need not hold it whole (the events table, written block
    by block of the log). Reading, iterating ``items()`` or comparing sees every table."""

    def __init__(self, tables: "dict[str, pd.DataFrame] | None" = None) -> None:
        self._made: dict[str, pd.DataFrame] = {}
        self._lazy: dict[str, tuple] = {}
        self._names: dict[str, None] = {}  # every name, in order
        for name, df in (tables or {}).items():
            self[name] = df

    def add_lazy(self, name: str, make, write) -> None:
        """Table ``name`` is ``make()`` when read; ``write(path)`` writes it to parquet unread."""
        self._made.pop(name, None)
        self._lazy[name] = (make, write)
        self._names[name] = None

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._made and name in self._lazy:
            self._made[name] = self._lazy.pop(name)[0]()
        return self._made[name]

    def __setitem__(self, name: str, df: pd.DataFrame) -> None:
        self._lazy.pop(name, None)
        self._made[name] = df
        self._names[name] = None

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._made.pop(name, None)
        self._lazy.pop(name, None)
        del self._names[name]

    def __iter__(self):
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def to_parquet(self, name: str, path) -> None:
        """Write table ``name`` to the parquet file ``path`` (a lazy one not read yet by its
        writer, without making it here)."""
        if name in self._lazy:
            self._lazy[name][1](path)
        else:
            E.write_frame(self[name], path)

    def __repr__(self) -> str:
        return f"Tables({', '.join(n + ('' if n in self._made else ' (lazy)') for n in self._names)})"


def events_table(log: EventLog) -> pd.DataFrame:
    """The log, one row per record (``data`` as text)."""
    return log.table()


class _Irregular(Exception):
    """The log's job records are not in the shapes :class:`_Life` reads."""


_LIFE_KINDS = (E.ARRIVE, E.START, E.RESIZE, E.FINISH, E.PREEMPT, E.FAIL)
_ARR, _START, _RESIZE, _FINISH, _PREEMPT, _FAIL = range(6)


class _Life:
    """The job life-cycle records of a log (arrive, start, resize, finish, preempt, fail) as
    numpy columns, in log order, with what the tables need: each record's job row, and for
    each record the one before it of the same job. A start or resize opens a holding
    interval; the job's next life-cycle record closes it (a resize closes one and opens the
    next). Sums are taken in log order, so every float is the one the record-by-record loop
    computes."""

    def __init__(self, log: EventLog) -> None:
        self.end_t = log.time[-1] if len(log) else 0.0
        lut = np.full(len(log.kinds) + 1, -1, dtype=np.int8)
        for i, k in enumerate(_LIFE_KINDS):
            c = log._codes.get(k)
            if c is not None:
                lut[c] = i
        kind = lut[np.frombuffer(log.code, dtype=np.uint16)] if len(log) else np.zeros(0, dtype=np.int8)
        pos = np.flatnonzero(kind >= 0)
        self.kind = kind = kind[pos]
        self.t = np.frombuffer(log.time, dtype=np.float64)[pos] if len(pos) else np.zeros(0)
        self.pos, self.raw = pos, log.data  # a record's data: raw[pos[i]] (a derived kind's object)
        c_arr = log._codes.get(E.ARRIVE)
        make_arrive = log.derived.get(c_arr) if c_arr is not None else None
        arr = np.flatnonzero(kind == _ARR)
        self.ids, self.row = self._rows(log, pos, arr)
        arr_data = E._gather(log.data, pos[arr].tolist())
        if isinstance(make_arrive, Arrivals) and set(map(type, arr_data)) <= {int}:  # rows of a job table
            rows = np.asarray(arr_data, dtype=np.int64)  # its columns of numbers gathered as arrays
            table = make_arrive.table
            self.gpus, self.work, self.milli, self.tenant = (
                a[rows] if (a := table.array(f)) is not None else table.gather(f, arr_data) for f in ARRIVE_FIELDS)
        elif hasattr(make_arrive, "columns") and set(map(type, arr_data)) <= {int}:
            self.gpus, self.work, self.milli, self.tenant = make_arrive.columns(arr_data)
        else:
            if make_arrive is not None:
                arr_data = list(map(make_arrive, arr_data))
            if arr_data and set(map(len, arr_data)) != {4}:
                raise _Irregular("arrival data")
            self.gpus, self.work, self.milli, self.tenant = (list(c) for c in zip(*arr_data)) if len(arr) else ([],) * 4
        del arr_data
        row = self.row
        self.arr_pos = np.asarray(arr, dtype=np.int64)
        n = len(kind)
        # the record before each one of the same job (-1: none)
        order = np.argsort(row, kind="stable")
        prev = np.full(n, -1, dtype=np.int64)
        if n > 1:
            same = row[order[1:]] == row[order[:-1]]
            prev[order[1:][same]] = order[:-1][same]
        self.prev = prev
        # holding intervals: opened by starts and resizes (devices, share), weight per device-s
        opener = (kind == _START) | (kind == _RESIZE)
        ndev = np.zeros(n, dtype=np.int64)
        share = np.zeros(n, dtype=np.float64)  # the job's share of each device (milli / 1000)
        starts = np.flatnonzero(kind == _START)
        start_data = E._gather(log.data, pos[starts].tolist())
        if start_data and set(map(len, start_data)) != {3}:
            raise _Irregular("start data")
        start_devs = list(map(itemgetter(0), start_data))
        sm = list(map(itemgetter(1), start_data))  # START's share_milli as logged (int or float)
        del start_data
        # each start's devices and share_milli, in the order of `starts`; resizes' devices by record
        self.starts, self.start_devs, self.share_milli = starts, start_devs, sm
        self.sm_ints = set(map(type, sm)) <= {int}
        devices: dict[int, tuple] = {}  # resize record -> its device set
        if len(starts):
            ndev[starts] = np.fromiter(map(len, start_devs), dtype=np.int64, count=len(starts))
            share[starts] = [m / 1000 for m in sm] if not self.sm_ints else np.asarray(sm, dtype=np.int64) / 1000
        # a resize keeps the share of the start (or resize) before it; it reads its devices
        resized_from: dict[int, int] = {}
        for i in np.flatnonzero(kind == _RESIZE).tolist():  # few (elastic jobs only), in log order
            o = int(prev[i])
            if o < 0 or not opener[o] or len(self.data(i)) != 2:
                raise _Irregular("a resize of a job not holding devices")
            devices[i] = self.data(i)[1]
            ndev[i] = len(devices[i])
            share[i] = share[o]
            resized_from[i] = o
        self.resize_devs, self.ndev, self.share, self.opener = devices, ndev, share, opener
        self.resized_from = resized_from
        # which records close an interval (the job's previous record opened one)
        closes = np.zeros(n, dtype=bool)
        has_prev = prev >= 0
        closes[has_prev] = opener[prev[has_prev]]
        closing_kind = (kind == _FINISH) | (kind == _PREEMPT)
        if (closing_kind & ~closes).any():
            raise _Irregular("a finish or preemption of a job not holding devices")
        if (kind[closes] == _START).any() or (kind[closes] == _ARR).any():
            raise _Irregular("a start of a job already holding devices")
        self.closes = closes
        # still open at the end: openers that are the last record of their job
        last = np.ones(n, dtype=bool)
        last[prev[has_prev]] = False
        self.open_at_end = np.flatnonzero(opener & last)
        self.last = last

    @staticmethod
    def _rows(log: EventLog, pos: np.ndarray, arr: np.ndarray) -> tuple:
        """The jobs' ids (their arrivals' subjects, in order) and each record's job row (the
        position of its job's arrival among the arrivals). Subjects that are exact ints are
        matched by numpy; others through a dict."""
        subject = E.ints_at(log.subject, pos)
        if subject is None:
            subject = E._gather(log.subject, pos.tolist())
            ids = list(map(subject.__getitem__, arr.tolist()))
            row_of = dict(zip(ids, range(len(ids))))
            if len(row_of) != len(ids) or not ids:
                raise _Irregular("a job arrived twice, or none arrived")
            try:
                return ids, np.fromiter(map(row_of.__getitem__, subject), dtype=np.int64, count=len(subject))
            except KeyError:
                raise _Irregular("a record of a job that never arrived") from None
        ids = subject[arr]
        by_id = np.argsort(ids, kind="stable")
        sorted_ids = ids[by_id]
        if not len(ids) or (sorted_ids[1:] == sorted_ids[:-1]).any():
            raise _Irregular("a job arrived twice, or none arrived")
        at = np.searchsorted(sorted_ids, subject)
        at[at == len(ids)] = 0
        if (sorted_ids[at] != subject).any():
            raise _Irregular("a record of a job that never arrived")
        return ids, by_id[at]

    def data(self, i: int):
        """The raw data of life-cycle record ``i`` (a derived kind's stored object)."""
        return self.raw[int(self.pos[i])]

    def _devices_of(self, records: np.ndarray) -> list:
        """The device sets of the start and resize records at ``records``."""
        if not self.resize_devs:
            return list(map(self.start_devs.__getitem__, np.searchsorted(self.starts, records).tolist()))
        at = np.searchsorted(self.starts, records).tolist()
        return [self.resize_devs[i] if i in self.resize_devs else self.start_devs[k]
                for i, k in zip(records.tolist(), at)]

    # -- jobs ------------------------------------------------------------------------------
    def jobs_table(self, cluster: Cluster | None) -> pd.DataFrame:
        kind, row, t = self.kind, self.row, self.t
        n_jobs = len(self.ids)
        start_s = np.full(n_jobs, np.nan)
        first = _first_per_job(row, np.flatnonzero(kind == _START))
        start_s[row[first]] = t[first]
        finish_s = np.full(n_jobs, np.nan)
        fin = np.flatnonzero(kind == _FINISH)
        finish_s[row[fin]] = t[fin]
        del first, fin
        n_preempt = np.bincount(row[kind == _PREEMPT], minlength=n_jobs).astype(np.int64)
        n_resize = np.bincount(row[kind == _RESIZE], minlength=n_jobs).astype(np.int64)
        status = self._status(n_jobs)
        reason = [""] * n_jobs
        for i in np.flatnonzero(kind == _FAIL).tolist():
            reason[row[i]] = self.data(i)[0]
            if self.closes[i]:
                finish_s[row[i]] = np.nan
        devices, n_devices, n_nodes = self._last_devices(n_jobs, cluster)
        return _finish_jobs_table({
            "job_id": self.ids, "tenant": self.tenant, "arrival_s": t[self.arr_pos], "gpus": self.gpus,
            "gpu_milli": self.milli, "work_flops": self.work, "start_s": start_s, "finish_s": finish_s,
            "devices": devices, "n_devices": n_devices, "n_nodes": n_nodes, "n_preempt": n_preempt,
            "n_resize": n_resize, "device_s": self._device_s(n_jobs), "status": status, "reason": reason,
        }, cluster)

    def _device_s(self, n_jobs: int) -> np.ndarray:
        """Each job's device-seconds: each closed interval in log order, then those still open
        at the end."""
        t, row = self.t, self.row
        cl = np.flatnonzero(self.closes)
        o = self.prev[cl]
        amount = (t[cl] - t[o]) * self.ndev[o] * self.share[o]
        device_s = np.bincount(row[cl], weights=amount, minlength=n_jobs).astype(np.float64)
        oe = self.open_at_end
        device_s[row[oe]] += (self.end_t - t[oe]) * self.ndev[oe] * self.share[oe]
        return device_s

    def _status(self, n_jobs: int) -> list:
        """Each job's status: that of its last record that sets one (a resize does not)."""
        status_of = np.array(["queued", "running", "", "completed", "queued", "failed"], dtype=object)
        last_rec = np.full(n_jobs, -1, dtype=np.int64)
        if self.resized_from:
            lr = _first_per_job(self.row, np.flatnonzero(self.kind != _RESIZE)[::-1])
        else:  # no resize: each job's last record
            lr = np.flatnonzero(self.last)
        last_rec[self.row[lr]] = lr
        return status_of[self.kind[last_rec]].tolist() if n_jobs else []

    def _last_devices(self, n_jobs: int, cluster: Cluster | None) -> tuple:
        """Each job's last device set (start or resize; an int64 array, empty before its first
        start: views of one array), its size and the number of nodes it spans."""
        row = self.row
        last_dev = np.full(n_jobs, -1, dtype=np.int64)
        op = _first_per_job(row, np.flatnonzero(self.opener)[::-1])
        last_dev[row[op]] = op
        has = last_dev >= 0
        dev_sets = self._devices_of(last_dev[has])
        lens = np.fromiter(map(len, dev_sets), dtype=np.int64, count=len(dev_sets))
        flat = np.fromiter(chain.from_iterable(dev_sets), dtype=np.int64, count=int(lens.sum()))
        del dev_sets, last_dev, op
        n_devices = np.zeros(n_jobs, dtype=np.int64)
        n_devices[has] = lens
        n_nodes = np.zeros(n_jobs, dtype=np.int64)
        if cluster is not None and len(flat):
            node_of = np.array([d.node for d in cluster.devices], dtype=np.int64)
            owner = np.repeat(np.arange(len(lens)), lens)
            nodes = node_of[flat]
            same = owner[1:] == owner[:-1]
            if (nodes[1:][same] >= nodes[:-1][same]).all():  # each set's nodes ascending: count the changes
                moved = same & (nodes[1:] != nodes[:-1])
                n_nodes[has] = (lens > 0) + np.bincount(owner[1:][moved], minlength=len(lens))
            else:
                pairs = np.unique(owner * (int(node_of.max()) + 1) + nodes)
                n_nodes[has] = np.bincount(pairs // (int(node_of.max()) + 1), minlength=len(lens))
                del pairs
            del owner, nodes, same
        empty = np.zeros(0, dtype=np.int64)
        devices = [empty] * n_jobs
        ends = np.cumsum(lens)
        holders = np.flatnonzero(has)
        for s in range(0, len(holders), E.TEXT_BLOCK):  # views of flat, as np.split gives (a block's ints at a time)
            e = ends[s:s + E.TEXT_BLOCK].tolist()
            for r, a, b in zip(holders[s:s + E.TEXT_BLOCK].tolist(), [int(ends[s - 1]) if s else 0, *e], e):
                devices[r] = flat[a:b]
        return pd.Series(devices, dtype=object), n_devices, n_nodes

    # -- timeline --------------------------------------------------------------------------
    def timeline_table(self, cluster: Cluster) -> pd.DataFrame:
        kind, prev, n = self.kind, self.prev, len(self.kind)
        # each holding interval's weight: devices × share (a resize scales the one it closes)
        weight = np.zeros(n, dtype=np.float64)
        st = np.flatnonzero(kind == _START)
        weight[st] = self.ndev[st] * np.asarray(self.share_milli, dtype=np.float64) / 1000 if len(st) else 0.0
        if not self.sm_ints:
            for i, devs, m in zip(st.tolist(), self.start_devs, self.share_milli):
                weight[i] = len(devs) * m / 1000
        for i, o in self.resized_from.items():  # log order: a chain of resizes scales in turn
            weight[i] = len(self.resize_devs[i]) * weight[o] / max(len(self.data(i)[0]), 1)
        d_busy = np.zeros(n, dtype=np.float64)
        closes = self.closes
        cl = np.flatnonzero(closes)
        d_busy[cl] = -weight[prev[cl]]
        del cl
        d_busy[st] += weight[st]  # a start closes nothing (checked when the columns were read)
        rz = np.flatnonzero(kind == _RESIZE)
        d_busy[rz] = weight[rz] - weight[prev[rz]]
        del weight
        busy = _running_sum(d_busy)
        del d_busy
        # the counts, summed in place (a 900k-record log's columns are 7 MB each)
        d_queue = np.zeros(n, dtype=np.int64)
        d_run = np.zeros(n, dtype=np.int64)
        d_queue[kind == _ARR] = 1
        d_queue[st] = -1
        d_queue[kind == _PREEMPT] = 1
        d_run[st] = 1
        d_run[(kind == _FINISH) | (kind == _PREEMPT)] = -1
        fail = kind == _FAIL
        d_run[fail & closes] = -1
        d_queue[fail & ~closes] = -1
        queued = np.cumsum(d_queue, out=d_queue)
        running = np.cumsum(d_run, out=d_run)
        t = self.t
        keep = np.ones(n, dtype=bool)  # the last record of each run of equal times
        if n > 1:
            keep[:-1] = t[1:] != t[:-1]
        df = pd.DataFrame({"time_s": t[keep], "busy_devices": np.round(busy[keep], 9),
                           "queue_len": queued[keep], "running": running[keep]}, copy=False)
        df["utilisation"] = df["busy_devices"] / cluster.n_devices
        return df


def _first_per_job(row: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Of ``records`` (positions, in the order to search), the first one of each job, in no
    particular order (callers scatter by job). Where no job has two of them (each job started
    once), that is all of them: counted, not sorted."""
    rows = row[records]
    if not len(rows) or int(np.bincount(rows).max()) <= 1:
        return records
    _, first = np.unique(rows, return_index=True)
    return records[first]


def _running_sum(deltas: np.ndarray) -> np.ndarray:
    """``busy`` after each record, as ``busy += delta`` one record at a time computes it
    (``np.cumsum`` adds in order, from the first element)."""
    return np.cumsum(deltas)
