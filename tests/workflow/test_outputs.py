"""Run folders: one atomic completion marker, provenance-checked resume, the writer's lock,
leftover partial folders, read-only folders and run names that would escape the outputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from llmos_sim import outputs
from llmos_sim.run import compose, run_config, write_results
from workflow.helpers import REPO, run_cli

A = ["experiment=quickstart", "workload.n_jobs=12", "scheduler=fifo"]
B = ["experiment=quickstart", "workload.n_jobs=14", "scheduler=sjf"]


@pytest.fixture(scope="module")
def two_runs():
    return run_config(compose(A)), run_config(compose(B))


def _state(folder: Path, runs) -> str:
    """Which run the folder looks like: 'A'/'B' when complete, '' when not complete; asserts
    that whatever summary.json and config.yaml it holds belong to one run."""
    cfgs = {k: (outputs.config_sha256((folder.parent / f"ref_{k}" / "config.yaml").read_text())) for k in "AB"}
    sums = {k: (folder.parent / f"ref_{k}" / "summary.json").read_text() for k in "AB"}
    summary = (folder / "summary.json").read_text() if (folder / "summary.json").exists() else None
    config = outputs.config_sha256((folder / "config.yaml").read_text()) if (folder / "config.yaml").exists() else None
    if summary is not None:  # compare reads any folder with summary.json: it must be one run's
        owner = [k for k in "AB" if sums[k] == summary]
        assert owner and cfgs[owner[0]] == config, "summary.json beside another run's config.yaml"
    marker = outputs.read_marker(folder)
    if marker is None:
        return ""
    owner = [k for k in "AB" if cfgs[k] == marker["config_sha256"]]
    assert owner and config == marker["config_sha256"] and summary == sums[owner[0]]
    return owner[0]


def test_kill_at_any_point_never_leaves_another_configs_numbers(tmp_path, two_runs, monkeypatch):
    ra, rb = two_runs
    write_results(ra, tmp_path / "ref_A", plots=False)
    write_results(rb, tmp_path / "ref_B", plots=False)
    n_moves = len(list((tmp_path / "ref_B").iterdir()))  # one os.replace per file, the marker last
    real_replace = os.replace
    for kill_after in range(n_moves + 1):
        run = tmp_path / f"run{kill_after}"
        write_results(ra, run, plots=False)
        calls = []

        def dying_replace(src, dst, _calls=calls, _n=kill_after):
            if len(_calls) >= _n:
                raise KeyboardInterrupt("killed")
            _calls.append(dst)
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", dying_replace)
        try:
            write_results(rb, run, plots=False)
        except KeyboardInterrupt:
            pass
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
        state = _state(run, two_runs)
        assert state in ("A", "") if kill_after < n_moves else state == "B"
        cfg_a = compose(A)
        from omegaconf import OmegaConf

        done, _ = outputs.resume_check(OmegaConf.to_yaml(cfg_a, resolve=True), run)
        assert (done is not None) == (state == "A")


def test_resume_reruns_when_code_or_inputs_change(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    trace = tmp_path / "jobs.csv"
    shutil.copy(outputs.input_path("data:tiresias/60_job.csv"), trace)
    cfg = compose(["workload=tiresias", "cluster=tiresias_n32g4", f"workload.path={trace}"])
    res = run_config(cfg)
    assert str(trace.resolve()) in res.inputs
    run = write_results(res, tmp_path / "run", plots=False)
    prov = outputs.read_marker(run)["provenance"]
    assert prov["package_version"] and len(prov["source_sha256"]) == 64
    assert prov["compiled"] == outputs.provenance()["compiled"]  # [] unless a compiled build is in use
    assert set(prov["inputs"]) == {str(trace.resolve()), "data:tiresias/n32g4.csv"}
    text = OmegaConf.to_yaml(cfg, resolve=True)
    assert outputs.resume_check(text, run)[0] is not None
    monkeypatch.setattr(outputs, "source_sha256", lambda: "0" * 64)   # a policy was edited
    assert "different code" in outputs.resume_check(text, run)[1]
    monkeypatch.undo()
    trace.write_text(trace.read_text().replace("\n1,", "\n1,", 1) + "\n")  # same config, new bytes
    done, why = outputs.resume_check(text, run)
    assert done is None and why == f"its input {trace.resolve()} changed"


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path, two_runs):
    run = tmp_path / "run"
    run.mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": live.pid, "host": os.uname().nodename}))
        with pytest.raises(outputs.OutputError, match=rf"{run}: another run \(pid {live.pid}"):
            write_results(two_runs[0], run, plots=False)
        assert not (run / "summary.json").exists()
    finally:
        live.kill()
        live.wait()
    (run / ".lock").write_text(json.dumps({"pid": live.pid, "host": os.uname().nodename}))  # its writer died
    (run / ".partial-killed").mkdir()
    (run / ".partial-killed" / "jobs.parquet").write_text("half")
    write_results(two_runs[0], run, plots=False)
    assert outputs.read_marker(run) is not None
    assert not (run / ".lock").exists() and not list(run.glob(".partial-*"))


def test_a_second_cli_run_into_a_held_folder_stops(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom llmos_sim.outputs import output_lock\n"
                               f"with output_lock({str(run)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run([sys.executable, "-m", "llmos_sim", "experiment=quickstart", "workload.n_jobs=5",
                            f"hydra.run.dir={run}"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0
        assert f"{run}: another run (pid {holder.pid} on {os.uname().nodename}) is writing this folder" in p.stderr
        assert not (run / "summary.json").exists() and not (run / ".hydra").exists()
    finally:
        holder.kill()
        holder.wait()


def test_hydra_files_belong_to_the_run_that_wrote_the_results(tmp_path):
    run = tmp_path / "run"
    run_cli(["experiment=quickstart", "workload.n_jobs=10", "scheduler=sjf", "output.plots=false",
             f"hydra.run.dir={run}"])
    assert "scheduler=sjf" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    stamp = (run / "complete.json").read_text()
    # a second run into the same folder that fails does not leave its overrides beside the first's data
    p = subprocess.run([sys.executable, "-m", "llmos_sim", "experiment=quickstart", "workload=tiresias",
                        "workload.path=/nonexistent.csv", f"hydra.run.dir={run}"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode != 0
    assert "scheduler=sjf" in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert (run / "complete.json").read_text() == stamp


def test_name_with_path_separators_is_refused(tmp_path):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    p = subprocess.run([sys.executable, "-m", "llmos_sim", "experiment=quickstart", "workload.n_jobs=5",
                        "name=../../../escaped"], cwd=cwd, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.returncode != 0
    assert "config key 'name'" in p.stderr and "not a valid run name" in p.stderr
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["a", "b"]
    for bad in ("..", "a/b", "x/../y", "", "a\\b"):
        with pytest.raises(outputs.OutputError, match="config key 'name'"):
            outputs.check_run_name(bad)
    assert outputs.check_run_name("train_hetero-2.1") == "train_hetero-2.1"


def _unprivileged() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    # the unprivileged user must be able to run this interpreter with its packages (a virtual
    # environment inside a root-only temporary folder is not readable to it)
    ok = subprocess.run([*prefix, sys.executable, "-c", "import hydra, llmos_sim"], cwd=REPO, capture_output=True,
                        timeout=60)
    return prefix if ok.returncode == 0 else None


def test_resume_into_a_read_only_folder_skips(two_runs):
    prefix = _unprivileged()
    if prefix is None:
        pytest.skip("running as root without setpriv (or with packages an unprivileged user cannot read): "
                    "cannot make a folder read-only")
    top = Path(tempfile.mkdtemp(prefix="llmos_ro_"))
    try:
        run = top / "run"
        args = ["experiment=quickstart", "workload.n_jobs=10", "output.plots=false", f"hydra.run.dir={run}"]
        run_cli(args)
        for p in [top, *top.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        env = dict(os.environ, HOME=str(top), MPLCONFIGDIR=tempfile.gettempdir(), PYTHONDONTWRITEBYTECODE="1")
        p = subprocess.run([*prefix, sys.executable, "-m", "llmos_sim", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=120, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        assert "skipped" in p.stdout
    finally:
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)
