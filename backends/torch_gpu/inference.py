"""Real inference and its cost model: a small decoder-only transformer with random weights
(no downloads), and the sim-vs-real comparison for serving.

- :class:`TinyLM`: Llama-shaped (RMSNorm, grouped-query attention, SwiGLU MLP, untied LM
  head), built from the serving simulator's :class:`~llmos_sim.serving.specs.ModelSpec`; its
  K/V live in the blocks the KV pool chose (:class:`~llmos_sim.backends.torch_gpu.serving.ArenaKV`).
  :mod:`llmos_sim.backends.torch_gpu.serving` runs it inside the serving simulator's replicas
  (``backend=torch``), so the batching policy's batches are what runs.
- :class:`~llmos_sim.serving.fitted.FittedCost` (torch-free, so a simulated run does not need
  torch; imported here for the comparison): a serving cost model linear in the batch's
  features, fitted by non-negative least squares to measured iterations.
- :func:`compare_inference`: profile the device on *other* request streams, fit the cost
  model, then serve one request stream (Poisson arrivals in wall-clock time) for real and in
  simulation with the fitted model, and compare per-request TTFT, TPOT and end-to-end latency.
  The simulator makes its own batching decisions on its own clock: nothing of the real run is
  replayed.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from llmos_sim.serving.cost import BatchShape
from llmos_sim.serving.fitted import FittedCost
from llmos_sim.serving.specs import ModelSpec


class TinyLM:
    """A Llama-shaped decoder with seeded random weights on ``device`` in ``dtype``."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype, seed: int = 0) -> None:
        self.spec, self.device, self.dtype = spec, device, dtype
        g = torch.Generator(device="cpu").manual_seed(seed)
        h, kvd, i = spec.hidden, spec.kv_heads * spec.head_dim, spec.intermediate

        def w(*shape):
            return (torch.randn(*shape, generator=g) / math.sqrt(shape[-1])).to(device=device, dtype=dtype)

        self.emb = w(spec.vocab, h)
        self.layers = [dict(wq=w(h, h), wk=w(kvd, h), wv=w(kvd, h), wo=w(h, h), w1=w(i, h), w3=w(i, h), w2=w(h, i))
                       for _ in range(spec.layers)]
        self.head = w(spec.vocab, h)

    @staticmethod
    def _norm(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype)

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, seqs: list[tuple[int, int, int]], kv) -> torch.Tensor:
        """One iteration. ``tokens``: all new tokens of the batch, concatenated; ``seqs``:
        ``(seq_id, n_new, n_cached)`` per sequence in the same order. Writes the new K/V into
        each sequence's blocks and returns the next token of every sequence (greedy)."""
        s = self.spec
        hd, nh, nkv = s.head_dim, s.heads, s.kv_heads
        x = self.emb[tokens]
        for li, L in enumerate(self.layers):
            hN = self._norm(x)
            q = (hN @ L["wq"].T).view(-1, nh, hd)
            k = (hN @ L["wk"].T).view(-1, nkv, hd)
            v = (hN @ L["wv"].T).view(-1, nkv, hd)
            outs = []
            pos = 0
            for sid, n_new, n_cached in seqs:
                kv.write(sid, li, n_cached, k[pos:pos + n_new], v[pos:pos + n_new])
                K, V = kv.read(sid, li, n_cached + n_new)  # [ctx, nkv, hd]
                rep = nh // nkv
                qs = q[pos:pos + n_new].transpose(0, 1)  # [nh, n_new, hd]
                Ks = K.repeat_interleave(rep, dim=1).transpose(0, 1)
                Vs = V.repeat_interleave(rep, dim=1).transpose(0, 1)
                mask = None
                if n_new > 1:  # causal within the new tokens, full over the cache
                    ctx = n_cached + n_new
                    mask = torch.ones(n_new, ctx, dtype=torch.bool, device=x.device).tril(diagonal=n_cached)
                o = torch.nn.functional.scaled_dot_product_attention(qs, Ks, Vs, attn_mask=mask)
                outs.append(o.transpose(0, 1).reshape(n_new, nh * hd))
                pos += n_new
            x = x + torch.cat(outs) @ L["wo"].T
            hN = self._norm(x)
            x = x + (torch.nn.functional.silu(hN @ L["w1"].T) * (hN @ L["w3"].T)) @ L["w2"].T
        last = torch.tensor(np.cumsum([n for _, n, _ in seqs]) - 1, device=x.device)
        logits = self._norm(x[last]) @ self.head.T
        return logits.argmax(-1)


# -- sim vs real -------------------------------------------------------------------------------
#: the experiment both runs compose (configs/experiment/serving_real.yaml)
EXPERIMENT = "serving_real"


def real_run(overrides: Sequence[str] = (), seed: int = 0):
    """Serve ``experiment=serving_real`` (+ ``overrides``) for real with the torch backend;
    returns the :class:`~llmos_sim.serving.system.ServingResult` (``extra["replicas"]`` keeps
    each replica's measured ``(shape, seconds)`` per iteration)."""
    from hydra.utils import instantiate

    from llmos_sim.run import compose
    from llmos_sim.serving import simulate

    cfg = compose([f"experiment={EXPERIMENT}", "backend=torch", *overrides, f"seed={seed}"])
    return simulate(cfg, seed=seed, backend=instantiate(cfg.backend))


def measured_iterations(res) -> tuple[list[BatchShape], list[float]]:
    """Every iteration's shape and measured seconds of a real run."""
    pairs = [m for r in res.extra["replicas"] for m in r.measured]
    return [b for b, _ in pairs], [t for _, t in pairs]


def cpu_share(res) -> float:
    """CPU seconds the replicas' thread used per wall second of iterations (CPU devices: below
    the thread count when other processes took the cores)."""
    cpu = sum(sum(r.cpu_s) for r in res.extra["replicas"])
    wall = sum(t for r in res.extra["replicas"] for _, t in r.measured)
    return cpu / wall if wall > 0 else float("nan")


def profile(overrides: Sequence[str] = (), rounds: int = 2, seed0: int = 10_000, phase: int = 0,
            rate_factors: Sequence[float] = (1.0, 0.0, 2.0)) -> tuple[list[BatchShape], list[float], list[float]]:
    """Measured iterations for the fit, from request streams other than the validation one:
    round ``r`` serves seed ``seed0 + r`` at the configured rate, then as a burst (all at time
    0: full batches, long queues), then at twice the rate, and so on in turn (starting
    ``phase`` steps into that cycle). Returns the iterations' shapes and seconds, and each
    run's :func:`cpu_share`."""
    from llmos_sim.run import compose

    rate = float(compose([f"experiment={EXPERIMENT}", *overrides]).workload.rate_per_s)
    shapes: list[BatchShape] = []
    times: list[float] = []
    shares: list[float] = []
    for r in range(rounds):
        extra = f"workload.rate_per_s={rate_factors[(phase + r) % len(rate_factors)] * rate}"
        res = real_run([*overrides, extra], seed=seed0 + r)
        b, t = measured_iterations(res)
        shapes += b
        times += t
        shares.append(cpu_share(res))
    return shapes, times, shares


def _mape(err) -> float:
    return float(np.mean(np.abs(np.asarray(err, dtype=float))))


def compare_inference(overrides: Sequence[str] = (), repeats: int = 5, seed: int = 0,
                      rate_factors: Sequence[float] = (1.0,)) -> tuple[pd.DataFrame, dict]:
    """Fit, serve for real ``repeats`` times, simulate once; per-request comparison and summary.

    1. warm up; then ``repeats + 1`` profiling runs (other streams, see :func:`profile`)
       interleaved with ``repeats`` real runs of the validation stream (``seed``) — profile,
       serve, profile, serve, …, profile — so that the fit sees the machine in the same
       states as the validation runs (a shared machine's speed drifts by several per cent
       over a minute); fit :class:`FittedCost` on all profiling iterations. The profiling
       streams run at ``rate_factors`` × the configured rate, in turn (default: the same
       rate — calibrate in the regime you predict; with bursts and 2× added the fit is pulled
       towards large batches and under-predicts this regime's iterations by ~5–10 % here);
    2. each request's real TTFT / TPOT / e2e is its median over the ``repeats`` runs;
    3. simulate the same config with the ``cost`` group = the fitted model: its own batching
       decisions on its own clock.

    Relative error = real / sim − 1. Also reported: the fitted model's error on the real
    runs' own iterations (``iteration_mape``), whether simulation and the first real run
    scheduled the requests in the same order, and the noise floor: each real run against the
    median of the others (``real_vs_real_*_mape``; no model can predict one run better).
    """
    from llmos_sim.run import compose
    from llmos_sim.serving import simulate

    overrides = list(overrides)
    real_run([*overrides, "workload.n=4"], seed=seed + 99)  # warm up (allocator, thread pools)
    shapes, times, shares = profile(overrides, 1, seed0=10_000, rate_factors=rate_factors)
    reals = []
    for i in range(max(1, repeats)):
        reals.append(real_run(overrides, seed=seed))
        b, t, sh = profile(overrides, 1, seed0=10_001 + i, phase=i + 1, rate_factors=rate_factors)
        shapes += b
        times += t
        shares += sh
    cost = FittedCost.fit(shapes, times)
    coef = "[" + ",".join(repr(float(c)) for c in cost.coef) + "]"
    sim = simulate(compose([f"experiment={EXPERIMENT}", *overrides, f"cost.coef={coef}", f"seed={seed}"]),
                   seed=seed)
    cols = ("ttft", "tpot", "e2e", "queue")
    tabs = [r.tables["requests"].set_index("request") for r in reals]
    st = sim.tables["requests"].set_index("request")
    df = tabs[0][["arrival_s", "prompt_tokens", "output_tokens"]].copy()
    for c in cols:
        df[f"{c}_real_s"] = np.median(np.stack([t.loc[df.index, f"{c}_s"].to_numpy(dtype=float) for t in tabs]), axis=0)
        df[f"{c}_sim_s"] = st[f"{c}_s"]
    for c in cols[:3]:
        df[f"{c}_err"] = df[f"{c}_real_s"] / df[f"{c}_sim_s"] - 1.0
    df = df.reset_index().rename(columns={"request": "request_id"})
    floor = {}
    if len(tabs) > 2:  # each real run against the median of the others
        for c in cols[:3]:
            m = np.stack([t.loc[df["request_id"], f"{c}_s"].to_numpy(dtype=float) for t in tabs])
            floor[f"real_vs_real_{c}_mape"] = float(np.mean([_mape(m[i] / np.median(np.delete(m, i, 0), axis=0) - 1)
                                                             for i in range(len(m))]))
    rb, rt = measured_iterations(reals[0])
    pred = np.array([cost.iteration_s(b) for b in rb])
    first = tabs[0]
    order_real = list(first.sort_values(["schedule_s", "arrival_s"], kind="stable").index)
    order_sim = list(st.sort_values(["schedule_s", "arrival_s"], kind="stable").index)
    rep = reals[0].extra["replicas"][0]
    summary = {
        "n_requests": int(len(df)), "repeats": len(reals),
        "ttft_mape": _mape(df["ttft_err"]), "tpot_mape": _mape(df["tpot_err"]), "e2e_mape": _mape(df["e2e_err"]),
        "single_run_ttft_mape": _mape(first["ttft_s"] / st["ttft_s"] - 1),
        "single_run_tpot_mape": _mape(first["tpot_s"] / st["tpot_s"] - 1),
        "single_run_e2e_mape": _mape(first["e2e_s"] / st["e2e_s"] - 1),
        "iteration_mape": _mape(np.asarray(rt) / pred - 1), **floor,
        "n_iterations_real": len(rt), "n_iterations_sim": int(sim.summary.get("n_iterations", 0)),
        "same_schedule_order": order_real == order_sim,
        "n_preemptions_real": int(first["preemptions"].sum()), "n_preemptions_sim": int(st["preemptions"].sum()),
        "makespan_real_s": float(reals[0].summary.get("makespan_s", np.nan)),
        "makespan_sim_s": float(sim.summary.get("makespan_s", np.nan)),
        "cpu_share_profile": float(np.mean(shares)), "cpu_share_runs": [cpu_share(r) for r in reals],
        "real_runs": [{k: float(r.summary.get(k, np.nan)) for k in ("ttft_s_mean", "tpot_s_mean", "makespan_s")}
                      for r in reals],
        "sim_run": {k: float(sim.summary.get(k, np.nan)) for k in ("ttft_s_mean", "tpot_s_mean", "makespan_s")},
        "fitted_cost": dict(zip(FittedCost.FEATURES, map(float, cost.coef))),
        "n_profile_iterations": len(shapes), "model": rep.lm.spec.name, "params": rep.lm.spec.params,
        "device": rep.device, "dtype": str(rep.lm.dtype), "overrides": overrides,
    }
    return df, summary
