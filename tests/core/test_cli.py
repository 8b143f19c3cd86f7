"""The command line: one run and a multirun write their results; failures keep good results."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from llmos_sim.run import compose, run_config, write_results


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "llmos_sim", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_quickstart_writes_tables_summary_and_plots(tmp_path):
    out = tmp_path / "run"
    p = _run(["experiment=quickstart", "workload.n_jobs=30", f"hydra.run.dir={out}"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "jct_s_avg" in p.stdout
    for f in ("config.yaml", "jobs.parquet", "timeline.parquet", "memory.parquet", "events.parquet",
              "summary.json", "jct_cdf.png", "timeline.png"):
        assert (out / f).is_file(), f
    jobs = pd.read_parquet(out / "jobs.parquet")
    assert len(jobs) == 30
    assert {"arrival_s", "start_s", "finish_s", "wait_s", "jct_s", "devices"} <= set(jobs.columns)
    summary = json.loads((out / "summary.json").read_text())
    for k in ("jct_s_avg", "jct_s_p50", "jct_s_p99", "wait_s_avg", "wait_s_p50", "wait_s_p99", "makespan_s",
              "utilisation"):
        assert k in summary


def test_multirun_over_schedulers_and_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    p = _run(["-m", "experiment=quickstart", "workload.n_jobs=20", "scheduler=fifo,sjf", "seed=0,1",
              f"hydra.sweep.dir={sweep}", "output.plots=false"], tmp_path)
    assert p.returncode == 0, p.stderr
    summaries = sorted(sweep.glob("*/summary.json"))
    assert len(summaries) == 4


def test_bad_trace_path_names_the_file(tmp_path):
    p = _run(["workload=philly", "workload.path=/no/such/trace.csv", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert p.returncode != 0
    assert "/no/such/trace.csv" in p.stderr


def test_a_failed_write_leaves_earlier_results_untouched(tmp_path):
    r = run_config(compose(["experiment=quickstart", "workload.n_jobs=10"]))
    write_results(r, tmp_path, plots=False)
    before = (tmp_path / "summary.json").read_text()
    r.tables["jobs"] = pd.DataFrame({"bad": [object()]})  # parquet cannot store this
    with pytest.raises(Exception):
        write_results(r, tmp_path, plots=False)
    assert (tmp_path / "summary.json").read_text() == before
    assert len(pd.read_parquet(tmp_path / "jobs.parquet")) == 10
    assert not list(tmp_path.glob(".partial-*"))
