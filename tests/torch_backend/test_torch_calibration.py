"""Calibration writes a loadable cluster config; the torch-native pool keeps the pool seam."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from llmos_sim.backends.torch_gpu import TorchNativeFactory, TorchNativePool, local_cluster  # noqa: E402
from llmos_sim.backends.torch_gpu.calibrate import calibrate  # noqa: E402
from llmos_sim.run import compose, run_config  # noqa: E402
from llmos_sim.types import Cluster  # noqa: E402

from torch_helpers import real_overrides  # noqa: E402


def test_calibration_writes_a_loadable_cluster_config(tmp_path):
    cal = calibrate(tmp_path, seconds=0.1, dtypes=["fp32"], sweep=False, verbose=False)
    assert cal["devices"][0]["dtypes"]["fp32"]["flops"] > 0
    cluster = instantiate(OmegaConf.load(tmp_path / "cluster" / "calibrated.yaml"))
    assert isinstance(cluster, Cluster)
    f = cal["devices"][0]["dtypes"]["fp32"]["flops"]
    assert cluster.devices[0].flops == pytest.approx(f, rel=1e-5)
    # cluster=local reads the file
    local = local_cluster(dtype="fp32", calibration=str(tmp_path / "calibration.json"), mem_bytes=1 << 20)
    assert local.devices[0].flops == pytest.approx(f)
    assert json.loads((tmp_path / "calibration.json").read_text())["version"] == 1


def test_experiment_calibrate_runs_through_the_run_builder(tmp_path):
    cfg = compose(["experiment=calibrate", "backend=torch", f"calibration_dir={tmp_path}", "calibration.seconds=0.05",
                   "calibration.sweep=false"])
    res = run_config(cfg)
    assert (tmp_path / "calibration.json").is_file() and (tmp_path / "cluster" / "calibrated.yaml").is_file()
    assert any(k.endswith("_flops") and v > 0 for k, v in res.summary.items())
    assert res.facts["devices"]


def test_torch_native_pool_hands_out_real_tensors():
    pool = TorchNativePool(1 << 20, device="cpu")
    a = pool.allocate(1000, tag=1)
    b = pool.allocate(2000, tag=2)
    assert pool.tensor(a).numel() == 1000 and pool.tensor(b).numel() == 2000
    assert pool.stats().allocated_bytes == 3000 and pool.stats().n_live == 2
    assert pool.allocate(2 << 20) is None and pool.stats().n_failures == 1
    pool.free(a)
    assert pool.stats().allocated_bytes == 2000 and pool.fits((1 << 20) - 2000)
    f = TorchNativeFactory()
    assert isinstance(f(1 << 20), TorchNativePool)


def test_torch_native_pool_runs_jobs():
    ov = real_overrides([0.02, 0.02], extra=["memory=torch_native"])
    real = run_config(compose([*ov, "backend=torch"]))
    assert real.tables["jobs"]["status"].eq("completed").all()
    assert len(real.log.frame("measured")) == 2
