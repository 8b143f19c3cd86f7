"""Workload generators and the Philly trace adapter, on the real shipped file and on bad input."""
import numpy as np
import pytest

from llmos_sim.workload import PhillyTrace, SyntheticJobs, TraceError


def test_philly_reads_the_whole_shipped_trace():
    t = PhillyTrace()
    df = t.frame()
    assert len(df) == 82_247  # the file has 82,247 data rows (plus a header and a trailing blank line)
    assert int(df["num_gpus"].sum()) == 107_235  # checked independently with the csv module
    jobs = t.jobs(np.random.default_rng(0))
    assert len(jobs) == 82_247
    assert jobs[0].arrival_s == 0.0
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(jobs, jobs[1:]))
    j = jobs[0]
    row = df.iloc[0]
    assert j.work_flops == row["duration"] * row["num_gpus"] * t.reference_flops


def test_philly_one_virtual_cluster_and_load():
    base = PhillyTrace(clusters=["6214e9"]).frame()
    fast = PhillyTrace(clusters=["6214e9"], load=2.0).frame()
    assert set(base["cluster"]) == {"6214e9"}
    assert np.allclose(fast["arrival_s"], base["arrival_s"] / 2)


@pytest.mark.parametrize("bad_line,needle", [
    ("2017-10-09 07:01:55,abc,1,66.0,11cb48", "column 'duration'"),
    ("2017-10-09 07:01:55,66.0,0,66.0,11cb48", "column 'num_gpus'"),
    ("not a date,66.0,1,66.0,11cb48", "column 'timestamp'"),
])
def test_philly_malformed_row_names_file_and_line(tmp_path, bad_line, needle):
    p = tmp_path / "philly.csv"
    p.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n"
                 "2017-10-09 07:01:55,66.0,1,66.0,11cb48\n" + bad_line + "\n")
    with pytest.raises(TraceError) as e:
        PhillyTrace(path=p).frame()
    assert str(p) in str(e.value) and "line 3" in str(e.value) and needle in str(e.value)


def test_philly_missing_column_and_missing_file(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("timestamp,duration\n2017-10-09 07:01:55,3\n")
    with pytest.raises(TraceError, match="missing column"):
        PhillyTrace(path=p).frame()
    with pytest.raises(TraceError, match="no such trace file"):
        PhillyTrace(path=tmp_path / "nope.csv").frame()


def test_synthetic_is_seeded_and_follows_its_parameters():
    w = SyntheticJobs(n_jobs=5000, arrival_rate_per_s=2.0, gpus=[1, 8], gpus_p=[0.75, 0.25],
                      duration_median_s=100.0, duration_sigma=0.0, reference_flops=1e12,
                      mem_min_bytes=10, mem_max_bytes=20, elastic_fraction=0.5)
    a, b = w.jobs(np.random.default_rng(7)), w.jobs(np.random.default_rng(7))
    assert a == b
    gaps = np.diff([j.arrival_s for j in a])
    assert np.mean(gaps) == pytest.approx(0.5, rel=0.05)
    assert np.mean([j.gpus == 8 for j in a]) == pytest.approx(0.25, abs=0.03)
    assert all(j.work_flops == pytest.approx(100.0 * j.gpus * 1e12) for j in a)
    assert all(10 <= j.mem_bytes_per_device <= 20 for j in a)
    elastic = [j for j in a if j.elastic]
    assert elastic and all(j.min_gpus == 4 for j in elastic)
