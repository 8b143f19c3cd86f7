"""CUDA-only checks (``pytest -m gpu``); skipped cleanly without a GPU."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmos_sim.backends.torch_gpu import TorchBackend, TorchNativePool, local_cluster  # noqa: E402
from llmos_sim.backends.torch_gpu.work import measure_matmul  # noqa: E402
from llmos_sim.run import compose, run_config  # noqa: E402

from torch_helpers import real_overrides  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_cluster_local_discovers_every_gpu():
    cl = local_cluster(flops=1e12, mem_bytes=1 << 30)
    assert cl.n_devices == torch.cuda.device_count()


def test_bf16_matmul_rate_is_plausible():
    f = measure_matmul("cuda:0", torch.bfloat16, 4096, seconds=0.5)
    assert 1e12 < f < 5e15


def test_real_run_on_gpu_arena():
    ov = real_overrides([0.05, 0.05, 0.05], mem_bytes=1 << 30,
                        extra=["dtype=bf16", "cluster.mem_bytes=4294967296", "cluster.flops=1e14",
                               "workload.reference_flops=1e14"])
    real = run_config(compose([*ov, "backend=torch"]))
    assert real.tables["jobs"]["status"].eq("completed").all()
    m = real.log.frame("measured")
    assert (m["achieved_flops_s"] > 1e12).all()


def test_arena_lives_on_the_gpu():
    be = TorchBackend(dtype="bf16", matmul_n=1024)
    env = be.environment()
    be.bind(env, local_cluster(flops=1e12, mem_bytes=64 << 20))
    assert be.arenas[0].is_cuda and be.arenas[0].numel() == 64 << 20


def test_torch_native_pool_reads_cuda_stats():
    pool = TorchNativePool(1 << 30, device="cuda:0")
    a = pool.allocate(10 << 20, tag=0)
    assert pool.stats().reserved_bytes >= pool.stats().allocated_bytes >= 10 << 20
    assert pool.device_stats()["allocated_bytes.all.current"] >= 10 << 20
    pool.free(a)
