"""Every serving config option composes, instantiates and runs (Hydra compose over a stand-in
primary config that has the serving groups in its defaults, like the lead's will)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from llmos_sim.serving import simulate
from llmos_sim.serving.specs import GpuSpec, ModelSpec

CONF = str(Path(__file__).resolve().parent / "conf")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _compose(overrides):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="serving_primary", overrides=overrides)


SMALL = ["workload.n=40", "workload.rate_per_s=20", "model=tiny", "serving.num_kv_blocks=400"]


@pytest.mark.parametrize("batching", ["static", "orca", "continuous", "chunked_prefill"])
@pytest.mark.parametrize("memory", ["paged", "ideal", "contiguous"])
def test_batching_by_memory_runs(batching, memory):
    cfg = _compose([f"batching={batching}", f"memory={memory}", *SMALL])
    r = simulate(cfg, seed=1)
    assert r.summary["n_finished"] == 40
    assert {"requests", "batches", "kv"} <= set(r.tables)


@pytest.mark.parametrize("router", ["round_robin", "least_outstanding", "least_kv"])
def test_routers_spread_over_replicas(router):
    cfg = _compose([f"router={router}", "serving.replicas=3", *SMALL])
    r = simulate(cfg, seed=0)
    assert r.summary["n_finished"] == 40
    assert set(r.tables["requests"]["replica"].astype(int)) == {0, 1, 2}


@pytest.mark.parametrize("model", options("model"))
def test_models(model):
    m = instantiate(OmegaConf.load(CONFIGS / "model" / f"{model}.yaml"))
    assert isinstance(m, ModelSpec) and m.params > 0


@pytest.mark.parametrize("gpu", options("gpu"))
def test_gpus(gpu):
    g = instantiate(OmegaConf.load(CONFIGS / "gpu" / f"{gpu}.yaml"))
    assert isinstance(g, GpuSpec) and g.flops > 1e13 and g.mem_bytes > 10**10


@pytest.mark.parametrize("workload", [w for w in options("workload") if w.split("_")[0] in ("azure", "arxiv", "vllm", "requests")])
def test_request_workloads_instantiate(workload):
    w = instantiate(OmegaConf.load(CONFIGS / "workload" / f"{workload}.yaml"))
    assert hasattr(w, "requests")


@pytest.mark.parametrize("experiment", ["serving_quick", "fidelity_vllm_4090"])
def test_experiments_compose(experiment):
    cfg = _compose([f"experiment={experiment}"])
    assert cfg.mode == "serving"
    if experiment == "fidelity_vllm_4090":
        assert cfg.serving.num_kv_blocks == 2588 and cfg.batching.max_num_batched_tokens == 2048
        assert cfg.gpu.name == "RTX4090" and cfg.workload._target_.endswith("VllmBenchmarkRequests")
    r = simulate(_compose([f"experiment={experiment}", "++workload.max_requests=30"]), seed=0)
    assert r.summary["n_finished"] == 30


def test_70b_needs_tensor_parallel():
    with pytest.raises(ValueError, match="no memory left"):
        simulate(_compose(["model=llama3_70b", "workload.n=2"]), seed=0)
    r = simulate(_compose(["model=llama3_70b", "serving.tp=4", "workload.n=10"]), seed=0)
    assert r.summary["n_finished"] == 10
