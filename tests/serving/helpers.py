"""Build serving configs for tests without the lead's primary config."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

IDEAL = {"_target_": "llmos_sim.policies.memory.IdealPool", "_partial_": True}
ONE_SECOND = {"_target_": "llmos_sim.serving.cost.LinearCost", "_partial_": True, "base_s": 1.0}


def make_cfg(rows=None, batching: str = "chunked_prefill", batching_over: dict | None = None, serving: dict | None = None,
             workload: dict | None = None, model: str = "tiny", gpu: str = "h100", memory: dict | None = None,
             router: str = "round_robin", cost: dict | None = ONE_SECOND):
    """A composed-like serving config: option files from configs/, overrides merged on top."""
    b = OmegaConf.load(CONFIGS / "batching" / f"{batching}.yaml")
    if batching_over:
        b = OmegaConf.merge(b, batching_over)
    s = OmegaConf.load(CONFIGS / "serving" / "default.yaml")
    if serving:
        s = OmegaConf.merge(s, serving)
    return OmegaConf.create({
        "mode": "serving",
        "workload": workload or {"_target_": "llmos_sim.workload.requests.ExplicitRequests", "rows": rows or []},
        "batching": b,
        "router": OmegaConf.load(CONFIGS / "router" / f"{router}.yaml"),
        "model": OmegaConf.load(CONFIGS / "model" / f"{model}.yaml"),
        "gpu": OmegaConf.load(CONFIGS / "gpu" / f"{gpu}.yaml"),
        "memory": memory or IDEAL,
        "serving": s,
        "cost": cost if cost is not None else OmegaConf.load(CONFIGS / "cost" / "roofline.yaml"),
    })


def req_events(log, kinds=("req_schedule", "req_first_token", "req_finish", "req_preempt", "req_fail")):
    """``(time_s, kind, request)`` of request events (arrivals left out), in log order."""
    return [(t, k, s) for t, k, s, _ in log if k in kinds]


def batches(log):
    """``(time_s, n_prefill, n_decode, n_seqs, duration)`` of BATCH records."""
    return [(t, d[0], d[1], d[2], d[3]) for t, k, s, d in log if k == "batch"]
