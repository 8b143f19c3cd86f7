"""Trace format, readers, generators and the replay driver."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from llmos_sim.memtrace import (
    TraceFormatError, kv_cache_trace, make_trace, read_csv, read_snapshot, replay, summarize,
    transformer_training_trace, write_csv,
)
from llmos_sim.memtrace.__main__ import main
from llmos_sim.policies.memory import FirstFitPool, IdealPool, PagedPool

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_snapshot.json"


def test_csv_roundtrip(tmp_path: Path) -> None:
    trace = make_trace([(0.0, "alloc", 1, 100), (0.5, "alloc", 2, 50), (1.0, "free", 1, 100)])
    p = tmp_path / "t.csv"
    write_csv(trace, p)
    pd.testing.assert_frame_equal(read_csv(p), trace)


def test_csv_free_size_may_be_empty(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("time_s,op,id,nbytes\n0,alloc,7,10\n1,free,7,\n")
    assert read_csv(p)["nbytes"].tolist() == [10, 0]


@pytest.mark.parametrize("body, line, words", [
    ("0,alloc,1,10\n0.1,alloc,2,ten\n", 3, "nbytes"),
    ("0,alloc,1,10\n\n0.1,grab,2,5\n", 4, "op"),
    ("0,alloc,1\n", 2, "4 fields"),
    ("1,alloc,1,10\n0.5,free,1,10\n", 3, "back in time"),
    ("0,alloc,1,-5\n", 2, ">= 0"),
    ("x,alloc,1,5\n", 2, "time_s"),
])
def test_csv_errors_name_file_and_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    p = tmp_path / "bad_trace.csv"
    p.write_text("time_s,op,id,nbytes\n" + body)
    with pytest.raises(TraceFormatError) as exc:
        read_csv(p)
    msg = str(exc.value)
    assert f"bad_trace.csv:{line}:" in msg and words in msg


def test_csv_bad_header(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("t,op,id,size\n")
    with pytest.raises(TraceFormatError, match=r"h\.csv:1: header"):
        read_csv(p)


EXPECTED_SNAPSHOT_TRACE = [
    (1e-5, "alloc", 4, 2048),   # freed in the history without an alloc: predates it
    (1e-5, "alloc", 5, 512),    # active at the end, never seen allocated: predates it
    (1e-5, "alloc", 0, 512),
    (2e-5, "alloc", 1, 1024),
    (3.1e-5, "free", 1, 1024),  # free_completed counts, free_requested does not
    (4e-5, "alloc", 2, 1024),   # address reused: a new id
    (5e-5, "free", 4, 2048),
    (6e-5, "alloc", 3, 4096),   # segment_alloc before it is skipped
    (7e-5, "free", 3, 4096),
]


def test_snapshot_json_reader() -> None:
    df = read_snapshot(FIXTURE)
    got = list(df.itertuples(index=False, name=None))
    assert [(pytest.approx(t), o, i, n) for t, o, i, n in EXPECTED_SNAPSHOT_TRACE] == got


def test_snapshot_pickle_reader_matches_json(tmp_path: Path) -> None:
    p = tmp_path / "snap.pickle"
    p.write_bytes(pickle.dumps(json.loads(FIXTURE.read_text())))
    pd.testing.assert_frame_equal(read_snapshot(p), read_snapshot(FIXTURE))
    assert replay(read_snapshot(p), IdealPool(1 << 20))["ok"].all()


def test_snapshot_reader_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "junk.pickle"
    p.write_bytes(b"\x00not a snapshot")
    with pytest.raises(TraceFormatError, match="junk.pickle"):
        read_snapshot(p)


def test_generators_are_deterministic_and_balanced() -> None:
    a = transformer_training_trace(layers=2, hidden=256, seq=64, batch=2, steps=2, seed=3)
    b = transformer_training_trace(layers=2, hidden=256, seq=64, batch=2, steps=2, seed=3)
    c = transformer_training_trace(layers=2, hidden=256, seq=64, batch=2, steps=2, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert a["time_s"].is_monotonic_increasing
    assert replay(a, IdealPool(1 << 40))["ok"].all()  # every free matches a live alloc
    k1, k2 = kv_cache_trace(n_requests=50, seed=1), kv_cache_trace(n_requests=50, seed=1)
    pd.testing.assert_frame_equal(k1, k2)
    assert (k1["op"] == "alloc").sum() == (k1["op"] == "free").sum() == 50
    assert replay(k1, IdealPool(1 << 40))["requested_bytes"].iloc[-1] == 0


def test_transformer_trace_shape() -> None:
    t = transformer_training_trace(layers=2, hidden=128, seq=32, batch=1, steps=2, vocab=1000, seed=0)
    res = replay(t, IdealPool(1 << 40))
    weights = 1000 * 128 + 2 * (12 * 128 * 128 + 4 * 128) + 2 * 128
    end_of_run = res["requested_bytes"].iloc[-1]
    assert end_of_run == 2 * weights + 2 * 2 * weights * 4 // 2  # fp16 weights + two fp32 Adam moments


def test_replay_records_failures_and_skips_their_frees() -> None:
    trace = make_trace([(0, "alloc", 1, 60), (1, "alloc", 2, 60), (2, "free", 2, 60), (3, "free", 1, 60)])
    res = replay(trace, FirstFitPool(100))
    assert res["ok"].tolist() == [True, False, False, True]
    assert res["n_failures"].tolist() == [0, 1, 1, 1]
    assert res["allocated_bytes"].tolist() == [60, 60, 60, 0]
    s = summarize(res)
    assert s["failures"] == 1 and s["peak_allocated_bytes"] == 60 and s["ops"] == 4


def test_replay_paged_rounding_visible() -> None:
    trace = make_trace([(0, "alloc", 1, 17), (1, "free", 1, 17)])
    res = replay(trace, PagedPool(64, block_bytes=16))
    assert res["allocated_bytes"].tolist() == [32, 0] and res["internal_frag_bytes"].tolist() == [15, 0]


def test_driver_runs_on_a_csv(tmp_path: Path, capsys) -> None:
    p = tmp_path / "t.csv"
    write_csv(make_trace([(0, "alloc", 1, 3 << 20), (1, "free", 1, 0)]), p)
    table = main(["--trace", str(p), "--policy", "ideal", "paged", "caching", "--capacity-bytes", str(1 << 30),
                  "--out", str(tmp_path / "out")])
    assert table["failures"].tolist() == [0, 0, 0]
    assert (tmp_path / "out" / "caching.csv").exists()
    assert "peak_reserved_bytes" in capsys.readouterr().out
