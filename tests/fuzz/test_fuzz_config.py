"""Invalid values for every numeric, boolean and enumerated config key (enumerated from the
composed configs of :data:`cases.BASES`): refused by the config check with the key named, or
a correct run; never a raw traceback, a hang or a silent result."""
import copy
import os

from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import cases
from llmos_sim.run import compose
from llmos_sim.validate import ConfigError, check_config

CASES = cases.config_cases()
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
_PARSER = OverridesParser.create()
_BASES: dict = {}


def _with_override(base: list[str], key: str, value: str):
    """``base`` composed once, then ``key=value`` applied as Hydra applies an override."""
    if tuple(base) not in _BASES:
        _BASES[tuple(base)] = compose(base)
    cfg = copy.deepcopy(_BASES[tuple(base)])
    OmegaConf.update(cfg, key, _PARSER.parse_override(f"{key}={value}").value(), merge=True)
    return cfg


def test_the_keys_cover_every_group():
    keys = {k for _, k, _, _ in CASES}
    for prefix in ("seed", "mode", "engine.", "serving.", "output.", "workload.", "cluster.", "scheduler.",
                   "memory.", "batching.", "model.", "gpu.", "services."):
        assert any(k == prefix or k.startswith(prefix) for k in keys), prefix
    assert len(CASES) > 800


def test_every_invalid_value_is_refused_by_the_check_naming_its_key():
    """The one place that validates: no run needed to refuse any of them."""
    misses = []
    for base, key, value, must in CASES:
        if not must:
            continue
        cfg = _with_override(base, key, value)
        try:
            check_config(cfg)
        except ConfigError as e:
            # the key itself, or the component key it resolves into (affinity -> cost model)
            if e.key.split("[")[0].split(".")[0] not in (key.split(".")[0], "backend"):
                misses.append(f"{key}={value}: names {e.key!r}")
            continue
        misses.append(f"{' '.join(base)} {key}={value}: accepted")
    assert not misses, "\n".join(misses[:30])


@settings(max_examples=EXAMPLES, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
          suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(CASES))
def test_random_invalid_overrides_run_or_fail_cleanly(case):
    """Through :func:`~llmos_sim.run.run_config`, with a time limit: a named error or a
    correct run."""
    base, key, value, must = case
    outcome, detail = cases.judge_config(base, key, value, must)
    assert outcome in cases.GOOD, f"{outcome}: {detail}"
