"""compare on hand-made and in-process runs: CI, config diffing, serving runs, missing tables."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from llmos_sim import compare
from llmos_sim.run import compose, run_config, write_results

SERVING_VARIANTS = (
    ["experiment=serving_quick", "workload.max_requests=40"],
    ["mode=serving", "workload=requests_synthetic", "+model=llama31_8b", "+gpu=h100", "+batching=continuous",
     "+router=round_robin", "+serving=default", "workload.n=40", "workload.rate_per_s=20"],
)


def test_ci95_matches_t_formula():
    mean, half, n = compare.ci95([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3)
    assert half == pytest.approx(4.302652729911275 * 1.0 / math.sqrt(3), rel=1e-9)
    assert math.isnan(compare.ci95([5.0])[1]) and compare.ci95([])[2] == 0
    assert compare.ci95([1.0, float("nan"), 3.0])[2] == 2
    # Student t 97.5 % quantiles (published tables): the old hand-written table said 2.060 for 21
    # degrees of freedom (too narrow) and 1.96 beyond 120
    assert compare.t_quantile_975(21) == pytest.approx(2.079614, abs=1e-6)
    assert compare.t_quantile_975(1000) == pytest.approx(1.962339, abs=1e-6)
    assert compare.t_quantile_975(7) == pytest.approx(2.364624, abs=1e-6)
    assert math.isnan(compare.t_quantile_975(0))


def _fake_run(folder, cfg: dict, summary: dict, overrides=None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / "summary.json").write_text(json.dumps(summary))


def test_factors_by_diffing_configs_without_overrides(tmp_path):
    base = {"name": "x", "seed": 0, "scheduler": {"_target_": "a.b.FIFO", "blocking": True},
            "workload": {"n_jobs": 10}}
    for i, (tgt, blocking, seed, n) in enumerate([("a.b.FIFO", True, 0, 10), ("a.b.FIFO", False, 1, 10),
                                                  ("a.b.SJF", False, 0, 12)]):
        cfg = base | {"seed": seed, "scheduler": {"_target_": tgt, "blocking": blocking}, "workload": {"n_jobs": n}}
        _fake_run(tmp_path / str(i), cfg, {"jct_s_avg": 10.0 + i, "backend_facts": {"gpu": "x", "n": 2}})
    (tmp_path / "3").mkdir()  # an incomplete run (no summary.json) is ignored
    (tmp_path / "3" / "config.yaml").write_text("seed: 9\n")
    df = compare.load_runs(tmp_path)
    assert len(df) == 3
    assert list(df["scheduler"]) == ["FIFO", "FIFO", "SJF"]   # class name of the varying _target_
    assert list(df["scheduler.blocking"]) == ["True", "False", "False"]  # what tells fifo from fifo_skip
    assert list(df["workload.n_jobs"]) == [10, 10, 12] and list(df["seed"]) == [0, 1, 0]
    assert "backend_facts.n" in df.columns and "jct_s_avg" in df.attrs["metrics"]
    assert df["policy"].iloc[2] == "SJF / False / 12"


def test_overrides_win_and_metric_name_clash(tmp_path):
    _fake_run(tmp_path / "0", {"seed": 0}, {"seed": 0, "x": 1.0}, ["seed=0", "+foo=bar", "~baz"])
    _fake_run(tmp_path / "1", {"seed": 1}, {"seed": 1, "x": 2.0}, ["seed=1", "+foo=bar", "~baz"])
    df = compare.load_runs(tmp_path)
    assert {"seed", "foo", "metric.seed", "x"} <= set(df.columns) and "baz" not in df.columns
    agg = compare.aggregate(df, ["x"])
    assert len(agg) == 1 and agg["n"].iloc[0] == 2 and agg["x"].iloc[0] == 1.5


def test_training_runs_from_python_api_and_missing_tables(tmp_path):
    for i, sched in enumerate(["fifo", "sjf"]):
        ov = ["experiment=quickstart", "workload.n_jobs=12", f"scheduler={sched}"]
        compare.write_run(run_config(compose(ov)), tmp_path / str(i), ov)
    (tmp_path / "1" / "memory.parquet").unlink()
    (tmp_path / "1" / "events.parquet").unlink()
    res = compare.compare_sweep(tmp_path, gantt_run="1")   # Gantt falls back to the jobs table
    assert list(res.table["policy"]) == ["fifo", "sjf"]
    assert {"bars", "jct_cdf", "timeline", "memory", "gantt"} <= set(res.plots)


def _serving_overrides():
    for variant in SERVING_VARIANTS:
        try:
            compose(variant)
            return variant
        except Exception:  # noqa: BLE001 - the serving config groups are still moving
            continue
    pytest.skip("no serving configuration composes")


def test_serving_runs_compare(tmp_path):
    base = _serving_overrides()
    for i, (mem, seed) in enumerate([("paged", 0), ("paged", 1), ("contiguous", 0), ("contiguous", 1)]):
        ov = [*base, f"memory={mem}", f"seed={seed}"]
        compare.write_run(run_config(compose(ov)), tmp_path / str(i), ov)
    res = compare.compare_sweep(tmp_path)
    df = res.table
    assert len(df) == 4 and set(df["memory"]) == {"paged", "contiguous"}
    assert {"ttft_s_mean", "e2e_s_p99", "throughput_tok_s"} <= set(df.columns)
    assert "jct_s_avg" not in df.columns
    assert {"bars", "latency_cdf", "kv"} <= set(res.plots)
    report = res.files["report"].read_text()
    assert "ttft_s_mean" in report and "latency_cdf.png" in report


def test_list_experiments_cli():
    from workflow.helpers import run_cli

    out = run_cli(["--list-experiments"], module="llmos_sim.compare").stdout
    assert "quickstart" in out and "synthetic jobs" in out
