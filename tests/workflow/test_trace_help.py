"""Chrome/Perfetto trace export and the CLI help."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from llmos_sim.run import compose, run_config
from llmos_sim.trace_export import device_segments, trace_events
from workflow.helpers import run_cli


def test_trace_of_a_training_run_has_job_slices_and_memory_counters():
    res = run_config(compose(["experiment=quickstart", "workload.n_jobs=15", "cluster=small"]))
    tr = trace_events(res.tables, "t")
    json.dumps(tr)  # serialisable
    ev = tr["traceEvents"]
    slices = [e for e in ev if e["ph"] == "X"]
    jobs = res.tables["jobs"]
    assert len(slices) == int(jobs["n_devices"].sum())        # no preemption: one slice per job-device
    assert {e["tid"] for e in slices} <= set(range(64))
    assert all(e["dur"] >= 0 and e["pid"] == 1 for e in slices)
    first = jobs.sort_values("start_s").iloc[0]
    s0 = min(slices, key=lambda e: e["ts"])
    assert s0["ts"] == round(first["start_s"] * 1e6)
    counters = [e for e in ev if e["ph"] == "C"]
    assert counters and counters[-1]["args"]["allocated"] == 0.0  # everything freed at the end
    names = {e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
    assert names == {"devices", "memory"}


@pytest.mark.parametrize("data", [
    ['{"devices": [0, 1], "share_milli": 1000, "rate_flops_s": 1e+13}', '{"devices": [0, 1], "done_flops": 5.0}',
     '{"devices": [2], "share_milli": 1000, "rate_flops_s": 1e+13}', '{"old_devices": [2], "devices": [2, 3]}', "{}"],
    # events tables of earlier versions held the tuple's repr
    ["((0, 1), 1000, 1e13)", "((0, 1), 5.0)", "((np.int64(2),), 1000, 1e13)", "((2,), (2, 3))", ""]])
def test_segments_split_on_preemption(data):
    ev = pd.DataFrame({"time_s": [0.0, 1.0, 2.0, 3.0, 4.0], "kind": ["start", "preempt", "start", "resize", "finish"],
                       "subject": ["7"] * 5, "data": data})
    seg = device_segments(ev)
    got = sorted(map(tuple, seg[["device", "start_s", "end_s", "end"]].to_numpy().tolist()))
    assert got == [(0, 0.0, 1.0, "preempt"), (1, 0.0, 1.0, "preempt"), (2, 2.0, 3.0, "resize"),
                   (2, 3.0, 4.0, "finish"), (3, 3.0, 4.0, "finish")]


def test_output_trace_flag_writes_trace_json(tmp_path):
    run_cli(["experiment=quickstart", "workload.n_jobs=10", "output.plots=false", "++output.trace=true",
             f"hydra.run.dir={tmp_path}"])
    tr = json.loads((tmp_path / "trace.json").read_text())
    assert any(e["ph"] == "X" for e in tr["traceEvents"])
    assert (tmp_path / "summary.json").exists()


def test_help_lists_groups_and_options():
    out = run_cli(["hydra/help=llmos", "--help"]).stdout
    assert "== Config groups" in out
    for line in ("scheduler:", "memory:", "workload:", "experiment:"):
        assert any(l.startswith(line) for l in out.splitlines()), line
    sched = next(l for l in out.splitlines() if l.startswith("scheduler:"))
    assert "fifo_skip" in sched and "sjf" in sched
    assert "python -m llmos_sim.compare" in out
