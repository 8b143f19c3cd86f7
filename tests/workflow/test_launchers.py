"""The launcher configs: each one that can run here runs a 2-run sweep; the others compose."""
from __future__ import annotations

import pytest

from llmos_sim import compare
from workflow.helpers import run_cli

TWO_RUNS = ["-m", "experiment=quickstart", "workload.n_jobs=10", "scheduler=fifo,sjf", "output.plots=false"]


def test_basic_launcher_with_callback(tmp_path):
    run_cli([*TWO_RUNS, "hydra/callbacks=compare", f"hydra.sweep.dir={tmp_path}"])
    assert len(compare.find_runs(tmp_path)) == 2
    assert (tmp_path / "comparison.parquet").exists() and (tmp_path / "report.md").exists()


def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_cli([*TWO_RUNS, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
             f"hydra.sweep.dir={tmp_path}"], timeout=180)
    assert len(compare.find_runs(tmp_path)) == 2


def test_slurm_config_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    p = run_cli(["hydra/launcher=slurm", "--cfg", "hydra", "-p", "hydra.launcher"])
    assert "SlurmLauncher" in p.stdout and "array_parallelism: 256" in p.stdout and "mem_gb: 8" in p.stdout


def test_ray_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    pytest.importorskip("ray")
    run_cli([*TWO_RUNS, "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2",
             f"hydra.sweep.dir={tmp_path}"], timeout=180)
    assert len(compare.find_runs(tmp_path)) == 2


def test_launcher_yaml_targets():
    """The ready configs name the plugins' documented launcher classes (checked without plugins)."""
    import yaml

    from workflow.helpers import REPO

    d = REPO / "configs" / "hydra" / "launcher"
    ray = yaml.safe_load((d / "ray_local.yaml").read_text())
    assert ray["_target_"] == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert set(ray["ray"]) == {"init", "remote"}
    assert yaml.safe_load((d / "slurm.yaml").read_text())["defaults"] == ["submitit_slurm"]
    assert yaml.safe_load((d / "joblib_local.yaml").read_text())["defaults"] == ["joblib"]
