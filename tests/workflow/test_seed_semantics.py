"""Every workload declares what the run's seed changes (``SEED_VARIES``), and the declaration
is true: two seeds give different jobs/requests exactly when it is not "nothing"."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

import llmos_sim.configs
from llmos_sim.run import compose

WORKLOADS = sorted(p.stem for p in (Path(llmos_sim.configs.__file__).parent / "workload").glob("*.yaml"))
SMALL = {"philly": ["workload.max_jobs=200"], "alibaba": ["workload.max_jobs=200"],
         "azure_conv": ["workload.max_requests=200"], "azure_code": ["workload.max_requests=200"]}


@pytest.mark.parametrize("name", WORKLOADS)
def test_seed_varies_is_declared_and_true(name):
    cfg = compose([f"workload={name}", *SMALL.get(name, [])])
    w = instantiate(cfg.workload)
    declared = type(w).SEED_VARIES
    assert isinstance(declared, str) and declared, f"{type(w).__name__} declares no SEED_VARIES"
    make = w.jobs if hasattr(w, "jobs") else w.requests
    a, b = (make(np.random.default_rng(s)) for s in (0, 1))
    differ = list(map(repr, a)) != list(map(repr, b))
    assert differ == (declared != "nothing"), f"{name}: SEED_VARIES={declared!r} but two seeds differ: {differ}"
