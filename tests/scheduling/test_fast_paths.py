"""A policy's fast path and the general path give the same schedule.

SRTF, LAS and 2D-LAS compute their ranking keys in one sweep per pass (``ranked``) instead of one
``key`` call per job. A subclass that overrides ``key`` (here: only to call the parent's) is
served by the general path, so running both on the same random workloads and comparing the
whole event log checks that the sweep computes exactly the keys ``key`` would."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim.engine import Engine
from llmos_sim.policies.scheduling.preemptive import LAS, SRTF, DiscretizedLAS, PreemptiveScheduler
from llmos_sim.types import Job
from sched_helpers import GeneralDiscretizedLAS, GeneralLAS, GeneralSRTF, cluster



def _jobs(seed: int, n: int) -> list[Job]:
    rng = np.random.default_rng(seed)
    arrivals = np.round(np.cumsum(rng.exponential(40.0, n)), 0)  # rounded: ties at an instant
    gpus = rng.choice([1, 1, 2, 4], n)
    secs = np.round(rng.lognormal(4.5, 1.2, n), 1)
    return [Job(i, float(a), float(s * g), gpus=int(g)) for i, (a, s, g) in enumerate(zip(arrivals, secs, gpus))]


def _log(scheduler, jobs, **kw):
    eng = Engine(cluster(2, 4), scheduler, **kw)
    return eng.run(jobs).records


CASES = [
    (SRTF, GeneralSRTF, {"round_s": None}),
    (SRTF, GeneralSRTF, {"round_s": 60.0}),
    (LAS, GeneralLAS, {"round_s": 60.0}),
    (LAS, GeneralLAS, {"round_s": 30.0, "min_run_s": 45.0}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 60.0, "thresholds": (200.0, 2000.0)}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": 60.0, "thresholds": (300.0,), "running_first": False}),
    (DiscretizedLAS, GeneralDiscretizedLAS, {"round_s": None, "thresholds": (100.0, 1000.0), "promote_after_s": 500.0}),
]


@pytest.mark.parametrize("fast,general,kw", CASES)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), overhead=st.sampled_from([0.0, 10.0, 90.0]), per_event=st.booleans())
def test_fast_path_is_the_general_path(fast, general, kw, seed, overhead, per_event):
    jobs = _jobs(seed, 40)
    engine_kw = {"preempt_overhead_s": overhead, "pass_per_event": per_event}
    a = _log(fast(**kw), jobs, **engine_kw)
    b = _log(general(**kw), jobs, **engine_kw)
    assert a == b
    assert sum(1 for r in a if r[1] == "finish") == len(jobs)


@pytest.mark.parametrize("fast,general,kw", CASES)
def test_the_general_subclass_takes_the_general_path(fast, general, kw, monkeypatch):
    """The check above compares two paths only if the subclass really leaves the fast one (and
    the policy itself does not)."""
    calls = []
    general_ranked = PreemptiveScheduler.ranked
    monkeypatch.setattr(PreemptiveScheduler, "ranked", lambda self, v, r: calls.append(1) or general_ranked(self, v, r))
    _log(fast(**kw), _jobs(1, 8))
    assert not calls
    _log(general(**kw), _jobs(1, 8))
    assert calls
