"""The 3 x 2 x 3 sweep through joblib, merged by the callback and by the CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from llmos_sim import compare
from workflow.helpers import MEMORIES, SCHEDULERS, SEEDS, run_cli

N_RUNS = len(SCHEDULERS) * len(MEMORIES) * len(SEEDS)


def test_sweep_runs_all_and_callback_compares(joblib_sweep):
    sweep, wall_s = joblib_sweep
    assert len(compare.find_runs(sweep)) == N_RUNS
    for name in compare.OUT_FILES:
        assert (sweep / name).is_file(), name
    df = pd.read_parquet(sweep / "comparison.parquet")
    assert len(df) == N_RUNS
    assert {"policy", "scheduler", "memory", "seed", "run_dir", "experiment", "workload.n_jobs"} <= set(df.columns)
    assert {"jct_s_avg", "jct_s_p99", "wait_s_avg", "makespan_s", "utilisation", "n_jobs"} <= set(df.columns)
    assert set(df["scheduler"]) == set(SCHEDULERS) and set(df["memory"]) == set(MEMORIES)
    assert set(df["seed"]) == set(SEEDS)
    assert df.groupby(["scheduler", "memory"]).size().eq(len(SEEDS)).all()
    assert (df["n_jobs"] == 30).all()
    # every row's metrics are its own run's summary
    for _, r in df.iterrows():
        s = json.loads((sweep / r["run_dir"] / "summary.json").read_text())
        assert r["jct_s_avg"] == pytest.approx(s["jct_s_avg"])
    csv = pd.read_csv(sweep / "comparison.csv")
    assert len(csv) == N_RUNS and list(csv.columns) == list(df.columns)
    agg = pd.read_csv(sweep / "comparison_agg.csv")
    assert len(agg) == len(SCHEDULERS) * len(MEMORIES) and (agg["n"] == len(SEEDS)).all()
    assert {"jct_s_avg", "jct_s_avg_ci95"} <= set(agg.columns)
    print(f"\n18-run joblib sweep (2 workers): {wall_s:.1f} s")


def test_plots_written_and_embedded(joblib_sweep):
    sweep, _ = joblib_sweep
    report = (sweep / "report.md").read_text()
    for name in ("bars", "jct_cdf", "timeline", "memory", "gantt"):
        png = sweep / "plots" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 5_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name}.png)" in report
    assert "| scheduler | memory | n |" in report
    assert report.count("\n| ") >= 1 + len(SCHEDULERS) * len(MEMORIES)


def test_compare_cli_rewrites_into_other_folder(joblib_sweep, tmp_path):
    sweep, _ = joblib_sweep
    p = run_cli([str(sweep), "--out", str(tmp_path), "--no-plots", "--metrics", "jct_s_avg", "wait_s_avg"],
                module="llmos_sim.compare")
    assert "fifo_skip" in p.stdout and "jct_s_avg" in p.stdout
    df = pd.read_csv(tmp_path / "comparison.csv")
    assert len(df) == N_RUNS
    assert not (tmp_path / "plots").exists()
    assert "wait_s_avg" in (tmp_path / "report.md").read_text()


def test_resume_skips_the_whole_finished_sweep(joblib_sweep):
    """Re-running the same sweep into the same folder runs nothing again."""
    sweep, _ = joblib_sweep
    before = {r: (r / "summary.json").stat().st_mtime_ns for r in compare.find_runs(sweep)}
    from workflow.helpers import SMALL
    p = run_cli(["-m", *SMALL, f"scheduler={','.join(SCHEDULERS)}", f"memory={','.join(MEMORIES)}",
                 f"seed={','.join(map(str, SEEDS))}", "hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2",
                 f"hydra.sweep.dir={sweep}"], timeout=240)
    assert p.stdout.count("skipped") == N_RUNS, p.stdout[-2000:]
    assert before == {r: (r / "summary.json").stat().st_mtime_ns for r in compare.find_runs(sweep)}
