"""compare never misleads: unreadable runs are named and left out, identical replicates are one
sample (no "± 0"), failures stand beside latencies, symlinks are replaced not followed; and a
memory snapshot cannot run code."""
from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import pytest
import yaml

from llmos_sim import compare
from llmos_sim.memtrace.trace import TraceFormatError
from llmos_sim.run import compose, run_config
from workflow.helpers import REPO


def _fake_run(folder, seed: int, summary: dict, policy: str = "a"):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "scheduler": policy}))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", f"scheduler={policy}"]))
    (folder / "summary.json").write_text(json.dumps(summary))


def test_corrupt_summary_is_named_and_left_out(tmp_path):
    _fake_run(tmp_path / "0", 0, {"jct_s_avg": 10.0})
    _fake_run(tmp_path / "1", 1, {"jct_s_avg": 14.0})
    (tmp_path / "1" / "summary.json").write_text('{"jct_s_avg": 1')   # killed mid-write by a foreign tool
    _fake_run(tmp_path / "2", 2, {"jct_s_avg": 12.0})
    (tmp_path / "2" / "config.yaml").write_bytes(b"seed: \xff\xfe\n")   # invalid UTF-8
    with pytest.warns(compare.CompareWarning) as caught:
        df = compare.load_runs(tmp_path)
    assert list(df["run"]) == ["0"]
    messages = [str(w.message) for w in caught]
    assert any(m.startswith(f"{tmp_path / '1' / 'summary.json'}: cannot read") for m in messages)
    assert any(m.startswith(f"{tmp_path / '2' / 'config.yaml'}: cannot read") for m in messages)
    p = subprocess.run([sys.executable, "-m", "llmos_sim.compare", str(tmp_path), "--no-plots"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr
    assert f"warning: {tmp_path / '1' / 'summary.json'}: cannot read" in p.stderr


def test_runs_with_different_override_keys_get_labels(tmp_path):
    _fake_run(tmp_path / "0", 0, {"jct_s_avg": 1.0})
    _fake_run(tmp_path / "1", 0, {"jct_s_avg": 2.0})
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=0", "scheduler=a", "x.n=5"]))
    res = compare.compare_sweep(tmp_path)   # plots too: their labels are built the same way
    assert list(res.table["policy"]) == ["–", "5"]


def test_identical_replicates_are_one_sample(tmp_path):
    for seed in range(3):   # a trace replayed unchanged: every seed the same numbers
        _fake_run(tmp_path / f"a{seed}", seed, {"jct_s_avg": 10.0, "n_jobs": 4, "n_failed": 0}, "a")
    for seed, v in enumerate([10.0, 12.0, 12.0]):  # two of three identical
        _fake_run(tmp_path / f"b{seed}", seed, {"jct_s_avg": v, "n_jobs": 4, "n_failed": 0}, "b")
    res = compare.compare_sweep(tmp_path, plots=False)
    a, b = (res.agg[res.agg["policy"] == p].iloc[0] for p in "ab")
    assert (a["n"], a["n_distinct"], a["jct_s_avg"]) == (3, 1, 10.0) and math.isnan(a["jct_s_avg_ci95"])
    assert (b["n"], b["n_distinct"], b["jct_s_avg"]) == (3, 2, 11.0)
    assert b["jct_s_avg_ci95"] == pytest.approx(compare.t_quantile_975(1) * math.sqrt(2) / math.sqrt(2))
    report = res.files["report"].read_text()
    row_a = next(line for line in report.splitlines() if line.startswith("| a |"))
    assert row_a == "| a | 3 | 1 | 0 | 0 | 10 |"   # policy, n, n_distinct, n_failed, failed_frac, jct: no "±"
    assert "warning: a: 3 runs but only 1 distinct result(s)" in report and "no confidence interval" in report
    assert "| scheduler | n | n_distinct | n_failed | failed_frac | jct_s_avg (completed) |" in report


def test_trace_replicates_detected_in_a_real_serving_sweep(tmp_path):
    base = ["experiment=serving_quick", "workload.max_requests=30"]
    for seed in (0, 1):
        ov = [*base, f"seed={seed}"]
        compare.write_run(run_config(compose(ov)), tmp_path / str(seed), ov)
    res = compare.compare_sweep(tmp_path, plots=False)
    assert res.agg["n"].iloc[0] == 2 and res.agg["n_distinct"].iloc[0] == 1
    assert math.isnan(res.agg["ttft_s_mean_ci95"].iloc[0])


def test_failures_stand_beside_latency(tmp_path):
    # the memory-sweep story: a pool that fails most jobs must not look best on JCT
    _fake_run(tmp_path / "0", 0, {"jct_s_avg": 2000.0, "n_jobs": 40, "n_completed": 40, "n_failed": 0}, "ideal")
    _fake_run(tmp_path / "1", 0, {"jct_s_avg": 580.0, "n_jobs": 40, "n_completed": 2, "n_failed": 38}, "buddy")
    res = compare.compare_sweep(tmp_path, plots=False, metrics=["jct_s_avg"])
    table = compare.key_table(res.agg, ["jct_s_avg"], ["scheduler"])
    assert list(table.columns) == ["scheduler", "n", "n_failed", "failed_frac", "jct_s_avg (completed)"]
    assert list(table["failed_frac"]) == ["0", "0.95"] and list(table["n_failed"]) == ["0", "38"]
    assert "failed_frac" in res.table.columns
    assert "jct_s_avg (completed)" in res.files["report"].read_text()


def test_failures_in_plots(tmp_path):
    for i, (mem, n) in enumerate([("ideal", 0), ("buddy", 0)]):
        ov = ["experiment=quickstart", "workload.n_jobs=20", "cluster=tiny", f"memory={mem}", "workload.gpus=[1]",
              "workload.gpus_p=null", "workload.mem_min_bytes=0", "workload.mem_max_bytes=30000000000"]
        compare.write_run(run_config(compose(ov)), tmp_path / str(i), ov)
    res = compare.compare_sweep(tmp_path)
    samples, label = compare.latency_samples(res.table, tmp_path)
    assert label.endswith("completed jobs")
    failed = res.table.set_index("memory")["n_failed"]
    for name in samples:
        pol = name.split(" ")[0]
        assert ("not completed" in name) == (failed[pol] > 0)


def test_compare_replaces_symlinks_instead_of_following_them(tmp_path):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", 0, {"jct_s_avg": 10.0})
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    for name in ("report.md", "comparison.csv", "comparison.parquet", "comparison_agg.csv"):
        (sweep / name).symlink_to(victim)
    (sweep / "plots").symlink_to(tmp_path, target_is_directory=True)
    compare.compare_sweep(sweep)
    assert victim.read_text() == "precious"
    assert not (sweep / "report.md").is_symlink() and "Sweep comparison" in (sweep / "report.md").read_text()
    assert not (sweep / "plots").is_symlink() and not list(tmp_path.glob("*.png"))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Evil.marker}",))


def test_snapshot_pickle_cannot_run_code(tmp_path):
    from llmos_sim.memtrace.snapshot import read_snapshot

    _Evil.marker = tmp_path / "pwned"
    evil = tmp_path / "snap.pickle"
    evil.write_bytes(pickle.dumps({"device_traces": [[]], "x": _Evil()}))
    with pytest.raises(TraceFormatError, match=rf"{evil}: .*refused to load (posix|os|nt)\.system"):
        read_snapshot(evil)
    p = subprocess.run([sys.executable, "-m", "llmos_sim.memtrace", "--trace", str(evil)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "refused to load" in p.stderr and "Traceback" not in p.stderr
    assert not _Evil.marker.exists()
    plain = tmp_path / "ok.pickle"   # what torch's _dump_snapshot writes: plain dicts and lists
    plain.write_bytes(pickle.dumps({"device_traces": [[{"action": "alloc", "addr": 0, "size": 512},
                                                       {"action": "free_completed", "addr": 0, "size": 512}]],
                                    "segments": [], "tags": {1, 2}}))
    assert list(read_snapshot(plain)["op"]) == ["alloc", "free"]
