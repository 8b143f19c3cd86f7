"""Jobs as rows of columns: a JobTable reads back exactly the jobs it holds, and a run given a
table writes the log a run given the jobs writes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim.engine import Engine
from llmos_sim.policies.scheduling import FIFO, LAS, SRTF
from llmos_sim.types import GB, Arrivals, Cluster, Constant, DeviceSpec, Job, JobTable
from llmos_sim.workload import SyntheticJobs

DEV = DeviceSpec("d", 1e13, 8 * GB)


def _fields(job):
    return [(getattr(job, f), type(getattr(job, f))) for f in Job.__dataclass_fields__]


job_st = st.builds(
    lambda i, t, w, g, el, pri, ten, pre, dem: Job(
        i, t, w, gpus=g, min_gpus=max(1, g // 2) if el else None, priority=pri, tenant=ten,
        preprocess_s=pre, demand={"cpu": 2.0} if dem else {}),
    st.integers(0, 10**6), st.one_of(st.integers(0, 50), st.floats(0, 50)), st.floats(0, 1e15),
    st.integers(1, 8), st.booleans(), st.integers(-2, 2), st.sampled_from(["a", "b"]),
    st.sampled_from([0.0, -0.0, 1.5, 0]), st.booleans())


@settings(max_examples=100, deadline=None)
@given(st.lists(job_st, max_size=12, unique_by=lambda j: j.id))
def test_a_table_reads_back_its_jobs_values_and_types(jobs):
    t = JobTable.from_jobs(jobs)
    assert len(t) == len(jobs)
    assert [_fields(j) for j in t] == [_fields(j) for j in jobs]  # same values, same Python types
    assert [_fields(t[i]) for i in range(len(t))] == [_fields(j) for j in jobs]
    assert t[1:3] == jobs[1:3] and t[::-1] == jobs[::-1]
    rows = list(range(len(jobs)))[::-1]
    assert list(t.take(rows)) == [jobs[r] for r in rows]
    for k, j in enumerate(jobs):
        assert t.arrive(k) == (j.gpus, j.work_flops, j.gpu_milli, j.tenant)
    # many arrivals' data at once, field by field: the same values and types, any rows
    picked = rows + rows[:3]
    expected = [list(c) for c in zip(*map(t.arrive, picked))] or [[]] * 4
    assert [_typed(c) for c in Arrivals(t).columns(picked)] == [_typed(c) for c in expected]
    for f in Job.__dataclass_fields__:
        assert _typed(t.gather(f, picked)) == _typed([getattr(jobs[k], f) for k in picked])


def _typed(values):
    return [(v, type(v)) for v in values]


def test_columns_are_compact_and_exact():
    jobs = [Job(i, float(i), 1e13, gpus=1 + i % 2, preprocess_s=-0.0 if i == 1 else 0.0) for i in range(4)]
    t = JobTable.from_jobs(jobs)
    assert isinstance(t.column("tenant"), Constant) and t.column("tenant").value == "default"
    assert t.column("arrival_s").typecode == "d" and t.column("id").typecode == "q"
    # -0.0 and 0.0 are equal but not the same: a float column keeps each
    assert str(t[1].preprocess_s) == "-0.0" and str(t[0].preprocess_s) == "0.0"
    with pytest.raises(IndexError):
        t[4]
    assert t[-1] == jobs[-1]


def test_from_columns_checks_the_rows_as_job_does():
    with pytest.raises(ValueError, match="job 1: gpus must be >= 1"):
        JobTable.from_columns(2, id=np.arange(2), arrival_s=np.zeros(2), work_flops=np.ones(2), gpus=np.array([1, 0]))
    with pytest.raises(ValueError, match="column 'work_flops' is required"):
        JobTable.from_columns(1, id=np.arange(1), arrival_s=np.zeros(1))
    t = JobTable.from_columns(2, id=np.arange(2), arrival_s=np.zeros(2), work_flops=np.ones(2))
    assert list(t) == [Job(0, 0.0, 1.0), Job(1, 0.0, 1.0)]


@pytest.mark.parametrize("kw", [dict(n_jobs=300), dict(n_jobs=200, elastic_fraction=0.5, tenants=("a", "b", "c"),
                                                         mem_min_bytes=1, mem_max_bytes=GB)])
def test_the_synthetic_table_is_the_synthetic_jobs(kw):
    w = SyntheticJobs(**kw)
    t = w.table(np.random.default_rng(3))
    assert isinstance(t, JobTable)
    assert [_fields(j) for j in t] == [_fields(j) for j in w.jobs(np.random.default_rng(3))]


@pytest.mark.parametrize("policy", [FIFO, LAS, SRTF])
def test_a_run_given_a_table_writes_the_log_of_a_run_given_jobs(policy):
    """FIFO: the key-order fast core reads the table's columns; LAS: the jobs are built once and
    the preemptive fast core runs them; SRTF: the jobs are built once for the general engine.
    The rows are given out of arrival order (the run serves them by arrival, then id)."""
    jobs = SyntheticJobs(n_jobs=200, arrival_rate_per_s=0.05).jobs(np.random.default_rng(1))
    runs = []
    for given_jobs in (jobs, JobTable.from_jobs(jobs[::-1])):
        eng = Engine(Cluster.homogeneous(2, 4, DEV), policy())
        eng.run(given_jobs)
        runs.append(eng)
    assert runs[1].fast_path_used == (policy is not SRTF)
    assert list(runs[0].log.records) == list(runs[1].log.records)
    assert list(runs[0].finished) == list(runs[1].finished)


def test_a_table_with_a_bad_job_is_named_as_with_jobs():
    t = JobTable.from_jobs([Job(0, 0.0, 1.0), Job(0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="duplicate job id 0"):
        Engine(Cluster.homogeneous(1, 2, DEV), FIFO()).run(t)
    t = JobTable.from_jobs([Job(0, 0.0, 1.0), Job(1, float("nan"), 1.0)])
    with pytest.raises(ValueError, match="job 1: arrival_s and work_flops must be finite"):
        Engine(Cluster.homogeneous(1, 2, DEV), FIFO()).run(t)
