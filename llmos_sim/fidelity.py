"""Predict a real vLLM run and score the prediction: ``python -m llmos_sim.fidelity RUN_DIR``.

A *run folder* holds what a vLLM benchmark harness records (the format of the two shipped
runs, ``llmos_sim/workload/data/vllm_*``):

- ``requests.jsonl``: one request a line: ``request_id, input_toks, output_toks,
  arrival_time`` (client send time, wall clock), ``queued_ts, scheduled_ts, first_token_ts,
  last_token_ts`` (engine clock, s);
- ``timeseries.csv``: the engine's samples every ``tick_seconds``: ``t, prompt_throughput,
  gen_throughput, running, waiting, kv_cache_pct``;
- ``meta.json``: ``engine_kwargs`` (``model``, ``tensor_parallel_size``,
  ``data_parallel_size``, ``enable_expert_parallel``, ``max_num_seqs``,
  ``max_num_batched_tokens``, ``dtype``), optionally ``kv_cache`` (``num_gpu_blocks``,
  ``block_size``, ``gpu_memory_utilization``, ``enable_prefix_caching``), ``hardware``
  (``device_name``, ``device_total_memory_bytes``), ``resolved_config``, ``started_at``;
- ``sim_config.json``: the hardware name (``nodes[0].instances[0].hardware``).

The command builds the deployment the run describes — the model and GPU presets named there,
``dp`` replicas of ``tp`` GPUs (expert-parallel MoE layers when asked), vLLM v1's scheduler
(chunked prefill, FCFS, recompute preemption) with the run's limits, the KV cache, prefix
caching and async scheduling — with a cost model (``--cost profiled``: the operator profile
for that GPU and model, or ``--profile``; ``--cost roofline``: the roofline's default
efficiencies, nothing fitted), replays the requests at their measured send times, and prints
one table: per-request MAPE and bias of TTFT, TPOT and e2e; their mean, p50, p90 and p99,
simulated vs measured; the running / waiting / KV-% series' errors; throughput over time. It
writes ``table.csv``, ``table.md``, ``per_request.parquet``, ``timeseries.csv``,
``summary.json`` and plots to ``--out``.

Engine settings (from ``meta.json``; where it is silent, vLLM 0.19's defaults, which the
shipped RTX 4090 run's ``resolved_config`` shows for keys its ``engine_kwargs`` did not set):
``enable_prefix_caching`` true, ``async_scheduling`` true, ``scheduler_reserve_full_isl``
true, ``block_size`` 16, ``gpu_memory_utilization`` 0.9, CUDA graphs on (``enforce_eager``
false) with the capture sizes of ``compilation_config.cudagraph_capture_sizes`` or vLLM's
default for ``max_num_seqs`` (the profiled cost model pads a batch's token-wise layers to
the next size, as vLLM does). KV blocks: ``num_gpu_blocks`` when
stated; otherwise per GPU ``gpu_memory_utilization · device memory − weights / tp −
activation reserve`` (2 GB, the serving default), divided by one block's bytes per GPU. The replay runs iteration by iteration (no fast-forwarded decode
spans: a span takes its whole KV growth at its start, so its KV-% would run ahead of vLLM's
block-by-block growth; the latencies are identical). Of
those, vLLM's block pool keeps one as its *null block* (the placeholder its block tables point
at), so the replica's cache has ``num_gpu_blocks - 1`` blocks (2,587 for the RTX 4090 run's
stated 2,588) and its KV-% is over those, as vLLM's usage is. With
``dp`` > 1 requests go to the replica with the fewest outstanding requests (vLLM's DP
load balancing counts waiting and running requests).

Measured side (as ``experiments/serving_fidelity``): the clocks are aligned by the smallest
``queued_ts − arrival_time``; start = ``arrival_time`` + that offset; TTFT = first token −
start; TPOT = (last − first token) / (output − 1); e2e = last token − start. The simulator
does not model the server's front end (HTTP, tokenisation: the rest of ``queued_ts −
start``); ``--arrival engine`` replays at ``queued_ts`` and measures from there instead.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
if not CONFIGS.is_dir():  # installed: the configs package
    import llmos_sim.configs as _c

    CONFIGS = Path(_c.__file__).resolve().parent
METRICS = ("ttft_s", "tpot_s", "e2e_s")
SERIES = ("running", "waiting", "kv_cache_pct", "prompt_throughput", "gen_throughput")
QUANTILES = (("mean", None), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
ACTIVATION_RESERVE_BYTES = 2 * 10**9
#: ``--arrival``: replay at the client's send time (TTFT and e2e include the front end: HTTP,
#: tokenisation, which is not modelled) or at the engine's enqueue time (they do not)
ARRIVAL_FIELDS = {"send": "arrival_time", "engine": "queued_ts"}


class RunFolderError(ValueError):
    """A run folder that cannot be replayed (the message names the file and key)."""


# -- reading a run folder ------------------------------------------------------------------
def _json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError as e:
        raise RunFolderError(f"{path}: no such file") from e
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e
    if not isinstance(d, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return d


def _presets(group: str) -> dict[str, Path]:
    """``name`` of every preset in ``configs/<group>/`` → its file."""
    out = {}
    for p in sorted((CONFIGS / group).glob("*.yaml")):
        name = OmegaConf.load(p).get("name")
        if name:
            out[str(name)] = p
    return out


def _norm(s: str) -> str:
    return "".join(ch for ch in s.upper() if ch.isalnum())


def model_preset(model_id: str) -> Path:
    """The model preset for a model id (``Qwen/Qwen3-30B-A3B-Instruct-2507`` → the preset
    named ``Qwen3-30B-A3B``: the longest preset name the id's last part starts with)."""
    base = _norm(model_id.rsplit("/", 1)[-1])
    best = [(len(_norm(n)), p) for n, p in _presets("model").items() if base.startswith(_norm(n))]
    if not best:
        raise RunFolderError(f"meta.json: engine_kwargs.model {model_id!r}: no model preset in configs/model "
                             f"(presets: {', '.join(_presets('model'))})")
    return max(best)[1]


def gpu_preset(*names: str) -> Path:
    """The GPU preset whose name (letters and digits only) occurs in one of ``names``."""
    presets = _presets("gpu")
    for s in names:
        if not s:
            continue
        hits = [(len(_norm(n)), p) for n, p in presets.items() if _norm(n) in _norm(s)]
        if hits:
            return max(hits)[1]
    raise RunFolderError(f"no GPU preset in configs/gpu matches {[n for n in names if n]} "
                         f"(presets: {', '.join(presets)})")


@dataclass
class RunFolder:
    """A run folder's contents and the deployment it describes."""

    path: Path
    meta: dict
    sim_config: dict
    engine: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "RunFolder":
        p = Path(path)
        if not p.is_dir():
            raise RunFolderError(f"{p}: not a folder")
        for f in ("requests.jsonl", "meta.json"):
            if not (p / f).is_file():
                raise RunFolderError(f"{p / f}: no such file")
        meta = _json(p / "meta.json")
        simc = _json(p / "sim_config.json") if (p / "sim_config.json").is_file() else {}
        ek = meta.get("engine_kwargs")
        if not isinstance(ek, dict) or "model" not in ek:
            raise RunFolderError(f"{p / 'meta.json'}: needs engine_kwargs with at least 'model'")
        return cls(p, meta, simc, ek)

    def setting(self, key: str, default: Any, *paths: tuple[str, ...]) -> Any:
        """``engine_kwargs[key]``, else the first of ``paths`` (key paths in meta.json) that
        is set, else ``default``."""
        v = self.engine.get(key)
        if v is not None:
            return v
        for path in paths:
            d: Any = self.meta
            for k in path:
                d = d.get(k) if isinstance(d, dict) else None
            if d is not None:
                return d
        return default

    def _int(self, key: str, default: int, *paths) -> int:
        v = self.setting(key, default, *paths)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise RunFolderError(f"{self.path / 'meta.json'}: {key} must be an integer >= 1, got {v!r}")
        return v

    @property
    def hardware_names(self) -> tuple[str, ...]:
        inst = ""
        try:
            inst = self.sim_config["nodes"][0]["instances"][0].get("hardware", "")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        return (str(inst), str((self.meta.get("hardware") or {}).get("device_name", "")))

    def deployment(self) -> dict:
        """The deployment's settings (see the module docstring for the defaults)."""
        sched = ("resolved_config", "scheduler_config")
        cache = ("resolved_config", "cache_config")
        return {
            "model_id": str(self.engine["model"]),
            "tp": self._int("tensor_parallel_size", 1),
            "dp": self._int("data_parallel_size", 1),
            "expert_parallel": bool(self.setting("enable_expert_parallel", False)),
            "max_num_seqs": self._int("max_num_seqs", 256, sched + ("max_num_seqs",)),
            "max_num_batched_tokens": self._int("max_num_batched_tokens", 2048, sched + ("max_num_batched_tokens",)),
            "block_size": self._int("block_size", 16, ("kv_cache", "block_size"), cache + ("block_size",)),
            "num_gpu_blocks": self.setting("num_gpu_blocks", None, ("kv_cache", "num_gpu_blocks"),
                                           cache + ("num_gpu_blocks",)),
            "gpu_memory_utilization": float(self.setting("gpu_memory_utilization", 0.9,
                                                         ("kv_cache", "gpu_memory_utilization"),
                                                         cache + ("gpu_memory_utilization",))),
            "prefix_caching": bool(self.setting("enable_prefix_caching", True, ("kv_cache", "enable_prefix_caching"),
                                                cache + ("enable_prefix_caching",))),
            "async_scheduling": bool(self.setting("async_scheduling", True, sched + ("async_scheduling",))),
            "reserve_full_prompt": bool(self.setting("scheduler_reserve_full_isl", True,
                                                     sched + ("scheduler_reserve_full_isl",))),
            "device_memory_bytes": (self.meta.get("hardware") or {}).get("device_total_memory_bytes"),
            "dtype": str(self.setting("dtype", "bfloat16")),
            "cuda_graph_sizes": self.cuda_graph_sizes(),
        }

    def cuda_graph_sizes(self) -> list[int] | None:
        """The engine's CUDA-graph capture sizes, or None when it ran eagerly
        (``enforce_eager``, or ``cudagraph_mode`` none). Where ``meta.json`` does not state
        them, vLLM 0.19's default for the run's ``max_num_seqs`` (what the RTX 4090 run's
        ``resolved_config`` shows for its 256): 1, 2, 4, then every 8 up to 256, then every
        16, up to ``min(2 · max_num_seqs, 512)``."""
        comp = ("resolved_config", "compilation_config")
        if self.setting("enforce_eager", False, ("resolved_config", "model_config", "enforce_eager")):
            return None
        mode = self.setting("cudagraph_mode", None, comp + ("cudagraph_mode",))
        if mode is not None and (mode in (0, "NONE", "none") or (isinstance(mode, list) and not any(mode))):
            return None
        sizes = self.setting("cudagraph_capture_sizes", None, comp + ("cudagraph_capture_sizes",))
        if sizes is None:
            top = min(2 * self._int("max_num_seqs", 256, ("resolved_config", "scheduler_config", "max_num_seqs")), 512)
            sizes = [s for s in [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)] if s <= top]
        if not isinstance(sizes, list) or not sizes or not all(isinstance(x, int) and x >= 1 for x in sizes):
            raise RunFolderError(f"{self.path / 'meta.json'}: cudagraph_capture_sizes must be a list of integers "
                                 f">= 1, got {sizes!r}")
        return sorted(sizes)


def kv_blocks_from_memory(model, gpu, tp: int, util: float, block_tokens: int, device_bytes: int | None = None,
                          activation_bytes: int = ACTIVATION_RESERVE_BYTES) -> int:
    """KV blocks of one replica by vLLM's rule, per GPU: ``util · memory − weights / tp −
    activations``, over one block's bytes on one GPU (a block holds ``1/tp`` of every layer's
    KV heads there)."""
    mem = int(device_bytes) if device_bytes else gpu.mem_bytes
    free = util * mem - model.weight_bytes / tp - activation_bytes
    per_block = block_tokens * model.kv_bytes_per_token / tp
    if free <= 0:
        raise RunFolderError(f"{model.name} on {tp}x {gpu.name}: no memory left for the KV cache")
    return int(free // per_block)


def build_config(run: RunFolder, cost: str = "profiled", profile: str | None = None,
                 dep: dict | None = None, arrival: str = "send") -> tuple[Any, dict]:
    """The composed serving config replaying ``run`` (requests arriving at their ``send``
    time, or at their ``engine`` enqueue time), and facts about the deployment."""
    from hydra.utils import instantiate

    dep = dict(run.deployment() if dep is None else dep)
    model_cfg = OmegaConf.load(model_preset(dep["model_id"]))
    gpu_cfg = OmegaConf.load(gpu_preset(*run.hardware_names))
    model, gpu = instantiate(model_cfg), instantiate(gpu_cfg)
    if dep["dtype"] not in ("bfloat16", "bf16", "float16", "half", "auto"):
        raise RunFolderError(f"{run.path / 'meta.json'}: dtype {dep['dtype']!r}: only 16-bit weights are modelled")
    computed = kv_blocks_from_memory(model, gpu, dep["tp"], dep["gpu_memory_utilization"], dep["block_size"],
                                     dep["device_memory_bytes"])
    stated = dep["num_gpu_blocks"]
    kv_blocks = int(stated) if stated else computed
    # vLLM's block pool takes one block as its null block (a placeholder in block tables) at
    # start-up: ``num_gpu_blocks - 1`` are ever allocated, and its KV usage is over those
    dep.update(model=model.name, gpu=gpu.name, kv_blocks_computed=computed, kv_blocks=kv_blocks,
               kv_blocks_usable=max(kv_blocks - 1, 0))
    serving = OmegaConf.load(CONFIGS / "serving" / "default.yaml")
    serving.merge_with({"replicas": dep["dp"], "tp": dep["tp"], "num_kv_blocks": dep["kv_blocks_usable"],
                        "block_tokens": dep["block_size"], "kv_mode": "grow", "prefix_caching": dep["prefix_caching"],
                        "async_scheduling": dep["async_scheduling"], "slo_ttft_s": math.inf, "slo_tpot_s": math.inf,
                        # iteration by iteration: a fast-forwarded decode span takes its whole KV growth
                        # when it starts, so its KV-% sample would run ahead of vLLM's, which grows a
                        # block at a time (the latencies are the same either way)
                        "fast_forward": False})
    if cost == "profiled":
        c = OmegaConf.load(CONFIGS / "cost" / "profiled.yaml")
        c.merge_with({"profile": profile or "auto", "dp": dep["dp"], "expert_parallel": dep["expert_parallel"],
                      "cuda_graph_sizes": dep["cuda_graph_sizes"]})
    elif cost == "roofline":
        c = OmegaConf.load(CONFIGS / "cost" / "roofline.yaml")
    else:
        raise RunFolderError(f"--cost must be profiled or roofline, got {cost!r}")
    batching = OmegaConf.load(CONFIGS / "batching" / "chunked_prefill.yaml")
    batching.merge_with({"max_num_seqs": dep["max_num_seqs"], "max_num_batched_tokens": dep["max_num_batched_tokens"],
                         "preemption": "recompute", "reserve_full_prompt": dep["reserve_full_prompt"]})
    cfg = OmegaConf.create({
        "mode": "serving",
        "workload": {"_target_": "llmos_sim.workload.requests.VllmBenchmarkRequests",
                     "path": str((run.path / "requests.jsonl").resolve()), "arrival_field": ARRIVAL_FIELDS[arrival]},
        "batching": batching,
        "router": OmegaConf.load(CONFIGS / "router" / ("least_outstanding.yaml" if dep["dp"] > 1 else "round_robin.yaml")),
        "memory": OmegaConf.load(CONFIGS / "memory" / "paged.yaml"),
        "model": model_cfg, "gpu": gpu_cfg, "serving": serving, "cost": c,
    })
    dep["cost"] = cost
    return cfg, dep


# -- the measured side ---------------------------------------------------------------------
def measured_requests(run_dir: Path, arrival: str = "send") -> pd.DataFrame:
    """Per-request measured TTFT, TPOT, e2e (s), in the simulator's request order (by
    arrival, stable), from the client's start aligned as documented (``send``) or from the
    engine's enqueue time (``engine``: the front end's time left out)."""
    from llmos_sim.workload.requests import VllmBenchmarkRequests

    m = VllmBenchmarkRequests(path=str(run_dir / "requests.jsonl")).measured()
    for k in ("queued_ts", "first_token_ts", "last_token_ts"):
        if k not in m.columns:
            raise RunFolderError(f"{run_dir / 'requests.jsonl'}: missing key {k!r}")
    offset = float((m["queued_ts"] - m["arrival_time"]).min())
    start = m["arrival_time"] + offset if arrival == "send" else m["queued_ts"]
    out = pd.DataFrame({
        "request_id": m["request_id"], "prompt_tokens": m["input_toks"], "output_tokens": m["output_toks"],
        "arrival_s": start - start.min(),
        "ttft_s": m["first_token_ts"] - start,
        "tpot_s": ((m["last_token_ts"] - m["first_token_ts"]) / (m["output_toks"] - 1)).where(m["output_toks"] > 1),
        "e2e_s": m["last_token_ts"] - start,
    })
    out = out.iloc[np.argsort(out["arrival_s"].to_numpy(), kind="stable")].reset_index(drop=True)
    out.index.name = "request"
    return out


def measured_series(run: RunFolder) -> pd.DataFrame | None:
    """``timeseries.csv`` with ``sim_t``, its tick on the simulator's clock (0 = the first
    request's send time; ticks count from ``started_at``), or None when absent."""
    path = run.path / "timeseries.csv"
    if not path.is_file():
        return None
    ts = pd.read_csv(path)
    need = ("t",) + SERIES
    missing = [c for c in need if c not in ts.columns]
    if missing:
        raise RunFolderError(f"{path}: missing column(s) {missing}")
    lag = 0.0
    started = run.meta.get("started_at")
    if started:
        from llmos_sim.workload.requests import VllmBenchmarkRequests

        t0 = datetime.datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp()
        lag = float(VllmBenchmarkRequests(path=str(run.path / "requests.jsonl")).measured()["arrival_time"].min()) - t0
    return ts.assign(sim_t=ts["t"] - lag)


# -- the simulated side --------------------------------------------------------------------
def sim_series(res, ticks: np.ndarray, window_s: float = 1.0) -> pd.DataFrame:
    """The engine's samples from a simulation at ``ticks`` (s), as vLLM reports them, summed
    over replicas (KV %: their mean): ``running`` (sequences in the iteration in progress),
    ``waiting`` (arrived, not finished, not running), ``kv_cache_pct`` (100 · held blocks /
    blocks, at the last iteration start), ``prompt_throughput`` (prompt tokens of the
    requests whose first token came in the window before the tick, per second) and
    ``gen_throughput`` (tokens emitted in that window per second; a fast-forwarded span's
    tokens spread evenly over it)."""
    b, k, rq = res.tables["batches"], res.tables["kv"], res.tables["requests"]
    reps = sorted(set(b["replica"].astype(int))) or [0]
    running = np.zeros(len(ticks))
    kv = np.zeros(len(ticks))
    total = float(res.extra["kv_blocks_per_replica"])
    for r in reps:
        br = b[b["replica"] == r]
        start = br["time_s"].to_numpy(float)
        end = start + br["duration_s"].to_numpy(float)
        i = np.searchsorted(start, ticks, side="right") - 1
        ic = np.clip(i, 0, None)
        if len(br):
            running += np.where((i >= 0) & (ticks < end[ic]), br["n_seqs"].to_numpy()[ic], 0)
        kr = k[k["replica"] == r]
        if len(kr):
            j = np.clip(np.searchsorted(kr["time_s"].to_numpy(float), ticks, side="right") - 1, 0, None)
            x = 100.0 * (1.0 - kr["free_blocks"].to_numpy(float)[j] / total)
            kv += np.where(ticks < kr["time_s"].min(), 0.0, x)
    kv /= len(reps)
    arrived = np.searchsorted(np.sort(rq["arrival_s"].to_numpy(float)), ticks, side="right")
    finished = np.searchsorted(np.sort(rq["finish_s"].dropna().to_numpy(float)), ticks, side="right")
    kv = np.where(finished >= len(rq), 0.0, kv)
    ft, pt = rq["first_token_s"].to_numpy(float), rq["prompt_tokens"].to_numpy(float)
    start = b["time_s"].to_numpy(float)
    end = start + b["duration_s"].to_numpy(float)
    span, n_dec = b["n_iters"].to_numpy() > 1, b["n_decode_tokens"].to_numpy(float)
    dur = np.maximum(end - start, 1e-12)

    def decoded_by(x: float) -> float:
        frac = np.where(span, np.clip((x - start) / dur, 0.0, 1.0), (x >= end).astype(float))
        return float((n_dec * frac).sum())

    prompt, gen = [], []
    for t in ticks:
        first = (ft > t - window_s) & (ft <= t)
        prompt.append(pt[first].sum() / window_s)
        gen.append((decoded_by(t) - decoded_by(t - window_s) + first.sum()) / window_s)
    return pd.DataFrame({"running": running, "waiting": arrived - finished - running, "kv_cache_pct": kv,
                         "prompt_throughput": prompt, "gen_throughput": gen})


# -- scoring --------------------------------------------------------------------------------
def per_request(sim_req: pd.DataFrame, meas: pd.DataFrame) -> pd.DataFrame:
    """Measured, simulated and relative error per request and metric."""
    if len(sim_req) != len(meas):
        raise RunFolderError(f"simulated {len(sim_req)} requests, measured {len(meas)}")
    s = sim_req.set_index("request")
    t = meas.copy()
    for k in METRICS:
        t[f"sim_{k}"] = s[k].reindex(t.index).to_numpy(float)
        t[f"err_{k}"] = (t[f"sim_{k}"] - t[k]) / t[k]
    return t


def _stat(x: np.ndarray, q) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if q is None else float(np.quantile(x, q))


def score(t: pd.DataFrame, ts: pd.DataFrame | None) -> tuple[pd.DataFrame, dict]:
    """The one table (rows: quantity; columns: measured, simulated, error, unit) and a summary."""
    rows = []
    summ: dict = {}
    for k in METRICS:
        name = k[:-2].upper()
        e = t[f"err_{k}"].to_numpy(float)
        e = e[np.isfinite(e)]
        rows.append((f"{name} per-request MAPE", np.nan, np.nan, float(np.abs(e).mean()) * 100, "%"))
        rows.append((f"{name} per-request bias", np.nan, np.nan, float(e.mean()) * 100, "%"))
        summ[f"{k}_mape"], summ[f"{k}_bias"] = float(np.abs(e).mean()), float(e.mean())
        unit, f = ("ms", 1000.0) if k == "tpot_s" else ("s", 1.0)
        for label, q in QUANTILES:
            m, s_ = _stat(t[k].to_numpy(float), q), _stat(t[f"sim_{k}"].to_numpy(float), q)
            rows.append((f"{name} {label}", m * f, s_ * f, (s_ - m) / m * 100, unit))
            summ[f"{k}_{label}_meas"], summ[f"{k}_{label}_sim"] = m, s_
    makespan_m = float((t["arrival_s"] + t["e2e_s"]).max())
    makespan_s = float((t["arrival_s"] + t["sim_e2e_s"]).max())
    tok = float(t["output_tokens"].sum())
    rows.append(("output tokens/s over the run", tok / makespan_m, tok / makespan_s,
                 (makespan_m / makespan_s - 1) * 100, "tok/s"))
    rows.append(("makespan", makespan_m, makespan_s, (makespan_s - makespan_m) / makespan_m * 100, "s"))
    summ.update(makespan_meas=makespan_m, makespan_sim=makespan_s)
    if ts is not None:
        for c in SERIES:
            m, s_ = ts[c].to_numpy(float), ts[f"sim_{c}"].to_numpy(float)
            if c == "kv_cache_pct" and not np.any(m):
                rows.append(("KV cache % series (not recorded: all 0)", np.nan, float(s_.mean()), np.nan, "pp"))
                continue
            mae = float(np.abs(s_ - m).mean())
            corr = float(np.corrcoef(m, s_)[0, 1]) if m.std() > 0 and s_.std() > 0 else float("nan")
            unit = {"kv_cache_pct": "pp", "prompt_throughput": "tok/s", "gen_throughput": "tok/s"}.get(c, "req")
            rows.append((f"{c} series: mean (MAE {mae:.3g}, corr {corr:.2f})", float(m.mean()), float(s_.mean()),
                         float((s_ - m).mean()), f"{unit} (error = bias)"))
            summ[f"series_{c}"] = {"mean_meas": float(m.mean()), "mean_sim": float(s_.mean()), "mae": mae,
                                   "bias": float((s_ - m).mean()), "corr": corr}
    table = pd.DataFrame(rows, columns=["quantity", "measured", "simulated", "error_pct", "unit"])
    return table, summ


def format_table(table: pd.DataFrame, title: str) -> str:
    """The table as Markdown (errors in %, or pp / the series' bias where the unit says)."""
    def num(x: float) -> str:
        if not np.isfinite(x):
            return ""
        return f"{x:,.4g}" if abs(x) < 1000 else f"{x:,.0f}"

    lines = [f"**{title}**", "", "| quantity | measured | simulated | error | unit |", "|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        err = "" if not np.isfinite(r.error_pct) else f"{r.error_pct:+.1f}" + ("" if "bias" in r.unit else " %")
        lines.append(f"| {r.quantity} | {num(r.measured)} | {num(r.simulated)} | {err} | {r.unit} |")
    return "\n".join(lines)


@dataclass
class Fidelity:
    """One replay: the deployment, the per-request table, the series, the table, the summary."""

    deployment: dict
    requests: pd.DataFrame
    series: pd.DataFrame | None
    table: pd.DataFrame
    summary: dict
    result: Any = None


def replay(run_dir: str | Path, cost: str = "profiled", profile: str | None = None, arrival: str = "send") -> Fidelity:
    """Build the run's deployment, replay its requests, score the prediction."""
    from llmos_sim.serving import simulate

    if arrival not in ARRIVAL_FIELDS:
        raise RunFolderError(f"arrival must be one of {sorted(ARRIVAL_FIELDS)}, got {arrival!r}")
    run = RunFolder.read(run_dir)
    cfg, dep = build_config(run, cost, profile, arrival=arrival)
    dep["arrival"] = arrival
    res = simulate(cfg, seed=0)
    meas = measured_requests(run.path, arrival)
    t = per_request(res.tables["requests"], meas)
    ts = measured_series(run)
    if ts is not None:
        sim = sim_series(res, ts["sim_t"].to_numpy(float), float(run.meta.get("tick_seconds") or 1.0))
        ts = pd.concat([ts.reset_index(drop=True), sim.add_prefix("sim_")], axis=1)
    table, summ = score(t, ts)
    summ["deployment"] = {k: v for k, v in dep.items() if k != "device_memory_bytes"}
    return Fidelity(dep, t, ts, table, summ, res)


def export_run(res, engine_kwargs: dict, hardware: str, out: str | Path, request_ids=None,
               epoch_s: float = 1.7e9, engine_clock_s: float = 1000.0, tick_s: float = 1.0,
               kv_cache: dict | None = None) -> Path:
    """Write a simulation (a :class:`~llmos_sim.serving.system.ServingResult`) as a run folder
    in the format :func:`replay` reads: request times on an engine clock starting at
    ``engine_clock_s`` (sent at ``epoch_s`` + arrival on the client clock, queued at once),
    the engine samples every ``tick_s`` (:func:`sim_series`), ``meta.json`` with
    ``engine_kwargs`` (and ``kv_cache`` when given), ``sim_config.json`` naming ``hardware``.
    Every request must have finished."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rq = res.tables["requests"].sort_values("request")
    if rq["finish_s"].isna().any():
        raise ValueError("export_run: every request must have finished")
    ids = request_ids if request_ids is not None else [f"req-{i}" for i in rq["request"]]
    with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
        for rid, r in zip(ids, rq.itertuples(index=False)):
            f.write(json.dumps({
                "request_id": rid, "input_toks": int(r.prompt_tokens), "output_toks": int(r.output_tokens),
                "arrival_time": epoch_s + float(r.arrival_s), "queued_ts": engine_clock_s + float(r.arrival_s),
                "scheduled_ts": engine_clock_s + float(r.schedule_s), "first_token_ts": engine_clock_s + float(r.first_token_s),
                "last_token_ts": engine_clock_s + float(r.finish_s)}) + "\n")
    first = float(rq["arrival_s"].min())
    end = float(rq["finish_s"].max())
    ticks = np.arange(tick_s, end - first + tick_s, tick_s)
    ts = sim_series(res, first + ticks, tick_s)
    ts.insert(0, "t", ticks)
    ts[["t", "prompt_throughput", "gen_throughput", "running", "waiting", "kv_cache_pct"]].round(3).to_csv(
        out / "timeseries.csv", index=False)
    started = datetime.datetime.fromtimestamp(epoch_s + first, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    meta = {"schema_version": 1, "model": engine_kwargs.get("model"), "engine_kwargs": engine_kwargs,
            "num_requests": len(rq), "started_at": started, "tick_seconds": tick_s,
            "note": "written by llmos_sim.fidelity.export_run from a simulation, not measured"}
    if kv_cache:
        meta["kv_cache"] = kv_cache
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    tp = int(engine_kwargs.get("tensor_parallel_size", 1))
    (out / "sim_config.json").write_text(json.dumps({"num_nodes": 1, "nodes": [{"num_instances": 1, "instances": [
        {"model_name": engine_kwargs.get("model"), "hardware": hardware, "num_npus": tp, "tp_size": tp}]}]}, indent=2) + "\n")
    return out


def synthesize_run(out: str | Path, engine_kwargs: dict, hardware: str, prompt_tokens, output_tokens, arrival_s,
                   cost: str = "profiled", profile: str | None = None, kv_cache: dict | None = None) -> Path:
    """A run folder for a deployment nobody measured: the requests (lengths, send times)
    served by llmos_sim itself with the deployment ``engine_kwargs`` describes, written by
    :func:`export_run`. Replaying it must reproduce it: a check that the deployment is read
    from ``meta.json`` as it was built (model, TP, DP, EP, limits)."""
    from llmos_sim.serving import simulate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").write_text(json.dumps({"engine_kwargs": engine_kwargs, "kv_cache": kv_cache or {}}))
    (out / "sim_config.json").write_text(json.dumps({"nodes": [{"instances": [{"hardware": hardware}]}]}))
    with open(out / "requests.jsonl", "w", encoding="utf-8") as f:
        for i, (p_, o_, a_) in enumerate(zip(prompt_tokens, output_tokens, arrival_s)):
            f.write(json.dumps({"request_id": f"req-{i}", "input_toks": int(p_), "output_toks": int(o_),
                                "arrival_time": float(a_)}) + "\n")
    run = RunFolder.read(out)
    cfg, _ = build_config(run, cost, profile)
    res = simulate(cfg, seed=0)
    return export_run(res, engine_kwargs, hardware, out, kv_cache=kv_cache)


def plot(f: Fidelity, path: Path, title: str) -> None:
    """Per-request scatter (sim vs measured) of TTFT, TPOT, e2e and their CDFs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = f.requests
    fig, ax = plt.subplots(2, 3, figsize=(15, 8.4))
    for j, (k, unit) in enumerate(zip(METRICS, ("s", "ms", "s"))):
        x = 1000.0 if unit == "ms" else 1.0
        a = ax[0, j]
        a.scatter(t[k] * x, t[f"sim_{k}"] * x, s=8, alpha=0.6)
        hi = float(np.nanmax([t[k].max(), t[f"sim_{k}"].max()])) * x * 1.05
        a.plot([0, hi], [0, hi], "k--", lw=0.8)
        a.set_xlabel(f"measured {k[:-2].upper()} ({unit})")
        a.set_ylabel(f"simulated ({unit})")
        a.set_title(f"{k[:-2].upper()}: MAPE {f.summary[f'{k}_mape']:.1%}, bias {f.summary[f'{k}_bias']:+.1%}")
        a = ax[1, j]
        for col, lab in ((k, "measured"), (f"sim_{k}", "simulated")):
            v = np.sort(t[col].dropna().to_numpy(float)) * x
            a.plot(v, np.arange(1, len(v) + 1) / len(v), label=lab)
        a.set_xlabel(f"{k[:-2].upper()} ({unit})")
        a.set_ylabel("fraction of requests")
        a.grid(alpha=0.3)
        a.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_series(f: Fidelity, path: Path, title: str) -> None:
    """The engine's samples over time, measured vs simulated."""
    plot_series_frame(f.series, path, title)


def plot_series_frame(ts: pd.DataFrame, path: Path, title: str,
                      xlabel: str = "time since the run started (s)") -> None:
    """One panel per engine series: ``ts`` has ``t`` and, per series in :data:`SERIES`, the
    measured column and the simulated ``sim_<series>``; each panel's title gives the MAE,
    bias and correlation (or says the run did not record the series: all zero)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"running": "running requests", "waiting": "waiting requests", "kv_cache_pct": "KV cache used (%)",
              "prompt_throughput": "prompt tokens/s", "gen_throughput": "generated tokens/s"}
    fig, ax = plt.subplots(len(SERIES), 1, figsize=(12, 11), sharex=True)
    for a, c in zip(ax, SERIES):
        m, s_ = ts[c].to_numpy(float), ts[f"sim_{c}"].to_numpy(float)
        a.plot(ts["t"], m, "-", lw=1.3, color="C0", label="vLLM (measured)")
        a.plot(ts["t"], s_, "-", lw=1.1, color="C1", alpha=0.85, label="llmos_sim")
        if not np.any(m):
            note = " (not recorded in this run)"
        else:
            corr = np.corrcoef(m, s_)[0, 1] if np.std(m) > 0 and np.std(s_) > 0 else float("nan")
            note = f": MAE {np.abs(s_ - m).mean():.1f}, bias {(s_ - m).mean():+.1f}, corr {corr:.2f}"
        a.set_ylabel(labels[c])
        a.set_title(f"{labels[c]}{note}", fontsize=10, loc="left")
        a.grid(alpha=0.3)
    ax[0].legend(loc="upper right")
    ax[-1].set_xlabel(xlabel)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(f: Fidelity, out: Path, title: str, plots: bool = True) -> None:
    """``table.csv``, ``table.md``, ``per_request.parquet``, ``timeseries.csv``,
    ``summary.json`` and (``plots``) ``fidelity.png``, ``timeseries.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    f.table.to_csv(out / "table.csv", index=False)
    (out / "table.md").write_text(format_table(f.table, title) + "\n")
    f.requests.to_parquet(out / "per_request.parquet")
    if f.series is not None:
        f.series.to_csv(out / "timeseries.csv", index=False)
    (out / "summary.json").write_text(json.dumps(f.summary, indent=2, default=float) + "\n")
    if plots:
        plot(f, out / "fidelity.png", title)
        if f.series is not None:
            plot_series(f, out / "timeseries.png", title)


def title_of(f: Fidelity, run_dir: Path) -> str:
    d = f.deployment
    par = f"TP{d['tp']}" + (f" DP{d['dp']}" if d["dp"] > 1 else "") + (" EP" if d["expert_parallel"] else "")
    return f"{Path(run_dir).name}: {d['model']} on {d['gpu']} {par}, {len(f.requests)} requests, cost={d['cost']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m llmos_sim.fidelity", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="a run folder (requests.jsonl, timeseries.csv, meta.json, sim_config.json)")
    ap.add_argument("--profile", default=None, help="operator profile folder or shipped name (default: the "
                                                     "shipped profile for the run's GPU and model)")
    ap.add_argument("--cost", default="profiled", choices=("profiled", "roofline"))
    ap.add_argument("--out", default=None, help="output folder (default: outputs/fidelity/<run>_<cost>)")
    ap.add_argument("--arrival", default="send", choices=sorted(ARRIVAL_FIELDS),
                    help="replay at the client's send time (default; latencies from the client's start) or at the "
                         "engine's enqueue time (latencies from there: the unmodelled front end left out)")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    from llmos_sim.serving.profiled import ProfileError

    try:
        f = replay(a.run_dir, a.cost, a.profile, a.arrival)
    except (RunFolderError, ProfileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path("outputs") / "fidelity" / f"{Path(a.run_dir).resolve().name}_{a.cost}_{a.arrival}"
    title = title_of(f, Path(a.run_dir).resolve())
    write(f, out, title, plots=not a.no_plots)
    d = f.deployment
    print(f"deployment: {d['model']} on {d['gpu']}, tp={d['tp']} dp={d['dp']} expert_parallel={d['expert_parallel']}, "
          f"max_num_seqs={d['max_num_seqs']} max_num_batched_tokens={d['max_num_batched_tokens']}, "
          f"KV blocks {d['kv_blocks']} ({d['kv_blocks_usable']} usable: one is vLLM's null block; stated {d['num_gpu_blocks']}, from memory {d['kv_blocks_computed']}), "
          f"prefix caching {d['prefix_caching']}, async scheduling {d['async_scheduling']}, CUDA graphs "
          + (f"up to {d['cuda_graph_sizes'][-1]} tokens" if d["cuda_graph_sizes"] else "off"))
    print(format_table(f.table, title))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
