"""Every scheduling-suite config composes and instantiates; experiment configs run."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from llmos_sim.policies.scheduling.base import ClusterScheduler, Placement
from llmos_sim.run import compose, run_config
from llmos_sim.types import Cluster
from llmos_sim.workload.base import Workload

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SCHEDULERS = ["srtf", "las", "tiresias", "drf", "easy", "qssf", "gavel", "elastic", "fifo", "sjf"]
PLACEMENTS = ["spread", "random", "topology"]
CLUSTERS = ["tiresias_n32g4", "multi_switch", "hetero", "alibaba_openb"]
WORKLOADS = ["tiresias", "pollux", "alibaba"]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_scheduler_configs(name: str) -> None:
    cfg = compose([f"scheduler={name}"])
    s = instantiate(cfg.scheduler)
    assert isinstance(s, ClusterScheduler) and isinstance(s.placement, Placement)


@pytest.mark.parametrize("name", PLACEMENTS)
def test_placement_configs(name: str) -> None:
    assert isinstance(instantiate(compose([f"placement={name}"]).placement), Placement)


@pytest.mark.parametrize("name", CLUSTERS)
def test_cluster_configs(name: str) -> None:
    assert isinstance(instantiate(compose([f"cluster={name}"]).cluster), Cluster)


@pytest.mark.parametrize("name", WORKLOADS)
def test_workload_configs(name: str) -> None:
    assert isinstance(instantiate(compose([f"workload={name}"]).workload), Workload)


def test_train_experiment_configs_compose() -> None:
    names = sorted(p.stem for p in (CONFIGS / "experiment").glob("train_*.yaml"))
    assert names, "no train_ experiment configs"
    for n in names:
        cfg = compose([f"experiment={n}"])
        instantiate(cfg.scheduler)
        instantiate(cfg.workload)
        instantiate(cfg.backend)


def test_small_run_with_preemption_overhead_and_fairness() -> None:
    cfg = compose(["experiment=quickstart", "scheduler=las", "engine.preempt_overhead_s=30", "workload.n_jobs=40", "workload.arrival_rate_per_s=0.2",
                   "output.plots=false"])
    r = run_config(cfg)
    assert r.summary["n_completed"] == 40 and r.summary["n_preemptions"] > 0
    assert 0 < r.summary["jain_slowdown"] <= 1 and r.summary["gpu_hours"] > 0
