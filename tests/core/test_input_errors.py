"""Bad input ends in one named error (the config key, or file:line), never a silent run or a
raw traceback: the repros found by feeding the simulator malformed configs and trace files."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmos_sim.memtrace.snapshot import read_snapshot
from llmos_sim.memtrace.trace import TraceFormatError, read_csv
from llmos_sim.run import compose, run_config
from llmos_sim.validate import ConfigError, InputError, check_config, count, int_seed
from llmos_sim.workload import AlibabaTrace, PhillyTrace, TiresiasTrace, TraceError
from llmos_sim.workload.alibaba import read_nodes
from llmos_sim.workload.requests import AzureLLMTrace, SyntheticRequests, WorkloadError
from llmos_sim.workload.tiresias import read_cluster_spec

RNG = np.random.default_rng(0)
TIRESIAS_HEAD = "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n"


def _config_error(overrides, key):
    """``overrides`` on the quickstart fail the config check naming ``key``."""
    with pytest.raises(ConfigError) as e:
        check_config(compose(["experiment=quickstart", *overrides]))
    assert e.value.key == key, str(e.value)
    return str(e.value)


# -- invalid numbers that used to run silently ---------------------------------------------
@pytest.mark.parametrize("overrides, key", [
    (["workload=pollux", "workload.preprocess_s=-5"], "workload.preprocess_s"),
    (["workload=tiresias", "workload.output_s=-1"], "workload.output_s"),
    (["engine.preempt_overhead_s=-10"], "engine.preempt_overhead_s"),
    (["engine.resize_overhead_s=nan"], "engine.resize_overhead_s"),
    (["cluster=tiny", "cluster.groups.0.device.flops=nan"], "cluster.groups[0].device.flops"),
    (["serving.gpu_memory_utilization=3"], "serving.gpu_memory_utilization"),
    (["workload=philly", "workload.max_jobs=-1"], "workload.max_jobs"),
    (["seed=9223372036854775808"], "seed"),
    (["workload.n_jobs=9223372036854775808"], "workload.n_jobs"),
    (["seed=1.5"], "seed"),
    (["workload.arrival_rate_per_s=nan"], "workload.arrival_rate_per_s"),
    (["workload.duration_median_s=inf"], "workload.duration_median_s"),
])
def test_invalid_numbers_are_named(overrides, key):
    _config_error(overrides, key)


def test_max_requests_minus_one_is_refused_not_dropping_the_last():
    with pytest.raises(ConfigError, match="workload.max_requests"):
        check_config(compose(["experiment=serving_quick", "workload.max_requests=-1"]))
    with pytest.raises(ConfigError, match="max_requests"):
        AzureLLMTrace(max_requests=-1)


def test_value_helpers_refuse_truncation_and_wrapping():
    assert count("k", 3.0) == 3
    for bad in (1.5, True, "3", 2**63, float("nan")):
        with pytest.raises(ConfigError):
            count("k", bad)
    assert int_seed("7") == 7
    for bad in ("abc", -1, 1.5, 2**63):
        with pytest.raises(ConfigError, match="'seed'"):
            int_seed(bad)


def test_negative_cpu_and_memory_in_trace_files(tmp_path):
    spec = tmp_path / "spec.csv"
    spec.write_text("num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,1,1,-40,256\n")
    with pytest.raises(TraceError, match=r"line 2: column 'num_cpu_p_node': must be >= 0"):
        read_cluster_spec(spec)
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn1,96000,-1,8,T4\n")
    with pytest.raises(TraceError, match=r"line 2: column 'memory_mib'"):
        read_nodes(nodes)
    pods = tmp_path / "pods.csv"
    pods.write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
                    "deletion_time,scheduled_time\np1,-4000,100,1,1000,,LS,Running,0,10,1\n")
    with pytest.raises(TraceError, match=r"line 2: column 'cpu_milli': must be >= 0"):
        AlibabaTrace(pods).jobs(RNG)


def test_inf_duration_in_a_trace_is_named_not_an_attribute_error(tmp_path):
    p = tmp_path / "jobs.csv"
    p.write_text(TIRESIAS_HEAD + "1,1,0,10,resnet,inf,0\n")
    with pytest.raises(TraceError, match=r"jobs.csv: line 2: column 'duration': cannot read 'inf'"):
        TiresiasTrace(p).jobs(RNG)


def test_huge_integers_in_a_trace_do_not_wrap(tmp_path):
    p = tmp_path / "jobs.csv"
    p.write_text(TIRESIAS_HEAD + "1,99999999999999999999999,0,10,resnet,5,0\n")
    with pytest.raises(TraceError, match=r"line 2: column 'num_gpu'.*2\*\*53"):
        TiresiasTrace(p).jobs(RNG)


# -- raw tracebacks that are now named errors ----------------------------------------------
def test_empty_csv_and_header_only(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(TraceError, match=r"empty.csv:1: empty file"):
        TiresiasTrace(p).jobs(RNG)
    p.write_text(TIRESIAS_HEAD)
    with pytest.raises(TraceError, match="no data rows"):
        TiresiasTrace(p).jobs(RNG)
    with pytest.raises(WorkloadError, match=r"empty.csv:1: empty file"):
        p.write_text("")
        AzureLLMTrace(path=str(p)).requests()


def test_invalid_utf8_names_line_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_bytes(TIRESIAS_HEAD.encode() + b"1,1,0,10,res\xffnet,5,0\n")
    with pytest.raises(TraceError, match=r"bad.csv:2:13: not UTF-8"):
        TiresiasTrace(p).jobs(RNG)
    m = tmp_path / "m.csv"
    m.write_bytes(b"time_s,op,id,nbytes\n0,al\xfeloc,1,5\n")
    with pytest.raises(TraceFormatError, match=r"m.csv:2:5: not UTF-8"):
        read_csv(m)


def test_short_and_long_rows_name_the_line(tmp_path):
    p = tmp_path / "j.csv"
    p.write_text(TIRESIAS_HEAD + "1,1,0,10,resnet,5,0\n2,1,0\n")
    with pytest.raises(TraceError, match=r"line 3: 3 fields, the header has 7"):
        TiresiasTrace(p).jobs(RNG)
    p.write_text(TIRESIAS_HEAD + "1,1,0,10,resnet,5,0,9\n")  # one more field: not read as an index
    with pytest.raises(TraceError, match=r"line 2"):
        TiresiasTrace(p).jobs(RNG)


def test_memory_trace_rejects_inf_time_and_huge_ids(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("time_s,op,id,nbytes\n0,alloc,1,5\ninf,free,1,5\n")
    with pytest.raises(TraceFormatError, match=r"m.csv:3: time_s must be finite"):
        read_csv(p)
    p.write_text("time_s,op,id,nbytes\n0,alloc,99999999999999999999999,5\n")
    with pytest.raises(TraceFormatError, match=r"m.csv:2: id must be below 2\*\*63"):
        read_csv(p)


@pytest.mark.parametrize("entry, msg", [
    ({"action": "alloc", "addr": "0x10", "size": 5}, r"device_traces\[0\]\[0\]: 'addr' must be an integer"),
    ({"action": "alloc", "size": 5}, r"device_traces\[0\]\[0\]: missing 'addr'"),
    ({"action": "alloc", "addr": 16, "size": -5}, r"'size' must be an integer"),
    ({"action": "alloc", "addr": 16, "size": 5, "time_us": "later"}, r"'time_us' must be a finite number"),
    ("alloc", r"device_traces\[0\]\[0\]: expected an object"),
])
def test_malformed_snapshot_entries_are_named(entry, msg):
    with pytest.raises(TraceFormatError, match=msg):
        read_snapshot({"device_traces": [[entry]], "segments": []})


def test_malformed_snapshot_segment_blocks_are_named():
    snap = {"device_traces": [[]], "segments": [{"blocks": [{"state": "active_allocated", "address": 1}]}]}
    with pytest.raises(TraceFormatError, match=r"segments\[0\].blocks\[0\]: missing 'size'"):
        read_snapshot(snap)


@pytest.mark.parametrize("overrides, key", [
    (["serving.replicas=0"], "serving.replicas"),
    (["workload.tenants=[]"], "workload.tenants"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["engine.on_memory_full=explode"], "engine.on_memory_full"),
    (["output.plots=sometimes"], "output.plots"),
    (["workload.n_jobs=ten"], "workload.n_jobs"),
    (["+engine.pass_per_evnt=true"], "engine.pass_per_evnt"),   # a typo in the engine's keys
    (["engine.pass_per_event=3"], "engine.pass_per_event"),
])
def test_bad_keys_are_named_before_anything_runs(overrides, key):
    with pytest.raises(ConfigError) as e:
        run_config(compose(["experiment=quickstart", *overrides]))
    assert e.value.key == key


def test_a_component_without_target_is_named():
    cfg = compose(["experiment=quickstart"])
    cfg.workload = {"n_jobs": 5}
    with pytest.raises(ConfigError, match=r"config key 'workload': has no _target_"):
        check_config(cfg)


def test_a_missing_optional_package_names_its_extra(monkeypatch):
    cfg = compose(["experiment=quickstart"])
    cfg.backend = {"_target_": "llmos_sim.backends.no_such_backend.Backend"}
    with pytest.raises(ConfigError, match="cannot be imported"):
        check_config(cfg)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    import llmos_sim.backends

    for name in [m for m in sys.modules if m.startswith("llmos_sim.backends.torch_gpu")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(llmos_sim.backends, "torch_gpu", raising=False)
    with pytest.raises(ConfigError, match=r"install the torch extra: pip install llmos_sim\[torch\]"):
        check_config(compose(["experiment=quickstart", "backend=torch"]))


def test_leaked_max_requests_is_gone():
    """The serving experiment caps requests; every request workload takes the cap."""
    cfg = compose(["experiment=serving_quick", "workload=requests_synthetic"])
    check_config(cfg)
    assert len(SyntheticRequests(n=10, max_requests=4).requests(np.random.default_rng(0))) == 4
    full = SyntheticRequests(n=10).requests(np.random.default_rng(0))
    assert SyntheticRequests(n=10, max_requests=4).requests(np.random.default_rng(0)) == full[:4]


def test_a_class_check_during_build_becomes_a_named_input_error():
    with pytest.raises(InputError, match=r"config key 'workload': SyntheticRequests: need"):
        run_config(compose(["experiment=serving_quick", "workload=requests_synthetic", "workload.prompt_min=500",
                            "workload.prompt_max=100"]))


def test_every_shipped_config_passes_the_check():
    """(Without torch the real-backend experiments fail, and say to install the extra.)"""
    configs = Path(__file__).resolve().parents[2] / "configs" / "experiment"
    has_torch = importlib.util.find_spec("torch") is not None
    for f in sorted(configs.glob("*.yaml")):
        try:
            check_config(compose([f"experiment={f.stem}"]))
        except ConfigError as e:
            if has_torch or "pip install llmos_sim[torch]" not in str(e):
                raise


# -- the command line: exit 1, one line, no traceback --------------------------------------
def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "llmos_sim", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, needle", [
    (["seed=abc"], "config key 'seed'"),
    (["experiment=serving_quick", "serving.replicas=0"], "config key 'serving.replicas'"),
    (["workload=tiresias", "workload.path=BAD"], "BAD.csv:2:13: not UTF-8"),
    (["-m", "hydra/launcher=ray_local"], "pip install llmos_sim[ray]"),
    (["--config-dir", "CONF", "workload=mine"], "config key 'workload': has no _target_"),
    (["schedulr=fifo"], "Could not override 'schedulr'"),                 # Hydra's own errors, one line too
    (["scheduler=nonexist"], "Could not find 'scheduler/nonexist' (options: drf, easy"),
    (["-m", "scheduler=fifo,nonexist"], "Could not find 'scheduler/nonexist' (options: drf, easy"),  # a sweep too
    (["-m", "scheduler=fifo,las", "seed=0,abc"], "config key 'seed': must be an integer >= 0, got 'abc' "
                                                  "(sweep point: scheduler=fifo seed=abc)"),
])
def test_cli_prints_one_line_and_exits_1(tmp_path, args, needle):
    if "workload.path=BAD" in args:
        (tmp_path / "BAD.csv").write_bytes(TIRESIAS_HEAD.encode() + b"1,1,0,10,res\xffnet,5,0\n")
        args = [a.replace("BAD", str(tmp_path / "BAD.csv")) for a in args]
    if "CONF" in args:  # a user's config group file that forgot its _target_
        (tmp_path / "conf" / "workload").mkdir(parents=True)
        (tmp_path / "conf" / "workload" / "mine.yaml").write_text("n_jobs: 5\n")
        args = [a.replace("CONF", str(tmp_path / "conf")) for a in args]
    p = _cli([*args, f"hydra.run.dir={tmp_path / 'r'}", f"hydra.sweep.dir={tmp_path / 's'}"], tmp_path)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "s").exists(), "a sweep with a bad point must not start any run"


def test_a_hydra_failure_that_composes_keeps_hydras_report(tmp_path):
    """A single run is composed by Hydra alone; a failure of Hydra's that the overrides'
    check does not name (an interpolation in Hydra's own keys) is reported by Hydra, as before."""
    p = _cli(["workload.n_jobs=5", "hydra.run.dir=${nope}"], tmp_path)
    assert p.returncode == 1
    assert "Interpolation key 'nope' not found" in p.stderr and "full_key: hydra.run.dir" in p.stderr, p.stderr
    assert not p.stderr.startswith("error: ")


def test_a_single_run_composes_only_under_hydra_and_runs_as_the_user_left_hydra(tmp_path, monkeypatch):
    """The command line's single run: no composition of its own before Hydra's (a successful
    run never calls ``compose``), and the run sees ``HYDRA_FULL_ERROR`` as the user left it
    (the command turns it on only while Hydra composes)."""
    import os

    import llmos_sim.__main__ as cli
    import llmos_sim.run as run

    seen = []

    def refuse(*args, **kwargs):
        raise AssertionError("composed outside Hydra")

    def stop(name):
        seen.append(os.environ.get(cli.FULL_ERROR))
        raise ConfigError("name", "stopped here")

    monkeypatch.setattr(run, "compose", refuse)
    monkeypatch.setattr(cli, "check_run_name", stop)
    for users in (None, "1"):
        if users is None:
            monkeypatch.delenv(cli.FULL_ERROR, raising=False)
        else:
            monkeypatch.setenv(cli.FULL_ERROR, users)
        monkeypatch.setattr(sys, "argv", ["llmos_sim", "workload.n_jobs=5", f"hydra.run.dir={tmp_path / 'r'}"])
        with pytest.raises(SystemExit) as e:
            cli.main()
        assert e.value.code == 1 and os.environ.get(cli.FULL_ERROR) == users
    assert seen == [None, "1"]
