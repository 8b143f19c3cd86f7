"""The seed document's worked examples (section 4), as exact tests.

Note on the first two: the seed prints 10,000 s (100 devices) and 100,000 s (10 devices), but
its own formula T_d = T / Σ C_i gives 10^20 / 10^15 = 100,000 s and 10^20 / 10^14 =
1,000,000 s (the printed 10× ratio agrees). The formula is authoritative: these tests check
the formula's values.
"""
from llmos_sim.engine import Engine
from llmos_sim.formulas import distributed_time_s, grant, pool_usage_bytes
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.scheduling import FIFO
from llmos_sim.types import GB, TFLOPS, Cluster, DeviceSpec, Job

T = 100 * 10**6 * TFLOPS  # 100×10^6 TFLOP of work, in FLOPs
SEED_DEVICE = DeviceSpec("seed-device", 10 * TFLOPS, 4 * GB)


def test_distributed_time_formula_100_devices():
    assert distributed_time_s(T, [10 * TFLOPS] * 100) == 100_000.0  # the seed prints 10,000 s


def test_distributed_time_formula_10_devices():
    assert distributed_time_s(T, [10 * TFLOPS] * 10) == 1_000_000.0  # the seed prints 100,000 s


def test_placement_factor_defaults_to_exactly_one():
    assert distributed_time_s(T, [10 * TFLOPS] * 100, factor=1.0) == distributed_time_s(T, [10 * TFLOPS] * 100)


def _finish_time(n_devices: int) -> float:
    cluster = Cluster.homogeneous(1, n_devices, SEED_DEVICE)
    log = Engine(cluster, FIFO()).run([Job(0, 0.0, T, gpus=n_devices)])
    (finish,) = [t for t, kind, _, _ in log if kind == "finish"]
    return finish


def test_engine_and_simpy_backend_reproduce_the_formula():
    assert _finish_time(100) == 100_000.0
    assert _finish_time(10) == 1_000_000.0


def test_grant_rule_50_30_20_from_100_100_100():
    available = {"gpu": 100, "cpu": 100, "host_mem_bytes": 100}
    demanded = {"gpu": 50, "cpu": 30, "host_mem_bytes": 20}
    assert grant(available, demanded) == {"gpu": 50, "cpu": 30, "host_mem_bytes": 20}


def test_grant_rule_caps_at_available():
    assert grant({"gpu": 8}, {"gpu": 16}) == {"gpu": 8}
    assert grant({}, {"cpu": 4}) == {"cpu": 0.0}


def test_pool_formula_4gb_pool_2gb_used_takes_1gb_to_3gb():
    assert pool_usage_bytes(4 * GB, 2 * GB, 1 * GB) == 3 * GB
    assert pool_usage_bytes(4 * GB, 2 * GB, 3 * GB) == 4 * GB  # capped at M


def test_ideal_pool_follows_the_formula():
    pool = IdealPool(4 * GB)
    assert pool.allocate(2 * GB, "a") is not None
    assert pool.allocate(1 * GB, "b") is not None
    assert pool.stats().allocated_bytes == 3 * GB
    assert pool.allocate(2 * GB, "c") is None  # 3 + 2 > 4: min(M, M_u + M_d) caps, so it does not fit
    assert pool.stats().n_failures == 1
