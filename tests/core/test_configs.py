"""Every config option composes and instantiates; same config + seed -> identical tables."""
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate

import llmos_sim.configs as configs_pkg
from llmos_sim.run import PoolCopies, compose, run_config

CONFIG_DIR = Path(configs_pkg.__file__).parent
# groups a training run instantiates (serving groups are covered by tests/serving)
GROUPS = ["cluster", "workload", "scheduler", "placement", "memory", "backend"]


def options(group):
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _needs_torch(group, name):
    text = (CONFIG_DIR / group / f"{name}.yaml").read_text()
    return "torch_gpu" in text


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in options(g)])
def test_every_option_composes_and_instantiates(group, name):
    if _needs_torch(group, name):
        pytest.importorskip("torch")
    cfg = compose([f"{group}={name}"])
    node = cfg[group]
    obj = instantiate(node)
    if group == "memory":
        pool = obj(capacity_bytes=2**30)
        assert pool.allocate(4096, "t") is not None
    elif group == "workload":
        assert hasattr(obj, "jobs") or hasattr(obj, "requests")
    else:
        assert obj is not None


@pytest.mark.parametrize("name", options("memory"))
def test_a_copied_pool_is_the_pool_the_factory_makes(name):
    """A run asks the configured pool factory once per device capacity and copies that fresh
    pool for each device: a copy grants what a pool the factory makes grants, and two copies
    share no state."""
    if _needs_torch("memory", name):
        pytest.importorskip("torch")
    factory = instantiate(compose([f"memory={name}"]).memory)
    asked = []
    copies = PoolCopies(lambda cap: asked.append(cap) or factory(cap))
    a, b = copies(2**30), copies(2**30)
    copies(2**31)
    assert asked == [2**30, 2**31]
    made = factory(2**30)

    def grant(pool, nbytes):
        got = pool.allocate(nbytes, "t")
        return got and (got.nbytes, got.requested, got.id, None if pool.owns_storage else (got.offset, got.blocks))

    for nbytes in (4096, 3 * 2**20, 2**28, 2**29, 2**29):
        assert grant(a, nbytes) == grant(made, nbytes)
    assert a.stats() == made.stats() and a.stats().n_alloc > 0
    assert b.stats() == factory(2**30).stats() and b.stats().n_alloc == 0


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes(name):
    cfg = compose([f"experiment={name}"])
    assert cfg.name


def test_unknown_option_is_a_clear_error():
    with pytest.raises(Exception, match="scheduler"):
        compose(["scheduler=no_such_policy"])


def _tiny(overrides=()):
    return compose(["experiment=quickstart", "workload.n_jobs=40", *overrides])


def test_same_config_and_seed_give_identical_tables():
    a, b = run_config(_tiny()), run_config(_tiny())
    for name in ("jobs", "timeline", "memory", "events"):
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    assert a.summary == b.summary


def test_another_seed_gives_another_workload():
    a, b = run_config(_tiny(["seed=0"])), run_config(_tiny(["seed=1"]))
    assert not a.tables["jobs"]["arrival_s"].equals(b.tables["jobs"]["arrival_s"])


def test_quickstart_summary_is_consistent_with_its_tables():
    r = run_config(_tiny())
    jobs = r.tables["jobs"]
    assert r.summary["n_jobs"] == 40 == len(jobs)
    assert r.summary["n_completed"] + r.summary["n_failed"] + r.summary["n_unfinished"] == 40
    assert r.summary["jct_s_avg"] == pytest.approx(jobs.loc[jobs.status == "completed", "jct_s"].mean())
    assert 0 < r.summary["utilisation"] <= 1
    mem = r.tables["memory"]
    assert set(mem["op"]) <= {"alloc", "free", "fail"}
    assert (mem["pool_allocated"] <= mem["capacity"]).all()
