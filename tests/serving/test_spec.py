"""The serving settings are one checked object built from the yaml (the one source of their
defaults); the cost model and the KV pool are their own groups."""
import math

import pytest
from omegaconf import open_dict

from llmos_sim.run import compose, run_config, serving_spec
from llmos_sim.serving.spec import ServingSpec
from llmos_sim.validate import ConfigError


def test_the_yaml_defaults_build_a_spec_with_no_slo_as_inf():
    spec = serving_spec(compose(["mode=serving"]))
    assert isinstance(spec, ServingSpec)
    assert (spec.slo_ttft_s, spec.slo_tpot_s, spec.slo_e2e_s) == (2.0, 0.1, math.inf)
    assert spec.max_time_s is None and spec.max_time == math.inf and spec.block_tokens == 16


@pytest.mark.parametrize("override, key", [("serving.tp=0", "serving.tp"), ("serving.kv_mode=paged", "serving.kv_mode"),
                                           ("serving.fast_forward=3", "serving.fast_forward")])
def test_a_bad_value_names_its_key(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        serving_spec(compose(["mode=serving", override]))


def test_the_old_serving_cost_key_points_to_the_cost_group_and_a_missing_key_is_named():
    cfg = compose(["mode=serving", "+serving.cost.mfu=0.5"])
    with pytest.raises(ConfigError, match="serving.cost.*'cost' group"):
        run_config(cfg)
    cfg = compose(["mode=serving", "~serving.block_tokens"])
    with pytest.raises(ConfigError, match="serving.block_tokens.*missing"):
        serving_spec(cfg)


def test_an_experiment_swaps_the_cost_model_without_restating_the_serving_group():
    cfg = compose(["experiment=serving_real"])
    assert cfg.cost._target_.endswith("FittedCost")
    assert cfg.serving.host_kv_bytes is None and cfg.serving.replicas == 1  # from configs/serving/default.yaml
    spec = serving_spec(cfg)
    assert spec.num_kv_blocks == 512 and spec.slo_ttft_s == 0.5


def test_kv_memory_is_its_own_group_and_falls_back_to_memory():
    from llmos_sim.run import build_replica_factory
    from llmos_sim.policies.memory import PagedPool

    mixed = compose(["experiment=shared_cluster"])
    assert mixed.kv_memory._target_.endswith("PagedPool") and not mixed.memory._target_.endswith("PagedPool")
    cfg = compose(["mode=serving", "memory=paged", "model=tiny", "serving.num_kv_blocks=10"])
    with open_dict(cfg):
        assert cfg.get("kv_memory") is None
    make = build_replica_factory(cfg)
    assert make.pool.func is PagedPool and make.capacity_bytes == 10 * make.block_bytes
