"""The append-only event log: the single source of truth of a run.

Every table, metric and plot is a pure function of this log (see :mod:`llmos_sim.metrics`).
A record is ``(time_s, kind, subject, data)``, appended in the order things happen; its
position is the run's sequence number, which breaks ties in time deterministically.

- ``kind`` is one of the string constants below.
- ``subject`` is the id of what the event is about (a job, a request, a device).
- ``data`` is a small tuple whose layout is fixed per kind (``FIELDS``).

The log stores its records as columns (a time array, a kind-code array, subject and data
lists), so a million-job run keeps no tuple per record; tables are built from the columns
(:class:`ByKind`, :meth:`EventLog.table`), and :attr:`EventLog.records` reads them back as tuples.
"""
from __future__ import annotations

import functools
import json
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import chain, compress
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmos_sim.kernel import sparse_gc

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
REQ_SLO = "req_slo"  # the request's own SLOs (NaN: the run's); data: (slo_ttft_s, slo_tpot_s, slo_e2e_s)
# prefix caching: a request with prefix hashes enters its first batch with cached_tokens of its
# prompt found in the replica's cache (hit_blocks of its hash_blocks prefix hash blocks; host_blocks
# of the hits were copied back from host memory)
REQ_CACHE = "req_cache"  # data: (replica, cached_tokens, hit_blocks, hash_blocks, host_blocks)
# prefill/decode disaggregation: the prompt's KV of a request moves from the prefill replica that
# produced its first token to a decode replica; phase "start" when the decode replica's blocks for
# it are allocated (at its first token, or later when that pool is full), "end" when it has
# arrived (the decode replica may admit it from then on); nbytes: prompt tokens x KV bytes per token
KV_TRANSFER = "kv_transfer"  # subject: request; data: (phase, from_replica, to_replica, nbytes)
BATCH = "batch"  # subject: replica; data: (n_prefill_tokens, n_decode_tokens, n_seqs, duration_s, kv_used_bytes)
# a run of n_iters pure-decode iterations of an unchanged batch, fast-forwarded in one step;
# token counts and duration are totals over the run, kv_used_bytes its end value
BATCH_SPAN = "batch_span"  # subject: replica; data: (n_iters, n_prefill_tokens, n_decode_tokens, n_seqs, duration_s, kv_used_bytes)
KV_SAMPLE = "kv_sample"  # subject: replica; data: (used_bytes, token_bytes, capacity_bytes, free_blocks)
# inter-token latency: a BATCH/BATCH_SPAN record gives each of its decode tokens a gap of one
# iteration's duration; this corrects the tokens of batch record batch_seq (its seq) whose gap
# differs. n_tokens > 0: that many tokens of its first iteration came wait_s later than that
# (their sequence sat out iterations, or was preempted), in_decode: 1 if they are among its
# n_decode_tokens (else they are recomputed sequences' tokens, counted as prefill);
# n_tokens < 0: that many of its n_decode_tokens were padding (static batching), not tokens.
# Logged after the run's END (so the run's records keep their numbers), at its time
ITL_ADJUST = "itl_adjust"  # subject: replica; data: (batch_seq, n_tokens, wait_s, in_decode)
# autoscaled services on the shared cluster. Subject: the job id of the replica's job (the
# service's own job for the replicas it holds; for a scale-up, the job it submits). Every record
# ends with the service's replica counts after it: n_ready (taking requests), n_provisioning
# (granted, loading weights), n_draining (finishing their requests), n_queued (asked for,
# waiting for the cluster scheduler)
SCALE = "scale"  # the autoscaler decided; data: (service, replica, delta, reason, n_ready, n_provisioning, n_draining, n_queued)
PROVISION_START = "provision_start"  # devices granted, weights loading; data: (service, replica, ready_s, n_ready, ...)
REPLICA_READY = "replica_ready"  # provisioned: it takes requests; data: (service, replica, ready_s, n_ready, ...)
DRAIN_START = "drain_start"  # no new requests; data: (service, replica, outstanding, n_ready, ...)
DRAIN_END = "drain_end"  # its last request ended: its job ends; data: (service, replica, outstanding, n_ready, ...)
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
    REQ_SLO: ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"),
    REQ_CACHE: ("replica", "cached_tokens", "hit_blocks", "hash_blocks", "host_blocks"),
    KV_TRANSFER: ("phase", "from_replica", "to_replica", "nbytes"),
    BATCH: ("n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s", "kv_used_bytes"),
    BATCH_SPAN: ("n_iters", "n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s", "kv_used_bytes"),
    KV_SAMPLE: ("used_bytes", "token_bytes", "capacity_bytes", "free_blocks"),
    ITL_ADJUST: ("batch_seq", "n_tokens", "wait_s", "in_decode"),
    MEASURED: ("segment", "devices", "wall_start_s", "wall_end_s", "done_flops", "achieved_flops_s", "setup_s",
               "status", "matmul_n", "cpu_s"),
    SCALE: ("service", "replica", "delta", "reason", "n_ready", "n_provisioning", "n_draining", "n_queued"),
    PROVISION_START: ("service", "replica", "ready_s", "n_ready", "n_provisioning", "n_draining", "n_queued"),
    REPLICA_READY: ("service", "replica", "ready_s", "n_ready", "n_provisioning", "n_draining", "n_queued"),
    DRAIN_START: ("service", "replica", "outstanding", "n_ready", "n_provisioning", "n_draining", "n_queued"),
    DRAIN_END: ("service", "replica", "outstanding", "n_ready", "n_provisioning", "n_draining", "n_queued"),
    SCHEDULE: ("n_queued", "n_running"),
    END: ("reason",),
}


class EventLog:
    """Append-only log of ``(time_s, kind, subject, data)`` records, stored as columns.

    Four columns grow side by side, one entry per record: ``time`` (``array('d')``: 8 bytes,
    no float object), ``code`` (``array('H')``: the record's kind as an index into ``kinds``,
    interned in order of first appearance), ``subject`` and ``data`` (lists of references to
    the objects the caller passed). A record is never a tuple while it is stored: a million-job
    run keeps no millions of 4-tuples and boxed times alive, and tables read the columns
    whole (numpy views of the arrays) instead of looping over records.

    :meth:`emit` is the one way in; :attr:`records` is a read-only sequence view that builds
    each ``(time_s, kind, subject, data)`` tuple when asked (iteration, indexing, slicing,
    ``==``), for code that reads records. A record's time reads back as a ``float``.

    A kind may be *derived* (:meth:`derive`): its records store one object in ``data`` (the
    engine stores the arriving :class:`~llmos_sim.types.Job`, which is immutable) and a
    function of it gives the record's data tuple whenever it is read (``attrgetter`` of the
    job's fields for ``arrive``), so the tuple is not kept per record. Read ``data`` through
    :meth:`data_at` or the views, never the raw list.
    """

    __slots__ = ("time", "code", "subject", "data", "kinds", "_codes", "_view", "derived")

    def __init__(self) -> None:
        self.time: array = array("d")
        self.code: array = array("H")
        self.subject: list = []
        self.data: list = []
        self.kinds: list = []  #: code -> kind, in order of first appearance
        self._codes: dict = {}  # kind -> code
        self._view = Records(self)
        self.derived: dict[int, Callable[[Any], tuple]] = {}  #: code -> stored object -> data tuple

    def derive(self, kind: Any, make_data: Callable[[Any], tuple]) -> int:
        """Make ``kind`` derived: its records' ``data`` hold an immutable object and
        ``make_data(object)`` is the record's data tuple. Only before its first record; returns
        its code. A ``make_data`` that stores ints may also give many records' data at once,
        field by field: ``make_data.columns(stored) -> [column, ...]`` (the tables use it;
        :class:`~llmos_sim.types.Arrivals`)."""
        c = self.code_of(kind)
        if c in self.code:
            raise ValueError(f"kind {kind!r} already has records; derive it before the first")
        self.derived[c] = make_data
        return c

    def int_rows(self, kinds: Sequence, width: int) -> "IntRows":
        """Make ``kinds`` derived from one :class:`IntRows` of ``width`` (before their first
        records): their emitters store ``rows.store(data)`` instead of the tuple."""
        rows = IntRows(width)
        for kind in kinds:
            self.derive(kind, rows)
        return rows

    def data_at(self, positions: list) -> list:
        """The data tuples of the records at ``positions`` (derived kinds made)."""
        out = _gather(self.data, positions)
        if self.derived:
            derived, code = self.derived, self.code
            out = [_derive(derived[code[i]], d, i) if code[i] in derived else d for i, d in zip(positions, out)]
        return out

    def _data_iter(self) -> Iterator[tuple]:
        """Every record's data tuple, in order."""
        if not self.derived:
            return iter(self.data)
        derived = self.derived
        return (_derive(derived[c], d, i) if c in derived else d for i, (c, d) in enumerate(zip(self.code, self.data)))

    def code_of(self, kind: Any) -> int:
        """``kind``'s code, interned on first use (the engine keeps the codes of its hot kinds)."""
        c = self._codes.get(kind)
        if c is None:
            if len(self.kinds) >= 65535:
                raise ValueError("an event log holds at most 65,535 distinct kinds")
            c = self._codes[kind] = len(self.kinds)
            self.kinds.append(kind)
        return c

    def emit(self, time_s: float, kind: str, subject: Any, data: tuple = ()) -> None:
        """Append one record. The hot path: keep it this small."""
        c = self._codes.get(kind)
        self.time.append(time_s)
        self.code.append(self.code_of(kind) if c is None else c)
        self.subject.append(subject)
        self.data.append(data)

    @property
    def records(self) -> "Records":
        """The records as a read-only sequence of ``(time_s, kind, subject, data)`` tuples."""
        return self._view

    def __len__(self) -> int:
        return len(self.time)

    def __iter__(self) -> Iterator[tuple[float, str, Any, tuple]]:
        return iter(self._view)

    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("time", "code", "subject", "data", "kinds", "derived")}

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self._codes = {k: i for i, k in enumerate(self.kinds)}
        self._view = Records(self)

    def codes_array(self) -> np.ndarray:
        """Each record's kind code as a numpy array (a copy: the log may grow after)."""
        return np.frombuffer(self.code, dtype=np.uint16).astype(np.intp) if len(self.code) else np.zeros(0, np.intp)

    def times_array(self) -> np.ndarray:
        """Each record's time as a float64 array (a copy)."""
        return np.frombuffer(self.time, dtype=np.float64).copy() if len(self.time) else np.zeros(0)

    def positions(self, *kinds: str) -> np.ndarray:
        """Positions (sequence numbers) of the records of the given kinds, in order."""
        codes = [self._codes[k] for k in kinds if k in self._codes]
        if not codes:
            return np.zeros(0, np.intp)
        return np.flatnonzero(np.isin(np.frombuffer(self.code, dtype=np.uint16), codes))

    def of(self, *kinds: str) -> list[tuple[int, float, Any, tuple]]:
        """``(seq, time_s, subject, data)`` of the records of the given kinds, in order."""
        seq = self.positions(*kinds).tolist()
        return list(zip(seq, _gather(self.time, seq), _gather(self.subject, seq), self.data_at(seq)))

    def frame(self, kind: str) -> pd.DataFrame:
        """One kind's records as a typed table: ``seq, time_s, subject`` + its data fields."""
        cols = FIELDS.get(kind, ())
        rows = [(i, t, s, *d) for i, t, s, d in self.of(kind)]
        names = ["seq", "time_s", "subject", *cols]
        if rows and len(rows[0]) != len(names):
            names = ["seq", "time_s", "subject", *[f"f{j}" for j in range(len(rows[0]) - 3)]]
        return pd.DataFrame.from_records(rows, columns=names)

    def table(self, by_kind: "ByKind | None" = None) -> pd.DataFrame:
        """The whole log, one row per record — the ``events`` table. ``data`` is a JSON object
        per record whose keys are the kind's :data:`FIELDS` (``{"devices": [0, 1],
        "share_milli": 1000, "rate_flops_s": 1e+13}``; no data: ``{}``; tuples become arrays;
        non-finite floats ``NaN`` / ``Infinity`` as Python's ``json`` writes them): read it with
        :func:`parse_data` or ``json.loads``. ``by_kind``: the log already grouped (the serving
        tables share one :class:`ByKind`); without it the texts are made block by block of the
        log (:func:`_event_blocks`), so the whole log is never split into tuples at once."""
        if not len(self):
            return pd.DataFrame({"seq": [], "time_s": [], "kind": [], "subject": [], "data": []})
        with sparse_gc():  # many short-lived containers: the collector would rescan the log's objects
            if by_kind is not None:
                kinds, codes = by_kind.kinds, by_kind.codes
                return self._table_rows(0, len(self), kinds, codes, by_kind.data_strings(),
                                        _str_by_distinct(self.subject))
            kinds, codes = _present_kinds(self)
            blocks = list(_event_blocks(self, kinds, codes))
            subject = pa.chunked_array([b.subject for b in blocks], type=pa.large_string())
            data = pa.chunked_array([b.data for b in blocks], type=pa.large_string())
            del blocks
            return self._table_rows(0, len(self), kinds, codes, _text_column(data), _text_column(subject))

    def _table_rows(self, start: int, end: int, kinds: list, codes: np.ndarray, data, subject) -> pd.DataFrame:
        """The events table's rows ``start:end`` (``codes``, ``data``, ``subject``: theirs)."""
        return pd.DataFrame(
            {
                "seq": range(start, end),
                "time_s": np.frombuffer(self.time, dtype=np.float64)[start:end].copy(),
                # the few distinct kinds, gathered by code (exact strings only: codes merge equal values)
                "kind": (pd.Series(kinds).array.take(codes) if set(map(type, kinds)) == {str}
                         else [kinds[c] for c in codes.tolist()]),
                "subject": subject,
                "data": data,
            }
        )

    def write_table(self, path: "str | Path") -> None:
        """Write the events table (:meth:`table`) to the parquet file ``path`` one block of the
        log at a time (a row group each, written from Arrow arrays), so the whole table is
        never held: reading the file gives the table :meth:`table` makes."""
        if not len(self):
            write_frame(self.table(), path)
            return
        with sparse_gc():
            kinds, codes = _present_kinds(self)
            writer = None
            times = np.frombuffer(self.time, dtype=np.float64)
            try:
                for b in _event_blocks(self, kinds, codes):
                    if writer is None:  # the schema (and pandas' metadata) of the table's frame
                        first = self._table_rows(b.start, b.start + 1, kinds, codes[b.start:b.start + 1],
                                                 _text_column(b.data[:1]), _text_column(b.subject[:1]))
                        writer = parquet_writer(path, pa.Schema.from_pandas(first, preserve_index=False))
                    if set(map(type, kinds)) == {str}:
                        block = pa.Table.from_arrays(
                            [pa.array(np.arange(b.start, b.end, dtype=np.int64)), pa.array(times[b.start:b.end]),
                             b.kind, b.subject, b.data], schema=writer.schema)
                    else:  # kinds that are not strings: as the table's frame holds them
                        df = self._table_rows(b.start, b.end, kinds, codes[b.start:b.end], _text_column(b.data),
                                              _text_column(b.subject))
                        block = pa.Table.from_pandas(df, schema=writer.schema, preserve_index=False)
                    writer.write_table(block)
            finally:
                if writer is not None:
                    writer.close()


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns of a table's parquet file whose pages are dictionary-encoded: its text
    columns (kinds, tenants, statuses, ops: few distinct values). Numbers and lists are
    written plain: a dictionary of ids, times or sizes, which pyarrow tries by default for
    every column, costs time to build and saves nothing. The encoding only: a file reads
    back as the same table."""
    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def parquet_writer(path: "str | Path", schema: pa.Schema):
    """A ``pyarrow.parquet.ParquetWriter`` for a table of ``schema`` written in parts (row
    groups), encoded as :func:`dictionary_columns` says."""
    import pyarrow.parquet as pq

    return pq.ParquetWriter(path, schema, use_dictionary=dictionary_columns(schema))


def write_frame(df: pd.DataFrame, path: "str | Path") -> None:
    """``df.to_parquet(path, index=False)`` (the same schema and pandas metadata, Snappy), its
    columns encoded as :func:`dictionary_columns` says."""
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if df.attrs:  # as pandas keeps them
        table = table.replace_schema_metadata({**table.schema.metadata, "PANDAS_ATTRS": json.dumps(df.attrs)})
    pq.write_table(table, path, compression="snappy", use_dictionary=dictionary_columns(table.schema))


class _Row:
    """What a record whose data is a row of an :class:`IntRows` stores when the rows know it
    by its position in the log (:data:`ROW`, one object for all): no int object per record."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ROW"

    def __reduce__(self) -> str:
        return "ROW"  # pickled by name: the one object


#: the data a record stores when its row is found by its position (:meth:`IntRows.rows_at`)
ROW = _Row()


def _derive(f, stored, position: int):
    """A derived kind's data: ``f`` (its maker) applied to what its record at log
    ``position`` stored, or, for :data:`ROW`, the row known by that position."""
    return f.at(position) if stored is ROW else f(stored)


def release_freed() -> None:
    """Give the memory the allocators hold free back to the system: Arrow's pool's unused
    pages and the C heap's (glibc's ``malloc_trim``; nothing elsewhere). A large run frees
    hundreds of MB of short-lived arrays, lists and Arrow buffers between its stages
    (deriving the tables, setting up and writing each one); the allocators keep freed pages
    mapped, so without this each stage's garbage would add to the next one's peak."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once (None where there is none)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class IntRows:
    """Data tuples of ``width`` exact ints stored as rows of one int64 array (8 bytes a value,
    no tuple or int object per record): the data of a derived kind whose records are mostly
    such tuples (the engine's memory records: owner, offset, sizes and the pool's levels).
    :meth:`store` keeps a fitting tuple as its row number and anything else as itself;
    calling the rows with what was stored gives the tuple back (ints read back as ints).

    The last rows may be *made on demand* (:meth:`extend_made`): a writer that knows them as
    a function of a few columns (the fast core's memory records: each a job's allocation or
    free on one device of an empty ideal pool) hands over that function instead of the rows;
    :meth:`take` and every read make just the rows asked for. Anything that appends rows
    (:meth:`store`, :meth:`appendable`) first makes them for good, so row numbers stay
    positions in :attr:`values`. Such records store :data:`ROW` instead of their row number
    (no int object per record): their rows follow their positions in the log, kept in
    :attr:`at` (8 bytes a record; :meth:`at` reads one, :meth:`rows_at` many)."""

    __slots__ = ("width", "values", "made", "n_made", "positions", "segments")

    def __init__(self, width: int) -> None:
        self.width = width
        self.values = array("q")
        self.made: "Callable[[np.ndarray], np.ndarray] | None" = None  # rows (relative) -> (k, width) int64
        self.n_made = 0
        self.positions = array("q")  # the log positions of the records that store ROW, ascending
        self.segments: list = []  # (index in positions, its row): from there on, one row per record

    def extend_made(self, n: int, make: "Callable[[np.ndarray], np.ndarray]", positions: np.ndarray) -> None:
        """Rows ``r .. r + n - 1`` (``r``: the number of rows so far) are ``make(rows - r)``
        (an int64 array of the relative row numbers -> the ``(k, width)`` int64 rows), made
        when read; they are the rows of the records at log ``positions`` (ascending, after
        every record that stored ROW before), which store :data:`ROW`."""
        values = self.appendable()
        if len(positions) != n or (len(self.positions) and len(positions) and positions[0] <= self.positions[-1]):
            raise ValueError("int rows: the made rows' records must follow the earlier ones, one row each")
        self.segments.append((len(self.positions), len(values) // self.width))
        self.positions.frombytes(memoryview(np.ascontiguousarray(positions, dtype=np.int64)).cast("B"))
        self.made, self.n_made = make, n

    def rows_at(self, stored: list, positions: np.ndarray) -> "np.ndarray | None":
        """The row numbers of the records at log ``positions`` (``stored``: the log's data
        column) as an int64 array, when every one stored a row (its number, or :data:`ROW`);
        else None. Gathered a block at a time (see :func:`ints_at`); a block whose records
        are all among :attr:`positions` (they stored ROW) is found there alone, nothing
        gathered."""
        out = np.empty(len(positions), dtype=np.int64)
        at = np.frombuffer(self.positions, dtype=np.int64) if len(self.positions) else np.zeros(0, np.int64)
        starts = np.array([s for s, _ in self.segments], dtype=np.int64)
        firsts = np.array([r for _, r in self.segments], dtype=np.int64)

        def found(pos: np.ndarray) -> "np.ndarray | None":
            """The rows of the records at ``pos`` when all are among those that stored ROW."""
            j = np.searchsorted(at, pos)
            if (j >= len(at)).any() or (at[np.minimum(j, len(at) - 1)] != pos).any():
                return None
            seg = np.searchsorted(starts, j, side="right") - 1
            return firsts[seg] + (j - starts[seg])

        for s in range(0, len(positions), TEXT_BLOCK):
            pos = positions[s:s + TEXT_BLOCK]
            rows = found(pos)
            if rows is not None:  # every one stored ROW: nothing to gather
                out[s:s + len(pos)] = rows
                continue
            part = _gather(stored, pos.tolist())
            n_row = part.count(ROW)
            where = slice(s, s + len(part))
            if n_row:
                is_row = np.ones(len(part), dtype=bool) if n_row == len(part) else \
                    np.fromiter((d is ROW for d in part), dtype=bool, count=len(part))
                rows = found(pos[is_row])
                if rows is None:
                    return None
                out[where][is_row] = rows
                if n_row == len(part):
                    continue
                part = list(compress(part, ~is_row))
                where = np.flatnonzero(~is_row) + s
            if set(map(type, part)) != {int}:
                return None
            try:
                out[where] = part
            except OverflowError:
                return None
        return out

    def at(self, position: int) -> tuple:
        """The data of the record at log ``position``, which stored :data:`ROW`."""
        j = bisect_left(self.positions, position)
        if j == len(self.positions) or self.positions[j] != position:
            raise KeyError(f"int rows: the record at {position} has no row")
        start, first = self.segments[bisect_right(self.segments, (j, 2**63)) - 1]
        return self(first + j - start)

    def appendable(self) -> array:
        """:attr:`values`, with any rows made on demand made and appended: the array new
        rows are appended to (row ``len(values) // width`` next)."""
        if self.made is not None:
            make, n, self.made, self.n_made = self.made, self.n_made, None, 0
            for s in range(0, n, TEXT_BLOCK):
                self.values.frombytes(memoryview(np.ascontiguousarray(
                    make(np.arange(s, min(s + TEXT_BLOCK, n), dtype=np.int64)), dtype=np.int64)).cast("B"))
        return self.values

    def store(self, data: tuple) -> "int | tuple":
        """The row number of ``data`` (appended) if it is ``width`` exact ints within int64,
        else ``data`` itself."""
        if len(data) != self.width or set(map(type, data)) != {int}:
            return data
        values = self.appendable()
        n = len(values)
        try:
            values.extend(data)
        except OverflowError:
            del values[n:]
            return data
        return n // self.width

    def __call__(self, stored: "int | tuple") -> tuple:
        if stored is ROW:
            raise TypeError("a record that stored ROW is read by its position (IntRows.at)")
        if type(stored) is int:
            i = stored * self.width
            if i < len(self.values):
                return tuple(self.values[i:i + self.width])
            return tuple(self.take(np.array([stored], dtype=np.int64))[0].tolist())
        return stored

    def __getstate__(self) -> tuple:
        return self.width, self.appendable(), self.positions, self.segments

    def __setstate__(self, state: tuple) -> None:
        self.width, self.values, self.positions, self.segments = state
        self.made, self.n_made = None, 0

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (row numbers, an int array) as a ``(len(rows), width)`` int64 array."""
        explicit = len(self.values) // self.width
        stored = np.frombuffer(self.values, dtype=np.int64).reshape(-1, self.width) if explicit else \
            np.zeros((0, self.width), np.int64)
        if self.made is None:
            return stored[rows]
        later = rows >= explicit
        if not later.any():
            return stored[rows]
        if later.all():
            return self.make_rows(rows - explicit)
        out = np.empty((len(rows), self.width), dtype=np.int64)
        out[~later] = stored[rows[~later]]
        out[later] = self.make_rows(rows[later] - explicit)
        return out

    def make_rows(self, rel: np.ndarray) -> np.ndarray:
        """The rows made on demand at ``rel`` (relative to the first of them)."""
        if len(rel) and (rel.min() < 0 or rel.max() >= self.n_made):
            raise IndexError("int rows: row out of range")
        return self.made(rel)

    def matrix(self) -> np.ndarray:
        """All rows as an ``(n, width)`` int64 array (a view, once every row is made: read it
        before more rows come)."""
        values = self.appendable()
        return np.frombuffer(values, dtype=np.int64).reshape(-1, self.width) if len(values) \
            else np.zeros((0, self.width), np.int64)


class Records(Sequence):
    """A read-only view of an :class:`EventLog` as ``(time_s, kind, subject, data)`` tuples,
    built on demand from its columns (``append`` is :meth:`EventLog.emit`)."""

    __slots__ = ("_log",)

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def __len__(self) -> int:
        return len(self._log.time)

    def __iter__(self) -> Iterator[tuple[float, str, Any, tuple]]:
        log = self._log
        return zip(log.time, map(log.kinds.__getitem__, log.code), log.subject, log._data_iter())

    def __reversed__(self) -> Iterator[tuple[float, str, Any, tuple]]:
        return (self[i] for i in range(len(self) - 1, -1, -1))

    def __getitem__(self, i):
        log = self._log
        if isinstance(i, slice):
            return list(zip(log.time[i], map(log.kinds.__getitem__, log.code[i]), log.subject[i],
                            log.data_at(list(range(len(log.time))[i]))))
        c = log.code[i]
        d = log.data[i]
        if c in log.derived:
            d = _derive(log.derived[c], d, range(len(log.time))[i])
        return log.time[i], log.kinds[c], log.subject[i], d

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Records):
            other = list(other)
        if not isinstance(other, (list, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def append(self, record: tuple) -> None:
        self._log.emit(*record)

    def __repr__(self) -> str:
        return f"Records({len(self)} records)"


def _gather(column, positions: list) -> list:
    """``[column[i] for i in positions]`` without a Python step per element."""
    return list(map(column.__getitem__, positions))


def ints_at(column: list, positions: np.ndarray) -> "np.ndarray | None":
    """``column``'s values at ``positions`` as an int64 array when every one is an exact int
    within int64, else None; gathered a block at a time, so no list of them all is held (a
    million memory records' rows or devices)."""
    out = np.empty(len(positions), dtype=np.int64)
    for s in range(0, len(positions), TEXT_BLOCK):
        part = _gather(column, positions[s:s + TEXT_BLOCK].tolist())
        if set(map(type, part)) != {int}:
            return None
        try:
            out[s:s + len(part)] = part
        except OverflowError:
            return None
    return out


class ByKind:
    """A log's records grouped by kind without a Python step per record: the kinds are
    factorised, each kind's records gathered in log order by numpy indexing and split into
    columns by ``zip``. The events table (:meth:`EventLog.table`) and the serving tables
    (:class:`llmos_sim.serving.metrics.Frames`) share one.

    ``kinds``: the distinct kinds in order of appearance; ``codes``: each record's index in it;
    ``groups``: kind → :class:`KindRecords`.
    """

    def __init__(self, records: "EventLog | Records | list") -> None:
        log = records._log if isinstance(records, Records) else records
        if isinstance(log, EventLog):  # the columns, gathered by numpy indexing
            self.kinds, codes = _present_kinds(log)
            times, subjects, datas = log.time, log.subject, log.data
            derived = {log.kinds[c]: f for c, f in log.derived.items()}
        else:  # a plain list of record tuples
            codes, kinds = pd.factorize(np.array([r[1] for r in records], dtype=object))
            self.kinds = list(kinds)
            times = [r[0] for r in records]
            subjects = [r[2] for r in records]
            datas = [r[3] for r in records]
            derived = {}
        self.codes: np.ndarray = codes
        self.order = _grouped(codes, len(self.kinds))  # the records grouped by kind, in log order within
        counts = np.bincount(codes, minlength=len(self.kinds))
        ends = np.cumsum(counts)
        self.groups: dict[Any, KindRecords] = {}
        for kind, start, end in zip(self.kinds, (ends - counts).tolist(), ends.tolist()):
            if start == end:
                continue
            seq = self.order[start:end]
            pos = seq.tolist()
            data = _gather(datas, pos)
            if kind in derived:
                f = derived[kind]
                data = [_derive(f, d, i) for d, i in zip(data, pos)]
            self.groups[kind] = KindRecords(seq, tuple(_gather(times, pos)), tuple(_gather(subjects, pos)), tuple(data))

    def data_strings(self):
        """Every record's data as a JSON object keyed by the kind's :data:`FIELDS`, as a string
        column in log order (see :meth:`KindRecords.data_json`)."""
        parts = [group.data_json(kind) for kind, group in self.groups.items()]
        return _text_column(_in_log_order(parts, self.order))


def _present_kinds(log: EventLog) -> tuple[list, np.ndarray]:
    """The kinds with records, in order of their first record (a kind may be interned before
    it has one), and each record's index in that list (uint16, as the log's codes). A log has
    few kinds: each one's first record is found by a scan, not by sorting the codes."""
    codes = np.frombuffer(log.code, dtype=np.uint16) if len(log.code) else np.zeros(0, np.uint16)
    present = np.flatnonzero(np.bincount(codes))
    first = [int(np.argmax(codes == c)) for c in present.tolist()]
    present = present[np.argsort(first)]
    remap = np.zeros(len(log.kinds) + 1, dtype=np.uint16)
    remap[present] = np.arange(len(present))
    return [log.kinds[c] for c in present.tolist()], remap[codes]


def _grouped(codes: np.ndarray, n_kinds: int) -> np.ndarray:
    """The records' positions grouped by kind index (``codes``: each record's, ``0..n_kinds-1``),
    in log order within a kind: ``np.argsort(codes, kind="stable")``, made by one scan per kind
    into one array."""
    order = np.empty(len(codes), dtype=np.intp)
    at = 0
    for k in range(n_kinds):
        part = np.flatnonzero(codes == k)
        order[at:at + len(part)] = part
        at += len(part)
    return order


def _in_log_order(parts: list, order: np.ndarray) -> pa.Array:
    """The kinds' text arrays (``parts``, concatenated: the records in ``order``) put back in
    log order."""
    if not parts:
        return pa.array([], type=pa.large_string())
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    # one array, then one take: a chunked array's take of texts costs several times as much
    return pa.concat_arrays([p.combine_chunks() if isinstance(p, pa.ChunkedArray) else p for p in parts]) \
        .take(pa.array(inverse))


def _text_column(texts: "pa.Array | pa.ChunkedArray"):
    """Arrow texts as the table's string column (Arrow-backed where this pandas infers that
    for strings: no copy, chunks kept)."""
    dtype = pd.Series([""]).dtype  # what a table infers for strings with this pandas
    if dtype == object:
        return texts.to_numpy(zero_copy_only=False)
    return pd.array(texts, dtype=dtype)


#: records per block of the events table's ``data`` column (:func:`_data_texts`)
TEXT_BLOCK = 1 << 16


def _data_texts(log: EventLog, kinds: list, codes: np.ndarray, size: "int | None" = None):
    """The events table's ``data`` column made block by block of the log (see
    :func:`_event_blocks`); the result stays in chunks."""
    return _text_column(pa.chunked_array([b.data for b in _event_blocks(log, kinds, codes, size)],
                                         type=pa.large_string()))


class _Block:
    """Rows ``start:end`` of the events table as Arrow arrays (``kind``, ``subject``, ``data``)."""

    __slots__ = ("start", "end", "kind", "subject", "data")

    def __init__(self, start: int, end: int, kind: pa.Array, subject: pa.Array, data: pa.Array) -> None:
        self.start, self.end, self.kind, self.subject, self.data = start, end, kind, subject, data


def _event_blocks(log: EventLog, kinds: list, codes: np.ndarray, size: "int | None" = None) -> Iterator[_Block]:
    """The events table's text columns in blocks of ``size`` records, in log order. Each kind's
    data are split into columns once, for the whole log (:class:`_KindColumns`: numbers as
    numpy arrays, the engine's memory records as their rows of ints), which decides how each
    field is written from all its records; each block then writes the slice of every kind's
    columns that falls in it and puts the texts in log order. Only one block's texts are held
    at a time (besides what the caller keeps)."""
    size = size or TEXT_BLOCK
    order = _grouped(codes, len(kinds))  # the records grouped by kind, in log order within
    counts = np.bincount(codes, minlength=len(kinds))
    ends = np.cumsum(counts)
    derived = {log.kinds[c]: f for c, f in log.derived.items()}
    cols = [_KindColumns(kind, order[e - n:e], log, derived.get(kind))
            for kind, n, e in zip(kinds, counts.tolist(), ends.tolist())]
    kind_text = pa.array(list(map(str, kinds)), type=pa.large_string()) if set(map(type, kinds)) == {str} else None
    subjects = log.subject
    release_freed()  # the lists the columns were split from
    for s in range(0, len(codes), size):
        e = min(s + size, len(codes))
        parts, where = [], []
        for c in cols:
            lo, hi = np.searchsorted(c.seq, (s, e)).tolist()
            if hi > lo:
                parts.append(c.texts(lo, hi))
                where.append(c.seq[lo:hi])
        block = codes[s:e]
        kind = kind_text.take(pa.array(block)) if kind_text is not None else \
            pa.array([str(kinds[k]) for k in block.tolist()], type=pa.large_string())
        yield _Block(s, e, kind, _subject_texts(subjects[s:e]),
                     _in_log_order(parts, np.concatenate(where) - s))


def _subject_texts(values: list) -> pa.Array:
    """``str`` of each subject as Arrow texts: by Arrow from one int64 array where they are
    exact ints (job and device ids: ``str`` and Arrow write ints alike), the rest by
    :func:`_str_by_distinct`."""
    types = set(map(type, values))
    if int in types:
        ints = [type(v) is int for v in values] if len(types) > 1 else None
        try:
            num = np.array(values if ints is None else list(compress(values, ints)), dtype=np.int64)
        except OverflowError:
            pass
        else:
            text = pa.array(num).cast(pa.large_string())
            if ints is None:
                return text
            rest = [v for v, i in zip(values, ints) if not i]
            mask = np.array(ints)
            out = np.empty(len(values), dtype=object)
            out[mask] = text.to_numpy(zero_copy_only=False)
            out[~mask] = np.asarray(_str_by_distinct(rest), dtype=object)
            return pa.array(out, type=pa.large_string())
    return pa.array(np.asarray(_str_by_distinct(values), dtype=object), type=pa.large_string())


class _KindColumns:
    """One kind's records (positions ``seq`` in the log) with their data split into columns
    for the whole log, and how each field is written (:func:`_field_way`, decided from all
    its values, as :meth:`KindRecords.data_json` decides): an ``int`` or ``float`` field as a
    numpy array, any other as the tuple of its values; a kind stored as rows of an
    :class:`IntRows` (every record a row: the engine's memory records) reads its fields
    straight from the rows' int64 matrix. Data that are not tuples of one length (or do not
    match the kind's :data:`FIELDS`) are kept as records and written one by one. Records that
    hold one data object between them (the engine stores equal start data once) are split
    and written once per object (:attr:`codes`: each record's object, in order of first
    appearance; the texts of all objects made at the first block and kept)."""

    __slots__ = ("kind", "seq", "ways", "fields", "rows", "records", "codes", "distinct")

    def __init__(self, kind: Any, seq: np.ndarray, log: EventLog, make: "Callable | None") -> None:
        self.kind, self.seq = kind, seq
        self.ways: tuple = ()
        self.fields: list = []
        self.rows: "np.ndarray | None" = None
        self.records: "list | None" = None
        self.codes: "np.ndarray | None" = None
        self.distinct: "pa.Array | None" = None
        names = FIELDS.get(kind, ())
        rows = make.rows_at(log.data, seq) if isinstance(make, IntRows) and len(seq) else None
        if rows is not None:  # every record a row of exact ints
            if make.width == len(names):  # int64 fields
                self.rows = rows
                self.ways = ("int",) * make.width
                self.fields = [make]
                return
            self.records = list(map(tuple, make.take(rows).tolist()))
            return
        stored = _gather(log.data, seq.tolist())
        if hasattr(make, "columns") and len(stored) and set(map(type, stored)) == {int}:
            columns = make.columns(stored)  # the data field by field, with no tuple per record
            if len(columns) != len(names):
                self.records = list(zip(*columns))
                return
        else:
            data = list(map(make, stored)) if make is not None else stored
            if not data or set(map(type, data)) != {tuple} or len(set(map(len, data))) != 1 \
                    or len(data[0]) != len(names):
                self.records = data
                return
            columns = zip(*(self._shared(data) if make is None and names else data))
        del stored
        ways = []
        for col in columns:
            types = set(map(type, col))
            arr = np.array(col) if types <= _NUMBERS else None
            way = _field_way(types, arr is not None and arr.dtype == np.int64)
            ways.append(way)
            self.fields.append(arr if way == "int" else np.array(col, dtype=np.float64) if way == "float" else col)
        self.ways = tuple(ways)

    def _shared(self, data: list) -> list:
        """``data``, or, when at most half as many distinct objects are held between them, those
        objects in order of first appearance (each record's one in :attr:`codes`)."""
        codes, objects = pd.factorize(np.fromiter(map(id, data), dtype=np.uintp, count=len(data)))
        if 2 * len(objects) > len(data):
            return data
        seen = np.maximum.accumulate(codes)
        first = np.flatnonzero(np.diff(seen, prepend=-1) > 0)  # where each code appears first
        self.codes = codes
        return _gather(data, first.tolist())

    def texts(self, lo: int, hi: int) -> pa.Array:
        """The JSON texts of records ``lo:hi`` of this kind (positions ``seq[lo:hi]``)."""
        if self.records is not None:
            return _kind_json(self.kind, self.records[lo:hi], None, ())
        if not self.ways:  # empty tuples
            return pa.array(["{}"] * (hi - lo), type=pa.large_string())
        if self.codes is not None:  # the objects' texts, by each record's object
            if self.distinct is None:
                n = len(self.fields[0])
                self.distinct = _kind_json(self.kind, (), self.ways, self.ways, lambda j: self._field(j, 0, n))
            return self.distinct.take(pa.array(self.codes[lo:hi]))
        if self.rows is not None:  # equal rows, equal texts: each run of equal rows written once
            m = self.fields[0].take(self.rows[lo:hi])
            new = np.ones(len(m), dtype=bool)
            new[1:] = (m[1:] != m[:-1]).any(axis=1)
            first = m[new]
            texts = _kind_json(self.kind, (), self.ways, self.ways, lambda j: _field_json(None, "int", first[:, j]))
            return texts if len(first) == len(m) else texts.take(pa.array(np.cumsum(new) - 1))
        return _kind_json(self.kind, (), self.ways, self.ways, lambda j: self._field(j, lo, hi))

    def _field(self, j: int, lo: int, hi: int) -> pa.Array:
        way, values = self.ways[j], self.fields[j]
        if way == "int":
            return _field_json(None, way, values[lo:hi])
        if way == "float":
            return _float_json(values[lo:hi])
        return _field_json(values[lo:hi], way)


_NUMBERS = frozenset((int, np.int64, float, np.float64))
_FLOATS = frozenset((float, np.float64))


def _field_way(types: set, int64: bool) -> str:
    """How a data field is written, from the exact types of all its values and whether numpy
    makes them one int64 array: ``int`` and ``float`` through Arrow, ``str`` once per
    distinct value, ``any`` by ``json.dumps``."""
    if types and types <= _NUMBERS:
        if int64:
            return "int"
        if types <= _FLOATS:
            return "float"
    return "str" if types == {str} else "any"


def _field_json(values: Sequence, way: str, array: "np.ndarray | None" = None) -> pa.Array:
    """``values`` as JSON texts written the ``way`` :func:`_field_way` chose (``array``: the
    values as numpy made them, if at hand). Each value's text depends on the way alone, so
    any slice of a column written the same way gives the same texts."""
    if way == "int":
        return pa.array(np.array(values, dtype=np.int64) if array is None else array).cast(pa.large_string())
    if way == "float":
        return _float_json(np.array(values, dtype=np.float64) if array is None else array)
    if way == "str":
        codes, distinct = pd.factorize(np.array(values, dtype=object))
        return pa.array([json.dumps(v) for v in distinct], type=pa.large_string()).take(pa.array(codes))
    texts = _int_tuples_json(values)
    if texts is not None:
        return texts
    return pa.array([json.dumps(v, default=_json_default) for v in values], type=pa.large_string())


def _int_tuples_json(values: Sequence) -> "pa.Array | None":
    """``json.dumps`` of each value when every value is a tuple of exact ints within int64
    (device sets): ``[1, 2]``, ``[]``, written by Arrow from one flat int64 array; else None."""
    if not len(values) or set(map(type, values)) != {tuple}:
        return None
    lens = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    flat = list(chain.from_iterable(values))
    if flat and set(map(type, flat)) != {int}:
        return None
    try:
        ints = np.array(flat, dtype=np.int64)
    except OverflowError:
        return None
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(ints).cast(pa.large_string()))
    return pc.binary_join_element_wise(_TEXT["["], pc.binary_join(lists, _TEXT[", "]), _TEXT["]"], _TEXT[""])


def _kind_json(kind: str, data: Sequence, columns: "list[tuple] | None", ways: Sequence[str], field_json=None) -> pa.Array:
    """One kind's records' data as JSON objects keyed by ``FIELDS[kind]`` (``f0, f1, ...``
    where a record's data does not match them), in order. ``columns``: the data split by
    field when the kind's data are all tuples of one length, else ``None``; ``ways``: per
    field (:func:`_field_way`); ``field_json(j)``: field ``j``'s texts (default: from
    ``columns``)."""
    names = FIELDS.get(kind, ())
    if columns is None or len(ways) != len(names):
        def obj(d: Any) -> str:
            d = d if isinstance(d, tuple) else (d,)
            keys = names if len(d) == len(names) else [f"f{j}" for j in range(len(d))]
            return json.dumps(dict(zip(keys, d)), default=_json_default)

        return pa.array(["{}" if isinstance(d, tuple) and not d else obj(d) for d in data], type=pa.large_string())
    if not ways:  # empty tuples
        return pa.array(["{}"] * len(data), type=pa.large_string())
    parts: list = []
    for j, name in enumerate(names):
        parts += [pa.scalar(("{" if j == 0 else ", ") + json.dumps(name) + ": ", type=pa.large_string()),
                  field_json(j) if field_json is not None else _field_json(columns[j], ways[j])]
    parts.append(_TEXT["}"])
    return pc.binary_join_element_wise(*parts, _TEXT[""])


class KindRecords:
    """One kind's records in log order: ``seq`` (their positions in the log, int64), and
    column by column their ``time_s``, ``subject`` and ``data`` (tuples)."""

    __slots__ = ("seq", "time_s", "subject", "data", "_columns", "_arrays")

    def __init__(self, seq: np.ndarray, time_s: tuple, subject: tuple, data: tuple) -> None:
        self.seq, self.time_s, self.subject, self.data = seq, time_s, subject, data
        self._columns: "list[tuple] | None | bool" = False  # not split yet
        self._arrays: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.seq)

    def data_columns(self) -> "list[tuple] | None":
        """The data split into one tuple per field, when every record's data is a tuple of
        the same length; ``None`` otherwise."""
        if self._columns is False:
            data = self.data
            if set(map(type, data)) == {tuple} and len(set(map(len, data))) == 1:
                self._columns = list(zip(*data))
            else:
                self._columns = None
        return self._columns

    def data_array(self, field: int) -> np.ndarray:
        """Data column ``field`` (see :meth:`data_columns`) as ``np.array`` infers it (kept)."""
        a = self._arrays.get(field)
        if a is None:
            a = self._arrays[field] = np.array(self.data_columns()[field])
        return a

    def _way(self, field: int) -> str:
        values = self.data_columns()[field]
        types = set(map(type, values))
        return _field_way(types, bool(types) and types <= _NUMBERS and self.data_array(field).dtype == np.int64)

    def data_json(self, kind: str) -> pa.Array:
        """Each record's data as a JSON object keyed by ``FIELDS[kind]`` (``f0, f1, ...`` where a
        record's data does not match them), in order (an Arrow array): integers and floats
        formatted by Arrow (shortest round-trip digits; whole floats keep a ``.0``), strings
        encoded once per distinct value, anything else by ``json.dumps``."""
        cols = self.data_columns()
        ways = tuple(map(self._way, range(len(cols)))) if cols is not None else ()
        return _kind_json(kind, self.data, cols, ways,
                          lambda j: _field_json(cols[j], ways[j], self._arrays.get(j) if ways[j] != "str" else None))


def _json_default(v: Any) -> Any:
    """numpy scalars (and anything else with ``item()``) as plain Python values for ``json``."""
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot write {type(v).__name__} as JSON")


def _float_json(a: np.ndarray) -> pa.Array:
    """float64 values as JSON numbers: Arrow's shortest round-trip digits, ``.0`` added to whole
    numbers (so they read back as floats), ``NaN`` / ``Infinity`` / ``-Infinity`` as Python's
    ``json`` writes them."""
    text = pa.array(a).cast(pa.large_string())
    whole = pc.invert(pc.match_substring_regex(text, r"[.eEna]"))
    text = pc.if_else(whole, pc.binary_join_element_wise(text, _TEXT[".0"], _TEXT[""]), text)
    if not np.isfinite(a).all():
        text = pc.if_else(pa.array(np.isnan(a)), _TEXT["NaN"], text)
        text = pc.if_else(pa.array(np.isposinf(a)), _TEXT["Infinity"], text)
        text = pc.if_else(pa.array(np.isneginf(a)), _TEXT["-Infinity"], text)
    return text


def parse_data(text: str) -> dict[str, Any]:
    """One ``data`` cell of the events table as a dict (``{}`` for none): JSON (this version);
    tables written by earlier versions held the tuple's ``repr``, read here too, keyed ``f0, f1,
    ...``."""
    if not isinstance(text, str) or not text:
        return {}
    if text[0] == "{":
        return json.loads(text)
    import ast
    import re

    try:
        v = ast.literal_eval(re.sub(r"np\.\w+\(([^()]*)\)", r"\1", text))
    except (ValueError, SyntaxError):
        return {}
    v = v if isinstance(v, tuple) else (v,)
    return {f"f{j}": x for j, x in enumerate(v)}


#: the pieces of a tuple's ``repr``, as Arrow scalars of the type the columns have
_TEXT = {t: pa.scalar(t, type=pa.large_string()) for t in ("}", "", ".0", "NaN", "Infinity", "-Infinity", "[", "]",
                                                            ", ")}


def _str_by_distinct(values: list):
    """``[str(v) for v in values]`` as a table column, converting each distinct value once:
    subjects repeat (a request is the subject of a few records, a replica of every batch).
    Only when every value is an exact int or str, which equality tells apart (unlike ``1``,
    ``1.0`` and ``True``); else value by value."""
    if not set(map(type, values)) <= {int, str}:
        return list(map(str, values))
    codes, distinct = pd.factorize(np.array(values, dtype=object))
    # a Series infers the column's dtype from the distinct strings as the DataFrame would from all
    return pd.Series(list(map(str, distinct))).array.take(codes)
