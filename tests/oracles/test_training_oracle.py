"""The engine against the reference simulator of ``training_oracle.py`` on random workloads.

Every job's start times, preemption times and finish time must agree to 1e-9 for FIFO, SJF,
SRTF, LAS and 2D-LAS on one node of 1-4 unit devices (integer arrivals and run times, 1, 2 or
4 devices a job, rounds and restore costs in whole seconds, so every time is exact in binary
and ties are real ties)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmos_sim import events as E
from llmos_sim.engine import Engine
from llmos_sim.policies.scheduling import FIFO
from llmos_sim.policies.scheduling.base import Pack
from llmos_sim.policies.scheduling.placement import Consolidated
from llmos_sim.policies.scheduling.preemptive import LAS, SRTF, DiscretizedLAS
from llmos_sim.policies.scheduling.sjf import SJF
from llmos_sim.types import Cluster, DeviceSpec, Job
from training_oracle import simulate

UNIT = DeviceSpec("unit", 1.0, 0)


def engine_schedule(jobs, nodes, policy, opts, fast_path="auto", devices=False):
    """Per job ``(starts, preempts, finish)`` from the engine's log, with ``devices`` the
    device set of each start too; ``nodes``: one node's size, or a tuple of node sizes."""
    o = dict(opts)
    overhead = o.pop("preempt_overhead_s")
    where = {"pack": Pack, "consolidated": Consolidated}[o.pop("placement", "pack")]()
    sched = {
        "fifo": lambda: FIFO(where),
        "sjf": lambda: SJF(where),
        "srtf": lambda: SRTF(where, round_s=o["round_s"], min_run_s=o["min_run_s"]),
        "las": lambda: LAS(where, round_s=o["round_s"], min_run_s=o["min_run_s"], service=o["service"]),
        "2dlas": lambda: DiscretizedLAS(where, **o),
    }[policy]()
    sizes = (nodes,) if isinstance(nodes, int) else nodes
    cluster = Cluster.from_groups([(1, size, UNIT, 0, 0) for size in sizes])
    eng = Engine(cluster, sched, preempt_overhead_s=overhead,
                 fast_path=fast_path)
    log = eng.run([Job(i, a, s * g, gpus=g) for i, a, s, g in jobs])
    out = {i: ([], [], None, []) for i, *_ in jobs}
    for t, k, s, data in log.records:
        if k == E.START:
            out[s][0].append(t)
            out[s][3].append(tuple(sorted(data[0])))
        elif k == E.PREEMPT:
            out[s][1].append(t)
        elif k == E.FINISH:
            out[s] = (out[s][0], out[s][1], t, out[s][3])
    return out if devices else {i: v[:3] for i, v in out.items()}


def oracle_schedule(jobs, nodes, policy, opts, devices=False):
    res = simulate(jobs, (nodes,) if isinstance(nodes, int) else nodes, policy, **opts)
    return {i: (j.starts, j.preempts, j.finish) + ((j.placed,) if devices else ())
            for i, j in res.items()}


def assert_same(got, want):
    """Times to 1e-9; device sets (a fourth item, when there) exactly."""
    assert got.keys() == want.keys()
    for i in want:
        (gs, gp, gf, *gd), (ws, wp, wf, *wd) = got[i], want[i]
        assert len(gs) == len(ws) and len(gp) == len(wp), (i, got[i], want[i])
        assert all(abs(a - b) <= 1e-9 for a, b in zip(gs + gp + [gf], ws + wp + [wf])), (i, got[i], want[i])
        assert gd == wd, (i, got[i], want[i])


def policy_options(policy, opts):
    """The drawn options ``policy`` takes (2D-LAS always with rounds)."""
    if policy in ("fifo", "sjf"):
        return {"preempt_overhead_s": 0.0}
    if policy in ("srtf", "las"):
        del opts["thresholds"], opts["running_first"], opts["tie_break"]
        if policy == "srtf":
            del opts["service"]
    elif opts["round_s"] is None:
        opts["round_s"] = 4.0
    return opts


def check(policy, nodes, jobs, opts, devices=False, placement="pack"):
    """Both engine paths against the oracle."""
    opts = dict(policy_options(policy, opts), placement=placement)
    want = oracle_schedule(jobs, nodes, policy, opts, devices)
    for fast_path in ("auto", "off"):
        assert_same(engine_schedule(jobs, nodes, policy, opts, fast_path, devices), want)


@st.composite
def workloads(draw):
    n_devices = draw(st.sampled_from([1, 2, 4]))
    n = draw(st.integers(1, 12))
    gpus = [g for g in (1, 2, 4) if g <= n_devices]
    jobs = [(i, float(draw(st.integers(0, 20))), float(draw(st.integers(0, 12))),
             draw(st.sampled_from(gpus))) for i in range(n)]
    return n_devices, jobs


PREEMPTIVE = st.fixed_dictionaries({
    "round_s": st.sampled_from([None, 1.0, 3.0, 5.0]),
    "preempt_overhead_s": st.sampled_from([0.0, 1.0, 2.0]),
    "min_run_s": st.sampled_from([0.0, 0.0, 1.0, 3.0]),
    "service": st.sampled_from(["gpu_s", "time_s"]),
    "thresholds": st.sampled_from([(2.0,), (4.0,), (3.0, 9.0)]),
    "running_first": st.booleans(),
    "tie_break": st.sampled_from(["arrival", "previous_rank"]),
})


@pytest.mark.parametrize("policy", ["fifo", "sjf", "srtf", "las", "2dlas"])
@settings(max_examples=150, deadline=None)
@given(w=workloads(), opts=PREEMPTIVE)
def test_engine_matches_the_oracle(policy, w, opts):
    n_devices, jobs = w
    check(policy, n_devices, jobs, opts)


@st.composite
def several_nodes(draw):
    nodes = tuple(draw(st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=2, max_size=4)))
    n = draw(st.integers(1, 12))
    jobs = [(i, float(draw(st.integers(0, 20))), float(draw(st.integers(0, 12))),
             draw(st.integers(1, min(8, sum(nodes))))) for i in range(n)]
    return nodes, jobs


@pytest.mark.parametrize("policy", ["fifo", "sjf", "srtf", "las", "2dlas"])
@settings(max_examples=150, deadline=None)
@given(w=several_nodes(), opts=PREEMPTIVE)
def test_engine_matches_the_oracle_on_several_nodes(policy, w, opts):
    nodes, jobs = w
    check(policy, nodes, jobs, opts, devices=True)


@pytest.mark.parametrize("policy", ["fifo", "sjf", "srtf", "las", "2dlas"])
@settings(max_examples=100, deadline=None)
@given(w=several_nodes(), opts=PREEMPTIVE)
def test_engine_matches_the_oracle_under_consolidated_placement(policy, w, opts):
    nodes, jobs = w
    check(policy, nodes, jobs, opts, devices=True, placement="consolidated")
