"""Typed tables: events.data is JSON keyed by the kind's fields, jobs.devices a list column,
requests.replica a nullable integer; trace slices never overlap by rounding."""
from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_sim import events as E
from llmos_sim.events import EventLog, parse_data
from llmos_sim.run import compose, run_config, write_results
from llmos_sim.trace_export import trace_events

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
ints = st.integers(-(2**62), 2**62)
devices = st.lists(st.integers(0, 10_000), min_size=1, max_size=8).map(tuple)
DATA = {
    E.ARRIVE: st.tuples(st.integers(1, 64), finite, st.integers(1, 1000), st.text(max_size=8)),
    E.START: st.tuples(devices, st.integers(1, 1000), finite),
    E.PREEMPT: st.tuples(devices, st.one_of(finite, ints)),
    E.RESIZE: st.tuples(devices, devices),
    E.FAIL: st.tuples(st.text(max_size=20)),
    E.FINISH: st.just(()),
    E.BATCH: st.tuples(ints, ints, ints, finite, ints),
    E.REQ_PREEMPT: st.tuples(st.integers(0, 9), st.sampled_from(["recompute", "swap"])),
}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(DATA)).flatmap(lambda k: st.tuples(st.just(k), DATA[k])), max_size=40))
def test_events_data_is_json_keyed_by_fields(records):
    log = EventLog()
    for i, (kind, data) in enumerate(records):
        log.emit(float(i), kind, i, data)
    table = log.table()
    assert len(table) == len(records)
    for (kind, data), text in zip(records, table["data"]):
        got = json.loads(text)
        assert list(got) == list(E.FIELDS[kind])
        assert all(_same(got[k], list(v) if isinstance(v, tuple) else v) for k, v in zip(E.FIELDS[kind], data))
        assert parse_data(text) == got


def test_events_data_non_finite_and_numpy_values():
    import numpy as np

    log = EventLog()
    log.emit(0.0, E.START, 1, ((0,), 1000, float("inf")))
    log.emit(0.0, E.START, 2, ((np.int64(1),), 1000, float("nan")))
    log.emit(0.0, E.START, 3, ((2,), 1000, 3.0))
    log.emit(0.0, "custom", 4, (1, "x"))   # a kind without FIELDS: f0, f1
    rows = [json.loads(t) for t in log.table()["data"]]
    assert rows[0]["rate_flops_s"] == math.inf and math.isnan(rows[1]["rate_flops_s"])
    assert rows[1]["devices"] == [1] and rows[2]["rate_flops_s"] == 3.0 and isinstance(rows[2]["rate_flops_s"], float)
    assert rows[3] == {"f0": 1, "f1": "x"}


def test_jobs_devices_and_requests_replica_are_typed_in_parquet(tmp_path):
    res = run_config(compose(["experiment=quickstart", "workload.n_jobs=8"]))
    write_results(res, tmp_path / "t", plots=False)
    schema = pq.read_schema(tmp_path / "t" / "jobs.parquet")
    t = schema.field("devices").type
    assert pa.types.is_list(t) and t.value_type == pa.int64()
    jobs = res.tables["jobs"]
    assert all(len(d) == n for d, n in zip(jobs["devices"], jobs["n_devices"]))
    write_results(res, tmp_path / "r", plots=False, release=True)  # each table dropped once written
    assert len(res.tables) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r" / "jobs.parquet"), jobs)
    sres = run_config(compose(["experiment=serving_quick", "workload.max_requests=20"]))
    write_results(sres, tmp_path / "s", plots=False)
    assert str(pq.read_schema(tmp_path / "s" / "requests.parquet").field("replica").type) == "int64"
    assert str(sres.tables["requests"]["replica"].dtype) == "Int64"
    assert str(pq.read_schema(tmp_path / "s" / "events.parquet").field("data").type) in ("string", "large_string")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(1e-7, 1e4, allow_nan=False), min_size=2, max_size=30), st.floats(0, 1e6))
def test_trace_slices_on_one_track_never_overlap(gaps, start):
    bounds = [start]
    for g in gaps:
        bounds.append(bounds[-1] + g)
    ev = pd.DataFrame({"time_s": [start] * 0 + [t for t in bounds[:-1] for _ in (0, 1)][1:] + [bounds[-1]],
                       "kind": (["start", "preempt"] * len(gaps))[: 2 * len(gaps)],
                       "subject": [str(i // 2) for i in range(2 * len(gaps))],
                       "data": ['{"devices": [0], "share_milli": 1000, "rate_flops_s": 1.0}',
                                '{"devices": [0], "done_flops": 1.0}'] * len(gaps)})
    ev["time_s"] = [bounds[i // 2 + (i % 2)] for i in range(2 * len(gaps))]
    batches = pd.DataFrame({"time_s": bounds[:-1], "replica": 0, "duration_s": gaps, "n_iters": 1,
                            "n_prefill_tokens": 1, "n_decode_tokens": 0, "n_seqs": 1})
    tr = trace_events({"events": ev, "batches": batches})
    for pid in (1, 3):
        sl = sorted((e["ts"], e["dur"]) for e in tr["traceEvents"] if e["ph"] == "X" and e["pid"] == pid)
        assert len(sl) == len(gaps)
        assert all(isinstance(t, int) and isinstance(d, int) and d >= 0 for t, d in sl)
        assert all(t0 + d0 <= t1 for (t0, d0), (t1, _) in zip(sl, sl[1:]))
