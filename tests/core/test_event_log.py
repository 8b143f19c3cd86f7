"""The event log's columnar storage: every record reads back as the tuple that was emitted."""
from __future__ import annotations

import json
import pickle
from operator import itemgetter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_sim import events as E
from llmos_sim.events import ByKind, EventLog

_kinds = st.sampled_from([E.ARRIVE, E.START, E.FINISH, E.FAIL, E.REQ_ARRIVE, "custom"])
_subjects = st.one_of(st.none(), st.integers(-5, 10**6), st.text(max_size=3))
_data = st.one_of(st.just(()), st.tuples(st.integers(0, 9), st.floats(allow_nan=False)), st.tuples(st.text(max_size=4)))
_records = st.lists(st.tuples(st.floats(0, 1e9), _kinds, _subjects, _data), max_size=40)


@given(_records, st.booleans())
@settings(max_examples=60, deadline=None)
def test_records_read_back_as_emitted(recs, derive):
    log = EventLog()
    if derive:  # arrivals store an object; their data tuple is made when read
        log.derive(E.ARRIVE, itemgetter(0))
    for r in recs:
        log.emit(*r[:3], [r[3]] if derive and r[1] == E.ARRIVE else r[3])
    assert len(log) == len(log.records) == len(recs)
    assert list(log.records) == recs and list(log) == recs
    assert log.records == recs
    if recs:
        assert log.records[-1] == recs[-1] and log.records[0] == recs[0]
        assert log.records[1:3] == recs[1:3]
    for kind in (E.ARRIVE, "custom"):
        assert log.of(kind) == [(i, t, s, d) for i, (t, k, s, d) in enumerate(recs) if k == kind]
    # grouping from the columns equals grouping from plain tuples
    a, b = ByKind(log.records), ByKind(list(recs))
    assert a.kinds == b.kinds and np.array_equal(a.codes, b.codes)
    for k, g in b.groups.items():
        h = a.groups[k]
        assert h.seq.tolist() == g.seq.tolist() and h.subject == g.subject and h.data == g.data
        assert list(h.time_s) == list(g.time_s)
    back = pickle.loads(pickle.dumps(log))
    assert back.records == recs


def test_kinds_are_interned_in_order_of_first_appearance():
    log = EventLog()
    log.emit(1.0, "b", 1)
    log.emit(2.0, "a", 2, (3,))
    log.emit(3.0, "b", 3)
    assert log.kinds == ["b", "a"] and list(log.code) == [0, 1, 0]
    assert log.times_array().tolist() == [1.0, 2.0, 3.0]
    assert log.positions("b").tolist() == [0, 2] and log.positions("zzz").tolist() == []
    with pytest.raises(ValueError, match="already has records"):
        log.derive("a", tuple)
    log.records.append((4.0, "a", 4, ()))  # the view's append is emit
    assert log.records[-1] == (4.0, "a", 4, ()) and len(log) == 4
    assert log.table()["kind"].tolist() == ["b", "a", "b", "a"]


# -- tables from the columns = tables record by record --------------------------------------
from llmos_sim.engine import Engine  # noqa: E402
from llmos_sim.metrics import tables as T  # noqa: E402
from llmos_sim.policies.memory.fit import FirstFitPool  # noqa: E402
from llmos_sim.policies.scheduling import FIFO, LAS, SRTF  # noqa: E402
from llmos_sim.types import GB, Cluster, DeviceSpec, Job  # noqa: E402

_DEV = DeviceSpec("d", 1e13, 8 * GB)
_job = st.tuples(st.integers(0, 40), st.sampled_from([1, 2, 3, 4, 8, 9]), st.integers(1, 40),
                 st.sampled_from([0, 3, 6, 9]), st.booleans(), st.sampled_from([1000, 1000, 500, 250]))


def _same_tables(log, cluster):
    import pandas as pd

    a, b = T.jobs_table(log, cluster), T._jobs_table_loop(log, cluster)
    pd.testing.assert_frame_equal(a.drop(columns="devices"), b.drop(columns="devices"))
    assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a["devices"], b["devices"]))
    pd.testing.assert_frame_equal(T.timeline_table(log, cluster), T._timeline_table_loop(log, cluster))
    pd.testing.assert_frame_equal(T.memory_table(log, cluster), _memory_table_loop(log, cluster))
    _memory_written_as_made(log, cluster)


def _memory_written_as_made(log, cluster):
    """The memory table written unmade (from the log's columns, in row groups of 3 rows when
    the records are the engine's int rows) reads back as the table."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "memory.parquet"
        rows = T._MemoryRows.of(log)
        if rows is not None:
            rows.write(cluster, path, block=3)
        else:
            T.write_memory_table(log, cluster, path)
        pd.testing.assert_frame_equal(pd.read_parquet(path), T.memory_table(log, cluster), check_exact=True)


def _memory_table_loop(log, cluster):
    """The memory table record by record (the columns' version must equal it)."""
    import pandas as pd

    rows = []
    for i, (t, kind, subj, d) in enumerate(log.records):
        if kind in (E.MEM_ALLOC, E.MEM_FREE):
            rows.append((i, t, subj, "alloc" if kind == E.MEM_ALLOC else "free", *d))
        elif kind == E.MEM_FAIL:
            rows.append((i, t, subj, "fail", d[0], -1, 0, d[1], *d[2:]))
    return T._memory_derived(pd.DataFrame.from_records(rows, columns=T._MEM_COLUMNS), cluster)


@given(st.lists(_job, min_size=1, max_size=12), st.sampled_from(["fifo", "fifo_skip", "las", "srtf"]),
       st.sampled_from(["wait", "fail", "preempt"]), st.sampled_from([None, 25.0]))
@settings(max_examples=50, deadline=None)
def test_tables_from_columns_equal_the_record_loop(spec, sched, full, until):
    jobs = []
    for i, (t, g, d, m, el, milli) in enumerate(spec):
        if milli < 1000:
            g, el = 1, False
        jobs.append(Job(i, float(t), g * 1e13 * d * milli / 1000, gpus=g, min_gpus=1 if el and g > 1 else None,
                        gpu_milli=milli, mem_bytes_per_device=m * GB, priority=i % 2,
                        # an allocation that cannot fit: the job fails while running
                        mem_trace=((0.5, "alloc", "k", 7 * GB),) if m == 3 and d > 20 else ()))
    scheduler = {"fifo": FIFO(), "fifo_skip": FIFO(blocking=False), "las": LAS(round_s=7.0),
                 "srtf": SRTF(round_s=5.0)}[sched]
    cluster = Cluster.homogeneous(2, 4, _DEV)
    engine = Engine(cluster, scheduler, pool_factory=FirstFitPool, on_memory_full=full, preempt_overhead_s=1.0)
    _same_tables(engine.run(jobs, until_s=until), cluster)


def test_finished_jobs_are_columns_read_as_finished_job_records():
    from llmos_sim.view import FinishedJob

    cluster = Cluster.homogeneous(1, 2, _DEV)
    jobs = [Job(0, 0.0, 2e13 * 10, gpus=2), Job(1, 1.0, 1e13 * 4)]  # 10 s on 2 devices; then 4 s on 1
    engine = Engine(cluster, FIFO())
    engine.run(jobs)
    fin = engine.finished
    assert len(fin) == 2
    assert fin[0] == FinishedJob(jobs[0], 0.0, 10.0, (0, 1), 20.0)
    assert fin[-1] == FinishedJob(jobs[1], 10.0, 14.0, (0,), 4.0) and fin[-1].jct_s == 13.0
    assert list(fin) == fin[0:2] == [fin[0], fin[1]]


def test_equal_start_records_are_stored_once():
    cluster = Cluster.homogeneous(1, 2, _DEV)
    jobs = [Job(i, float(i), 2e13 * 5, gpus=2) for i in range(4)]  # one after another, on devices (0, 1)
    engine = Engine(cluster, FIFO())
    log = engine.run(jobs)
    starts = [log.data[i] for i in log.positions(E.START).tolist()]
    assert starts == [((0, 1), 1000, 2e13)] * 4 and all(d is starts[0] for d in starts)
    assert all(engine.finished.devices[i] is starts[0][0] for i in range(4))


# values whose JSON text depends on how their whole column is written (ints beyond int64,
# ints beside floats, numpy scalars, strings beside numbers, non-finite floats, and floats
# whose text differs between Arrow's formatting and json.dumps)
_cell = st.one_of(st.integers(-3, 3), st.integers(2**63 - 2, 2**64), st.floats(allow_nan=True), st.text(max_size=2),
                  st.integers(0, 5).map(np.int64), st.floats(-1e20, 1e20).map(np.float64), st.none(),
                  st.sampled_from([1e-05, 1e15, 1e-07]))  # floats Arrow and json.dumps write differently
_kind_data = {
    E.ARRIVE: st.tuples(st.integers(1, 8), st.floats(0, 1e18), st.sampled_from([1000, 500]), st.text(max_size=2)),
    E.START: st.tuples(st.lists(st.integers(0, 9), max_size=3).map(tuple),
                       st.one_of(st.integers(0, 1000), st.floats(0, 1e3)), _cell),
    E.PREEMPT: st.tuples(st.one_of(st.lists(st.integers(-2**63, 2**63 - 1), max_size=3).map(tuple),
                                   st.lists(_cell, max_size=2).map(tuple)), _cell),
    # stored as rows of one IntRows when the log derives them and they are exact ints
    E.MEM_ALLOC: st.one_of(st.tuples(*[st.integers(-3, 2**63 - 1)] * 3), st.tuples(_cell, _cell, _cell), st.tuples(_cell)),
    E.FINISH: st.one_of(st.just(()), st.tuples(_cell)),
    E.MEM_FAIL: st.tuples(*[_cell] * 6),
    "custom": st.one_of(st.tuples(_cell, _cell), st.tuples(_cell), _cell),
}
_mixed = st.lists(st.sampled_from(sorted(_kind_data)).flatmap(lambda k: st.tuples(st.just(k), _kind_data[k])),
                  min_size=1, max_size=30)


@given(_mixed, st.integers(1, 7), st.booleans(), st.integers(1, 3))
@settings(max_examples=80, deadline=None)
def test_events_table_in_blocks_equals_the_whole_columns(recs, block, derive, times):
    """The events table's data texts made block by block are those made from each kind's whole
    column, whatever the block size: how a field is written is decided from all its records.
    Each record is logged ``times`` times holding the same data object (as the engine shares
    equal start data), so a kind's records may hold half as many objects or fewer."""
    log = EventLog()
    rows = None
    if derive:
        log.derive(E.ARRIVE, itemgetter(0))
        rows = log.int_rows((E.MEM_ALLOC,), 3)
    for i, (kind, d) in enumerate(recs):
        stored = [d] if derive and kind == E.ARRIVE else rows.store(d) if derive and kind == E.MEM_ALLOC else d
        for _ in range(times):
            log.emit(float(i), kind, i, stored)
    kinds, codes = E._present_kinds(log)
    whole = ByKind(log).data_strings()
    assert list(E._data_texts(log, kinds, codes, size=block)) == list(whole)
    table = log.table()
    assert table["data"].tolist() == list(whole) and table["kind"].tolist() == [k for k, _ in recs for _ in range(times)]


_ROWS8 = [(0,) * 8, (5, 0, 2**40, 2**40, 2**40, 2**40, 2**40, 7), (5, 0, 2**40, 2**40, 0, 0, 0, 7),
          (-1, 2**63 - 1, 0, 0, 0, 0, 0, -2**63)]


@given(st.lists(st.tuples(st.sampled_from([E.MEM_ALLOC, E.MEM_FREE, E.START]), st.integers(0, 3), st.integers(1, 4)),
                min_size=1, max_size=20), st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_memory_rows_are_written_as_each_record_is(spec, block):
    """The engine's memory records (rows of 8 ints; a run of equal rows is written once): their
    texts, for any block size, are those made record by record from the data tuples."""
    log = EventLog()
    rows = log.int_rows((E.MEM_ALLOC, E.MEM_FREE), 8)
    for kind, row, times in spec:
        for _ in range(times):
            i = len(log)
            log.emit(float(i), kind, i, ((i,), 1000, 1e13) if kind == E.START else rows.store(_ROWS8[row]))
    kinds, codes = E._present_kinds(log)
    assert list(E._data_texts(log, kinds, codes, size=block)) == list(ByKind(log).data_strings())


@given(st.lists(st.one_of(st.integers(-2**63, 2**63 - 1), st.integers(2**63, 2**64), st.booleans(), st.text(max_size=1)),
                max_size=12), st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_ints_at_gathers_exact_int64_ints_or_says_none(values, block):
    positions = np.arange(len(values))[::-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "TEXT_BLOCK", block)
        got = E.ints_at(values, positions)
    picked = [values[i] for i in positions]
    exact = all(type(v) is int and -2**63 <= v < 2**63 for v in picked)
    assert (got is not None) == exact
    assert got is None or (got.dtype == np.int64 and got.tolist() == picked)


def test_int_rows_keep_exact_int_tuples_as_rows_and_anything_else_as_given():
    log = EventLog()
    rows = log.int_rows((E.MEM_ALLOC, E.MEM_FREE), 3)
    datas = [(1, 2, 3), (4, np.int64(5), 6), (True, 0, 0), (1, 2), (2**63, 0, 0), (-2**63, 2**63 - 1, 0), (1.0, 2, 3)]
    stored = [rows.store(d) for d in datas]
    assert stored[0] == 0 and stored[5] == 1 and len(rows.values) == 6  # the overflowing tuple left no partial row
    assert all(s is d for s, d in zip(stored, datas) if type(s) is tuple) and sum(type(s) is int for s in stored) == 2
    for i, s in enumerate(stored):
        log.emit(float(i), E.MEM_ALLOC if i % 2 else E.MEM_FREE, i, s)
    back = [r[3] for r in log.records]
    assert back == datas and [tuple(map(type, b)) for b in back] == [tuple(map(type, d)) for d in datas]
    assert [r[3] for r in pickle.loads(pickle.dumps(log)).records] == datas
    assert rows.matrix().tolist() == [[1, 2, 3], [-2**63, 2**63 - 1, 0]]


@given(st.lists(st.tuples(st.booleans(), st.lists(st.tuples(*[st.integers(-2**63, 2**63 - 1)] * 3), min_size=1,
                                                  max_size=4)), min_size=1, max_size=6), st.integers(1, 5))
@settings(max_examples=60, deadline=None)
def test_rows_made_on_demand_read_back_as_the_rows_they_stand_for(segments, block):
    """Records that store ROW, their rows made on demand from their positions (as the fast
    core logs its memory records), between records that stored their row numbers: read back,
    tabulated (whole and block by block) and pickled, they are the records with the tuples."""
    log, plain = EventLog(), EventLog()
    rows = log.int_rows((E.MEM_ALLOC, E.MEM_FREE), 3)
    for made, datas in segments:
        at = []
        for j, d in enumerate(datas):
            kind = E.MEM_ALLOC if j % 2 else E.MEM_FREE
            if j == 1:  # another kind's record between them
                log.emit(float(len(log)), E.START, j, ((j,), 1000, 1e13))
                plain.emit(float(len(plain)), E.START, j, ((j,), 1000, 1e13))
            at.append(len(log))
            log.emit(float(len(log)), kind, j, E.ROW if made else rows.store(d))
            plain.emit(float(len(plain)), kind, j, d)
        if made:
            rows.extend_made(len(datas), lambda rel, m=np.array(datas, dtype=np.int64): m[rel], np.array(at))
    assert list(log.records) == list(plain.records) and log.records[-1] == plain.records[-1]
    assert log.data_at(list(range(len(log)))[::-1]) == plain.data_at(list(range(len(plain)))[::-1])
    assert list(pickle.loads(pickle.dumps(log)).records) == list(plain.records)
    kinds, codes = E._present_kinds(log)
    whole = ByKind(plain).data_strings()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "TEXT_BLOCK", block)
        assert list(E._data_texts(log, kinds, codes, size=block)) == list(whole) == list(ByKind(log).data_strings())
        mem = log.positions(E.MEM_ALLOC, E.MEM_FREE)
        assert rows.take(rows.rows_at(log.data, mem)).tolist() == [list(plain.records[i][3]) for i in mem.tolist()]
    with pytest.raises(TypeError):
        rows(E.ROW)


@given(st.lists(st.lists(st.integers(-2**63, 2**63 - 1), max_size=4).map(tuple), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_device_sets_are_written_as_json_dumps_writes_them(values):
    assert E._field_json(values, "any").to_pylist() == [json.dumps(v) for v in values]
    mixed = values + [(1, True)]  # not all exact ints: value by value
    assert E._field_json(mixed, "any").to_pylist() == [json.dumps(v) for v in mixed]


@given(_mixed, st.integers(1, 7))
@settings(max_examples=25, deadline=None)
def test_events_table_written_block_by_block_reads_back_as_the_table(tmp_path_factory, recs, block):
    """``write_table`` writes one row group per block of the log; the file reads back as ``table()``."""
    log = EventLog()
    rows = log.int_rows((E.MEM_ALLOC,), 3)
    for i, (kind, d) in enumerate(recs):
        log.emit(i / 3, kind, i if i % 2 else f"r{i}", rows.store(d) if kind == E.MEM_ALLOC else d)
    path = tmp_path_factory.mktemp("ev") / "events.parquet"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "TEXT_BLOCK", block)
        log.write_table(path)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(path).num_row_groups == -(-len(recs) // block)
    pd.testing.assert_frame_equal(pd.read_parquet(path), log.table(), check_exact=True)


def test_lazy_tables_are_made_once_when_read_and_written_unmade(tmp_path):
    from llmos_sim.metrics.tables import Tables

    made, written = [], []
    t = Tables({"a": pd.DataFrame({"x": [1]})})
    t.add_lazy("b", lambda: made.append(1) or pd.DataFrame({"y": [2]}), lambda p: written.append(p))
    assert list(t) == ["a", "b"] and "b" in t and len(t) == 2 and made == []
    t.to_parquet("b", tmp_path / "b.parquet")
    assert written == [tmp_path / "b.parquet"] and made == []
    assert t["b"]["y"].tolist() == [2] and t["b"] is t["b"] and made == [1]
    t.to_parquet("b", tmp_path / "b2.parquet")  # made now: written from the frame
    assert pd.read_parquet(tmp_path / "b2.parquet")["y"].tolist() == [2] and len(written) == 1
    assert {k: len(v) for k, v in t.items()} == {"a": 1, "b": 1}
    del t["a"]
    assert list(t) == ["b"]


def test_jobs_and_timeline_from_one_reading_equal_each_table_alone():
    from llmos_sim.metrics.tables import jobs_and_timeline, jobs_table, timeline_table

    cluster = Cluster.homogeneous(1, 4, _DEV)
    jobs = [Job(i, 0.5 * i, 1e13 * (3 + i % 4), gpus=1 + i % 3) for i in range(12)]
    log = Engine(cluster, FIFO()).run(jobs)
    j, t = jobs_and_timeline(log, cluster)
    pd.testing.assert_frame_equal(j, jobs_table(log, cluster), check_exact=True)
    pd.testing.assert_frame_equal(t, timeline_table(log, cluster), check_exact=True)
    assert j["status"].tolist() == ["completed"] * 12 and [len(d) for d in j["devices"]] == [1 + i % 3 for i in range(12)]


@given(st.lists(st.one_of(st.integers(-2**70, 2**70), st.integers(0, 50), st.text(max_size=3), st.none(),
                          st.booleans(), st.floats(allow_nan=False)), max_size=30))
@settings(max_examples=80, deadline=None)
def test_subjects_are_written_as_str_writes_them(values):
    """The events table's subject texts: ints through Arrow, anything else by ``str``."""
    assert E._subject_texts(values).to_pylist() == [str(v) for v in values]


@pytest.mark.parametrize("overrides", [[], ["memory=best_fit", "engine.on_memory_full=fail"], ["engine.log_memory=false"]])
def test_tables_written_unread_read_back_as_the_tables_made(tmp_path, overrides):
    """A training run's memory and events tables are written from the log's columns without
    being made; each file reads back as the table made from the same log."""
    from llmos_sim.run import compose, run_config, write_results

    import pyarrow.parquet as pq

    res = run_config(compose(["experiment=quickstart", "workload.n_jobs=40", *overrides]))
    write_results(res, tmp_path, plots=False)
    assert set(res.tables) == {"jobs", "timeline", "memory", "events"}
    for name in res.tables:
        path = tmp_path / f"{name}.parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), res.tables[name], check_exact=True)
        df = res.tables[name]
        if len(df):  # the text columns, and only they, are dictionary-encoded
            meta = pq.ParquetFile(path).metadata
            coded = {meta.schema.column(i).path for i in range(meta.num_columns)
                     if any("DICTIONARY" in e for e in meta.row_group(0).column(i).encodings)}
            assert coded == {c for c in df.columns if pd.api.types.infer_dtype(df[c]) == "string"}
            assert coded or name == "timeline"
