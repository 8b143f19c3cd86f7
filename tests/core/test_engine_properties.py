"""Invariants of the engine on random small workloads (hypothesis)."""
from hypothesis import given, settings, strategies as st

from llmos_sim.engine import Engine
from llmos_sim.metrics import jobs_table, timeline_table
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.policies.scheduling import FIFO, SJF, FirstFree, Pack
from llmos_sim.stress import memory_above_capacity, replay_devices
from llmos_sim.types import GB, Cluster, DeviceSpec, Job

DEV = DeviceSpec("d", 1e13, 8 * GB)

job_st = st.tuples(
    st.integers(0, 50),  # arrival
    st.sampled_from([1, 2, 3, 4, 8]),  # gpus
    st.integers(1, 40),  # seconds
    st.sampled_from([0, 1, 3, 6, 9]),  # GB per device (9 never fits)
    st.booleans(),  # elastic
    st.sampled_from([1000, 1000, 500, 250]),  # share
)


def _jobs(spec):
    out = []
    for i, (t, g, d, m, el, milli) in enumerate(spec):
        if milli < 1000:
            g, el = 1, False
        out.append(Job(i, float(t), g * 1e13 * d * milli / 1000, gpus=g, min_gpus=1 if el and g > 1 else None,
                       gpu_milli=milli, mem_bytes_per_device=m * GB))
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(job_st, min_size=1, max_size=12), st.sampled_from(["fifo", "fifo_skip", "sjf"]),
       st.sampled_from(["pack", "first_free"]), st.sampled_from(["ideal", "first_fit"]))
def test_every_job_ends_and_devices_are_never_overbooked(spec, sched, place, pool):
    placement = Pack() if place == "pack" else FirstFree()
    scheduler = {"fifo": FIFO(placement), "fifo_skip": FIFO(placement, blocking=False),
                 "sjf": SJF(placement)}[sched]
    cluster = Cluster.homogeneous(2, 2, DEV)
    factory = IdealPool if pool == "ideal" else FirstFitPool
    jobs = _jobs(spec)
    engine = Engine(cluster, scheduler, pool_factory=factory)
    log = engine.run(jobs)

    # replay: device shares never exceed 1000 milli and are all released; memory never
    # exceeds capacity; every pool is empty at the end
    assert replay_devices(log, cluster.n_devices) is None
    assert memory_above_capacity(log, cluster) is None
    assert all(not p.live() for p in engine.pools)
    table = jobs_table(log, cluster)
    assert len(table) == len(jobs)
    # every arrived job ends completed or failed; nothing is left waiting when the run drains
    # (a job that could never start fails at arrival)
    assert set(table["status"]) <= {"completed", "failed"}
    done = table[table.status == "completed"]
    assert (done["wait_s"] >= 0).all() and (done["jct_s"] >= done["run_s"] - 1e-9).all()
    for j in jobs:  # a completed job ran at least its ideal time on its full demand
        row = table.set_index("job_id").loc[j.id]
        if row.status == "completed":
            assert row.run_s + 1e-6 >= j.work_flops / (j.gpus * 1e13 * j.gpu_milli / 1000)
    tl = timeline_table(log, cluster)
    assert (tl["busy_devices"] >= -1e-9).all() and (tl["utilisation"] <= 1 + 1e-9).all()
    assert (tl["queue_len"] >= 0).all()
