"""Resume with the basic launcher: complete runs with an identical config are skipped."""
from __future__ import annotations

from workflow.helpers import run_cli

ARGS = ["-m", "experiment=quickstart", "workload.n_jobs=15", "scheduler=fifo,sjf", "output.plots=false"]


def test_interrupted_sweep_resumes(tmp_path):
    sweep = tmp_path / "sw"
    first = run_cli([*ARGS, f"hydra.sweep.dir={sweep}"])
    assert first.stdout.count("results in") == 2
    (sweep / "1" / "complete.json").unlink()  # run 1 "was interrupted" before its completion marker
    stamp = (sweep / "0" / "jobs.parquet").stat().st_mtime_ns
    second = run_cli([*ARGS, f"hydra.sweep.dir={sweep}"])
    assert "complete in" in second.stdout and second.stdout.count("skipped") == 1
    assert f"results in {sweep / '1'}" in second.stdout
    assert (sweep / "1" / "summary.json").exists()
    assert (sweep / "0" / "jobs.parquet").stat().st_mtime_ns == stamp


def test_changed_config_reruns(tmp_path):
    sweep = tmp_path / "sw"
    run_cli([*ARGS, f"hydra.sweep.dir={sweep}"])
    changed = [a.replace("n_jobs=15", "n_jobs=16") for a in ARGS]
    p = run_cli([*changed, f"hydra.sweep.dir={sweep}"])
    assert "skipped" not in p.stdout and p.stdout.count("results in") == 2
    assert "n_jobs: 16" in (sweep / "0" / "config.yaml").read_text()
