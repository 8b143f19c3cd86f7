"""Request streams come from the run's named seed stream ``serving`` in every mode: the same
request workload and seed give the same requests in ``mode: serving`` and ``mode: mixed``."""
import numpy as np
from omegaconf import OmegaConf, open_dict

from llmos_sim.run import build_serving, compose, rngs, run_config

SYN = {"_target_": "llmos_sim.workload.requests.SyntheticRequests", "n": 12, "rate_per_s": 5.0,
       "prompt_min": 8, "prompt_max": 64, "output_min": 2, "output_max": 8}


def _requests(table):
    return table.sort_index()[["arrival_s", "prompt_tokens", "output_tokens"]].to_numpy()


def test_serving_and_mixed_mode_draw_the_same_requests_for_the_same_workload_and_seed():
    serving = compose(["mode=serving", "model=tiny", "serving.num_kv_blocks=200", "seed=7", "output.plots=false"])
    with open_dict(serving):
        serving.workload = OmegaConf.create(SYN)
    mixed = compose(["experiment=shared_cluster", "cluster=tiny", "scheduler=fifo", "model=tiny", "seed=7",
                     "output.plots=false"])
    with open_dict(mixed):
        mixed.cluster.groups[0].device = "A100"  # catalogue devices (the service runs on them)
        mixed.workload = OmegaConf.create({
            "_target_": "llmos_sim.workload.synthetic.SyntheticJobs", "n_jobs": 1, "arrival_rate_per_s": 1.0,
            "gpus": [1], "duration_median_s": 1.0, "duration_sigma": 0.0, "reference_flops": 1.0e13})
        mixed.services = OmegaConf.create({"chat": {"workload": SYN, "replicas": 1, "arrival_s": 0.0, "priority": 0,
                                                    "mem_bytes_per_device": 0}})
    a, b = _requests(run_config(serving).tables["requests"]), _requests(run_config(mixed).tables["requests"])
    assert len(a) == 12 and np.array_equal(a, b)
    # and they are the draws of the ``serving`` child of the seed, not of a generator seeded directly
    parts = build_serving(serving, rngs(7))
    direct = [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in parts.requests]
    assert np.array_equal(np.array(direct, dtype=float), a.astype(float))
    plain = np.random.default_rng(7)
    from hydra.utils import instantiate

    old = [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in instantiate(serving.workload).requests(plain)]
    assert not np.array_equal(np.array(old, dtype=float), a.astype(float))
