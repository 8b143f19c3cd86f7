"""Real training runs on the torch backend: same decisions as SimPy, real timings, real memory."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmos_sim.backends.torch_gpu import TorchBackend, local_cluster  # noqa: E402
from llmos_sim.backends.torch_gpu.work import arena_matrices, merge_extents, place  # noqa: E402
from llmos_sim.policies.memory.fit import FirstFitPool  # noqa: E402
from llmos_sim.policies.memory.paged import PagedPool  # noqa: E402
from llmos_sim.run import compose, run_config  # noqa: E402
from llmos_sim.types import Job, Task  # noqa: E402

from torch_helpers import real_overrides  # noqa: E402


def lifecycle(log):
    return [(k, s) for _, k, s, _ in log if k in ("start", "finish", "fail")]


def test_real_run_makes_the_same_decisions_as_simpy():
    ov = real_overrides([0.03, 0.05, 0.02, 0.04, 0.03], arrivals=[0.0, 0.001, 0.002, 0.003, 0.004])
    real = run_config(compose([*ov, "backend=torch"]))
    sim = run_config(compose([*ov, "backend=simpy"]))
    assert lifecycle(real.log) == lifecycle(sim.log)
    assert [s for _, _, s, _ in real.log.of("start")] == [0, 1, 2, 3, 4]
    assert real.tables["jobs"]["status"].eq("completed").all()


def test_measured_times_positive_and_ordered():
    real = run_config(compose([*real_overrides([0.03, 0.02, 0.03]), "backend=torch"]))
    m = real.log.frame("measured")
    assert len(m) == 3 and m["status"].eq("done").all()
    assert (m["wall_end_s"] > m["wall_start_s"]).all() and (m["wall_start_s"] >= 0).all()
    assert (m["achieved_flops_s"] > 0).all()
    # one device: segments do not overlap and follow the start order
    starts, ends = m["wall_start_s"].tolist(), m["wall_end_s"].tolist()
    assert all(ends[i] <= starts[i + 1] for i in range(len(m) - 1))
    # the measurement lands in the log before the finish it triggers; env time tracks wall time
    fin = {s: t for t, k, s, _ in real.log if k == "finish"}
    for _, row in m.iterrows():
        assert abs(fin[row["subject"]] - row["wall_end_s"]) < 0.25
    assert abs(m["done_flops"].sum() - sum(j for j in real.tables["jobs"]["work_flops"])) < 1e6


def test_pool_offsets_are_disjoint_arena_slices():
    cl = local_cluster(flops=1e10, mem_bytes=16 << 20)
    be = TorchBackend(dtype="fp32", matmul_n=128)
    env = be.environment()
    be.bind(env, cl)
    pool = FirstFitPool(16 << 20, alignment_bytes=512)
    be.attach(None, [pool])
    allocs = [pool.allocate(n, tag=i) for i, n in enumerate([300_000, 500_000, 250_000])]
    mats = [be.matrices(0, [a], seed=i) for i, a in enumerate(allocs)]
    arena = be.arenas[0]
    lo, hi = arena.data_ptr(), arena.data_ptr() + arena.numel()
    ranges = []
    for a, m in zip(allocs, mats):
        for t in (m.a, m.b, m.c):
            r = (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
            assert lo + a.offset <= r[0] and r[1] <= lo + a.offset + a.nbytes  # inside its own slice
            assert lo <= r[0] and r[1] <= hi
            ranges.append(r)
    ranges.sort()
    assert all(ranges[i][1] <= ranges[i + 1][0] for i in range(len(ranges) - 1))
    before = [m.a.clone() for m in mats]
    mats[1].a.fill_(7.0)
    mats[1].c.fill_(-3.0)
    assert torch.equal(mats[0].a, before[0]) and torch.equal(mats[2].a, before[2])
    assert torch.all(arena[allocs[1].offset:allocs[1].offset + 4].view(torch.float32) == 7.0)


def test_paged_blocks_become_views_of_their_blocks():
    pool = PagedPool(1 << 20, block_bytes=64 << 10)
    a = pool.allocate(200 << 10, tag=0)
    ext = merge_extents(a.extents())
    assert sum(e - s for s, e in ext) == a.nbytes
    arena = torch.zeros(1 << 20, dtype=torch.uint8)
    m = arena_matrices(arena, a.extents(), torch.float32, n_max=128)
    for t in (m.a, m.b, m.c):
        s = t.data_ptr() - arena.data_ptr()
        e = s + t.numel() * 4
        assert any(bs <= s and e <= be for bs, be in ext)
    assert place([(0, 100)], [60, 60]) is None


def test_oom_fails_one_job_alone():
    # job 1's 1 KiB allocation cannot hold even 3 x 32x32 fp32 matrices: a real
    # torch.OutOfMemoryError in its worker; the others complete
    ov = real_overrides([0.02, 0.02, 0.02], mem_bytes=[4 << 20, 1024, 4 << 20])
    real = run_config(compose([*ov, "backend=torch"]))
    jobs = real.tables["jobs"].set_index("job_id")
    assert jobs.loc[1, "status"] == "failed" and "OutOfMemoryError" in jobs.loc[1, "reason"]
    assert jobs.loc[0, "status"] == "completed" and jobs.loc[2, "status"] == "completed"
    assert [s for _, k, s, _ in real.log if k == "finish"] == [0, 2]
    # its memory was released: the pool ends empty
    frees = [d for _, k, _, d in real.log if k == "mem_free"]
    assert frees[-1][4] == 0


def test_allocation_beyond_the_arena_is_a_real_oom():
    arena = torch.empty(1 << 20, dtype=torch.uint8)
    with pytest.raises(torch.OutOfMemoryError):
        arena_matrices(arena, [(1 << 20, 2 << 20)], torch.float32, n_max=64)


def test_cancel_stops_the_worker_between_steps():
    cl = local_cluster(flops=1e10, mem_bytes=8 << 20)
    be = TorchBackend(dtype="fp32", matmul_n=256)
    env = be.environment()
    be.bind(env, cl)
    task = Task(Job(0, 0.0, 1e14), (0,), 1e14)  # hours of work if not cancelled
    ev = be.run(task)
    env.run(until=0.05)
    be.cancel(task)
    env.run(until=ev)
    rec = be.measured[-1]
    assert rec[8] == "cancelled" and rec[4] - rec[3] < 1.0 and rec[5] < 1e14 and rec[9] == 256
    assert be.close()["n_segments"] == 1
