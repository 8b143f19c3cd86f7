"""Training jobs and an LLM service on one cluster under one scheduler (mode: mixed)."""
import pytest
from omegaconf import OmegaConf, open_dict

from llmos_sim.run import compose, run_config


def _cfg(service_arrival_s=0.0, rows=((0.0, 200, 2000), (0.5, 300, 300), (1.0, 100, 400)), device="A100",
         extra=()):
    cfg = compose(["experiment=shared_cluster", "cluster=tiny", "scheduler=fifo", "output.plots=false", *extra])
    with open_dict(cfg):
        cfg.cluster.groups[0].device = device  # one node of 4 catalogue devices (the service runs on them)
        cfg.workload = OmegaConf.create({
            "_target_": "llmos_sim.workload.synthetic.SyntheticJobs", "n_jobs": 1, "arrival_rate_per_s": 1.0,
            "gpus": [4], "duration_median_s": 100.0, "duration_sigma": 0.0, "reference_flops": 1.0e13})
        cfg.services = OmegaConf.create({"chat": {
            "workload": {"_target_": "llmos_sim.workload.requests.ExplicitRequests", "rows": [list(r) for r in rows]},
            "replicas": 2, "arrival_s": service_arrival_s, "priority": 0, "mem_bytes_per_device": 0}})
    return cfg


def test_a_service_holds_its_devices_until_its_last_request_and_jobs_queue_behind_it():
    r = run_config(_cfg())
    jobs, reqs = r.tables["jobs"].set_index("job_id"), r.tables["requests"]
    svc = jobs[jobs.tenant == "service:chat"].iloc[0]
    train = jobs[jobs.tenant != "service:chat"].iloc[0]
    assert svc.start_s == 0.0 and svc.n_devices == 2
    assert svc.finish_s == pytest.approx(reqs["finish_s"].max())  # the stream's end ends the job
    assert len(reqs) == 3 and reqs["finish_s"].notna().all()
    # the 4-GPU training job arrives while the service runs and needs its devices
    assert train.arrival_s < svc.finish_s
    assert train.start_s == pytest.approx(svc.finish_s)
    assert r.summary["serving_n_finished"] == 3 and r.summary["n_completed"] == 1


def test_requests_that_arrive_before_the_service_runs_wait_for_it():
    r = run_config(_cfg(service_arrival_s=5.0))
    reqs = r.tables["requests"].sort_values("request")
    assert reqs["arrival_s"].tolist() == [0.0, 0.5, 1.0]
    assert (reqs["first_token_s"] >= 5.0).all()  # nothing is served before the service starts
    assert reqs["ttft_s"].iloc[0] >= 5.0


def test_replicas_run_on_the_device_the_cluster_granted_not_on_the_gpu_group():
    """The KV cache is sized from the granted device's memory (vLLM's rule), whatever ``gpu`` says."""
    from llmos_sim.hardware import part
    from llmos_sim.serving.specs import LLAMA31_8B

    s = compose(["experiment=shared_cluster"]).serving
    for device in ("H100", "H200"):
        r = run_config(_cfg(device=device, extra=("gpu=rtx4090",)))
        expect = int(s.gpu_memory_utilization * part(device).mem_bytes) - LLAMA31_8B.weight_bytes \
            - int(s.activation_reserve_bytes)
        assert set(r.tables["kv"]["capacity_bytes"]) == {expect}, device  # rtx4090's 24 GiB would give ~5 GB
        assert r.summary["serving_n_finished"] == 3
