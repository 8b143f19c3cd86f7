"""Shared helpers and fixtures: one small sweep (3 schedulers x 2 memory pools x 3 seeds) through the joblib
launcher with the compare callback, run once per test session."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEDULERS = ("fifo", "fifo_skip", "sjf")
MEMORIES = ("ideal", "first_fit")
SEEDS = (0, 1, 2)
SMALL = ["experiment=quickstart", "workload.n_jobs=30", "workload.arrival_rate_per_s=0.2"]


def run_cli(args: list[str], timeout: float = 120, module: str = "llmos_sim") -> subprocess.CompletedProcess:
    """``python -m <module> args`` in the repo root; raises with the output on failure."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nSTDOUT\n{p.stdout[-3000:]}\nSTDERR\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="session")
def joblib_sweep(tmp_path_factory) -> tuple[Path, float]:
    """The 18-run sweep with ``hydra/launcher=joblib_local`` (2 workers) and the compare callback;
    returns its folder and wall time."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path_factory.mktemp("sweep") / "multirun"
    t0 = time.perf_counter()
    run_cli(["-m", *SMALL, f"scheduler={','.join(SCHEDULERS)}", f"memory={','.join(MEMORIES)}",
             f"seed={','.join(map(str, SEEDS))}", "hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2",
             "hydra/callbacks=compare", f"hydra.sweep.dir={sweep}"], timeout=240)
    return sweep, time.perf_counter() - t0
