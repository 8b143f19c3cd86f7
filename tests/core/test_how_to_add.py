"""Adding a scheduler, a pool, a batching policy, a router, a cost model or a trace adapter is one
class and one YAML (docs/architecture.md, "How to add"): toys of each, from this test folder
(``how_to_add/toys.py`` and ``how_to_add/conf/<group>/<name>.yaml``), selected like shipped
options and run end to end with hand-computed results."""
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from llmos_sim.run import compose, run_config

HERE = Path(__file__).resolve().parent / "how_to_add"
SEARCH = f"hydra.searchpath=[file://{HERE / 'conf'}]"


@pytest.fixture(autouse=True)
def _toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_a_scheduler_a_pool_and_a_trace_adapter_from_outside_the_package():
    cfg = compose([SEARCH, "cluster=tiny", "scheduler=largest_first", "memory=bump", "workload=csv_jobs",
                   f"workload.path={HERE / 'jobs.csv'}", "output.plots=false"])
    res = run_config(cfg)
    jobs = res.tables["jobs"].set_index("job_id")
    # 4 devices of 1e13 FLOP/s; job 0 (4 GPUs, 10 s) holds all until 10; then the widest waiting
    # job (2: 4 GPUs) before the earlier narrow ones (1 and 3), which then start together
    assert jobs["start_s"].to_dict() == {0: 0.0, 1: 15.0, 2: 10.0, 3: 15.0}
    assert jobs["finish_s"].to_dict() == {0: 10.0, 1: 20.0, 2: 15.0, 3: 20.0}
    mem = res.tables["memory"]
    dev0 = mem[mem["device"] == 0]
    assert [int(o) for o in dev0["owner"]] == [0, 0, 2, 2, 3, 3]
    assert dev0["pool_reserved"].tolist() == [10**9, 0] * 3  # the toy pool's own accounting
    # ... and its rule: space comes back only when every allocation is freed
    pool = instantiate(cfg.memory)(capacity_bytes=100)
    a, b = pool.allocate(40), pool.allocate(40)
    pool.free(a)
    assert pool.allocate(30) is None and b.offset == 40
    pool.free(b)
    assert pool.allocate(30).offset == 0


def _serving(rows, *over):
    cfg = compose([SEARCH, "experiment=serving_quick", "batching=shortest_prompt", "router=last_replica",
                   "cost=constant", "output.plots=false", *over])
    with open_dict(cfg):
        cfg.workload = OmegaConf.create({"_target_": "llmos_sim.workload.requests.ExplicitRequests",
                                         "rows": [list(r) for r in rows]})
    return run_config(cfg).tables["requests"].set_index("request")


def test_a_batching_policy_a_router_and_a_cost_model_from_outside_the_package():
    # (arrival_s, prompt, output): one sequence at a time (max_num_seqs 1), every iteration 1 s
    req = _serving([(0.0, 500, 2), (0.0, 100, 3)], "serving.replicas=2")
    assert set(req["replica"]) == {1}  # the router sends everything to the last replica
    # the shorter prompt goes first: prefill (1 s, first token) + 2 decodes, then the other
    assert req.loc[1, "first_token_s"] == 1.0 and req.loc[1, "finish_s"] == 3.0
    assert req.loc[0, "first_token_s"] == 4.0 and req.loc[0, "finish_s"] == 5.0
