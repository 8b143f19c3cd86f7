"""Trace adapters on the shipped files (counts, totals) and on malformed copies (file + line)."""
from __future__ import annotations

import numpy as np
import pytest

from llmos_sim.hardware import alibaba_cluster, tiresias_cluster
from llmos_sim.workload import AlibabaTrace, PhillyTrace, PolluxWorkload, TiresiasTrace, TraceError
from llmos_sim.workload.pollux import GPU_HOURS

RNG = np.random.default_rng(0)


def test_philly_per_virtual_cluster() -> None:
    full = PhillyTrace().frame()
    assert len(full) == 82247
    counts = full["cluster"].value_counts()
    vc = counts.index[0]
    jobs = PhillyTrace(clusters=[vc]).jobs(RNG)
    assert len(jobs) == counts.iloc[0]
    assert {j.tenant for j in jobs} == {vc}
    assert jobs[0].arrival_s == 0.0 and all(a.arrival_s <= b.arrival_s for a, b in zip(jobs, jobs[1:]))
    sub = full[full["cluster"] == vc]
    assert sum(j.gpus for j in jobs) == int(sub["num_gpus"].sum())
    with pytest.raises(TraceError, match="no jobs in clusters"):
        PhillyTrace(clusters=["nope"]).frame()


def test_tiresias_trace_and_cluster_spec() -> None:
    jobs = TiresiasTrace().jobs(RNG)
    assert len(jobs) == 60 and sum(j.gpus for j in jobs) == 170
    assert jobs[0].name == "vgg19-0" and jobs[0].work_flops == 164 * 1 * 21.2e12
    assert TiresiasTrace(walltime_factor=2.0).jobs(RNG)[1].duration_hint_s == 2 * 147
    cl = tiresias_cluster()
    assert cl.n_devices == 128 and len(cl.nodes) == 32 and {n.cpus for n in cl.nodes} == {40}
    assert {d.spec.name for d in cl.devices} == {"P100"}


def test_pollux_workloads_mapping() -> None:
    for k in range(1, 9):
        jobs = PolluxWorkload(path=f"data:pollux/workloads/workload-{k}.csv").jobs(RNG)
        assert len(jobs) == 160
    jobs = PolluxWorkload().jobs(RNG)
    assert sum(j.gpus for j in jobs) == 1092
    j = next(j for j in jobs if j.name.startswith("imagenet"))
    assert j.work_flops == GPU_HOURS["imagenet"] * 3600 * 125e12 and j.tenant == "imagenet"
    assert all(j.min_gpus == 1 for j in jobs if j.gpus > 1)
    assert all(j.min_gpus is None for j in PolluxWorkload(elastic=False).jobs(RNG))


def test_alibaba_pods_and_nodes() -> None:
    jobs = AlibabaTrace().jobs(RNG)
    # 8,152 pods − 1,088 CPU-only − 861 never scheduled GPU pods
    assert len(jobs) == 6203
    assert sum(j.gpus for j in jobs) == 6571
    frac = [j for j in jobs if j.gpu_milli < 1000]
    assert frac and all(j.gpus == 1 for j in frac)
    assert all(j.demand["cpu"] > 0 for j in jobs)
    cl = alibaba_cluster()
    assert cl.n_devices == 6212 and len(cl.nodes) == 1213
    types = {}
    for d in cl.devices:
        types[d.spec.name] = types.get(d.spec.name, 0) + 1
    assert types == {"A10": 2, "G2": 4392, "G3": 312, "P100": 265, "T4": 842, "V100M16": 195, "V100M32": 204}
    assert alibaba_cluster(models=["T4"]).n_devices == 842


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_malformed_tiresias(tmp_path) -> None:
    p = _write(tmp_path, "t.csv", "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n"
               "0,1,0,5,vgg,10,0\n1,x,3,5,vgg,10,3\n")
    with pytest.raises(TraceError, match=rf"{p}: line 3: column 'num_gpu'"):
        TiresiasTrace(path=str(p)).jobs(RNG)
    p = _write(tmp_path, "t2.csv", "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n"
               "0,1,0,5,vgg,10,0\n1,0,3,5,vgg,10,3\n")
    with pytest.raises(TraceError, match=r"t2.csv: line 3: column 'num_gpu': must be >= 1"):
        TiresiasTrace(path=str(p)).jobs(RNG)
    p = _write(tmp_path, "spec.csv", "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n1,0,4,8,64\n")
    with pytest.raises(TraceError, match=r"spec.csv: line 2: column 'num_node_p_switch'"):
        tiresias_cluster(str(p))


def test_malformed_pollux(tmp_path) -> None:
    p = _write(tmp_path, "w.csv", "name,time,application,num_replicas,batch_size\n"
               "a-0,1,cifar10,2,64\nb-1,2,gpt5,1,8\n")
    with pytest.raises(TraceError, match=r"w.csv: line 3: column 'application': unknown application 'gpt5'"):
        PolluxWorkload(path=str(p)).jobs(RNG)
    p = _write(tmp_path, "w2.csv", "name,time,application\na-0,1,cifar10\n")
    with pytest.raises(TraceError, match=r"w2.csv: line 1: missing column"):
        PolluxWorkload(path=str(p)).jobs(RNG)


def test_malformed_alibaba(tmp_path) -> None:
    head = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
    p = _write(tmp_path, "pods.csv", head + "p0,1000,10,1,500,,LS,Running,0,10,0\np1,1000,10,1,1500,,LS,Running,0,10,0\n")
    with pytest.raises(TraceError, match=r"pods.csv: line 3: column 'gpu_milli'"):
        AlibabaTrace(path=str(p)).jobs(RNG)
    p = _write(tmp_path, "pods2.csv", head + "p0,1000,10,1,500,,LS,Running,0,10,zz\n")
    with pytest.raises(TraceError, match=r"pods2.csv: line 2: column 'scheduled_time'"):
        AlibabaTrace(path=str(p)).jobs(RNG)
    p = _write(tmp_path, "pods3.csv", head + "p0,1000,10,1,500,T4,LS,Running,0,10,4\np1,1000,10,2,1000,,BE,Pending,1,9,\n")
    jobs = AlibabaTrace(path=str(p)).jobs(RNG)
    assert len(jobs) == 1 and jobs[0].device_type == "T4" and jobs[0].work_flops == 6 * 0.5 * 65e12
    assert len(AlibabaTrace(path=str(p), pending_runtime_s=5.0).jobs(RNG)) == 2
    n = _write(tmp_path, "nodes.csv", "sn,cpu_milli,memory_mib,gpu,model\nn0,1000,10,2,T4\nn1,1000,10,0,T4\n")
    with pytest.raises(TraceError, match=r"nodes.csv: line 3: column 'gpu'"):
        alibaba_cluster(str(n))
