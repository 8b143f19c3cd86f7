"""Real inference: a tiny decoder-only transformer (random weights, no downloads) serving a
request list with continuous batching, its KV cache in blocks of a paged pool over an arena.

- :class:`TinyLM`: Llama-shaped (RMSNorm, grouped-query attention, SwiGLU MLP, untied LM
  head), described by the serving simulator's :class:`~llmos_sim.serving.specs.ModelSpec`.
- :class:`PagedKV`: one arena per device viewed as ``[n_blocks, layers, 2, block_tokens,
  kv_heads, head_dim]``; a :class:`~llmos_sim.policies.memory.paged.PagedPool` (the same
  policy the simulator uses) decides which blocks a sequence owns; K/V are written into and
  read from exactly those blocks.
- :func:`serve`: continuous batching (vLLM-style without preemption): every iteration, running
  sequences decode one token and waiting requests are admitted FIFO while the batch has room
  (``max_seqs``, ``max_tokens``) and the pool has blocks for the prompt; a prompt is prefilled
  whole in one iteration. Each iteration's :class:`~llmos_sim.serving.cost.BatchShape` and
  wall time are recorded, so TTFT and TPOT are *measured*.
- :class:`FittedCost`: the serving cost-model seam (``iteration_s(BatchShape)``) fitted by
  least squares to a *separate* profiling run (other batch shapes), the way the simulator is
  calibrated; :func:`compare_inference` replays the measured schedule with the fitted model's
  iteration times and compares per-request TTFT and TPOT.

All requests arrive at time 0, so the schedule is a function of the policy alone and the
replay is exact; only the time each iteration takes differs between model and measurement.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from llmos_sim.backends.torch_gpu.devices import DTYPES, apply_threads, discover, resolve_dtype
from llmos_sim.policies.memory.paged import PagedPool
from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.serving.specs import ModelSpec


@dataclass(frozen=True)
class InferenceSetup:
    """Model, batching limits, workload and profiling sizes of an inference comparison.

    ``n_requests`` requests with prompt lengths uniform in ``prompt_tokens`` and output lengths
    uniform in ``output_tokens`` (inclusive), drawn from ``seed``.
    """

    layers: int = 4
    hidden: int = 256
    heads: int = 8
    kv_heads: int = 4
    intermediate: int = 768
    vocab: int = 2048
    dtype: str = "auto"
    block_tokens: int = 16
    kv_blocks: int = 512
    max_seqs: int = 8
    max_tokens: int = 512
    n_requests: int = 16
    prompt_tokens: tuple[int, int] = (16, 128)
    output_tokens: tuple[int, int] = (8, 32)
    seed: int = 0
    threads: int | None = None
    repeats: int = 3  #: serve the validation list this often; per-iteration medians (0 = 1 run)

    def spec(self) -> ModelSpec:
        dt = DTYPES[resolve_dtype(self.dtype, discover()[0].kind)]
        return ModelSpec("tiny-real", self.layers, self.hidden, self.heads, self.kv_heads, self.intermediate,
                         self.vocab, dtype_bytes=torch.empty((), dtype=dt).element_size())


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
    def forward(self, tokens: torch.Tensor, seqs: list[tuple[int, int, int]], kv: "PagedKV") -> torch.Tensor:
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


class PagedKV:
    """The KV cache: an arena of blocks, each ``[layers, 2, block_tokens, kv_heads, head_dim]``;
    a :class:`PagedPool` over the arena's bytes decides which blocks each sequence owns."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype, block_tokens: int, n_blocks: int) -> None:
        self.bt = block_tokens
        self.block_bytes = spec.kv_bytes_per_token * block_tokens
        self.arena = torch.zeros(n_blocks * self.block_bytes, dtype=torch.uint8, device=device)
        self.blocks = self.arena.view(dtype).view(n_blocks, spec.layers, 2, block_tokens, spec.kv_heads,
                                                  spec.head_dim)
        self.pool = PagedPool(n_blocks * self.block_bytes, block_bytes=self.block_bytes)
        self.alloc: dict[int, object] = {}

    def reserve(self, sid: int, n_tokens: int) -> bool:
        """Make sequence ``sid`` own blocks for ``n_tokens`` tokens; ``False`` if the pool is full."""
        need = max(1, -(-n_tokens // self.bt))
        a = self.alloc.get(sid)
        if a is None:
            a = self.pool.allocate(need * self.block_bytes, tag=sid)
        elif len(a.blocks) < need:
            a = self.pool.append_blocks(a, need - len(a.blocks))
        if a is None:
            return False
        self.alloc[sid] = a
        return True

    def free(self, sid: int) -> None:
        self.pool.free(self.alloc.pop(sid))

    def _index(self, sid: int) -> torch.Tensor:
        return torch.tensor([b // self.block_bytes for b in self.alloc[sid].blocks], device=self.blocks.device)

    def write(self, sid: int, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V of tokens ``start .. start+len(k)`` of ``sid`` at ``layer`` in its blocks."""
        blocks = self.alloc[sid].blocks
        t = start
        while t < start + len(k):
            b, o = divmod(t, self.bt)
            n = min(self.bt - o, start + len(k) - t)
            blk = self.blocks[blocks[b] // self.block_bytes, layer]
            blk[0, o:o + n] = k[t - start:t - start + n]
            blk[1, o:o + n] = v[t - start:t - start + n]
            t += n

    def read(self, sid: int, layer: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V (``[n_tokens, kv_heads, head_dim]``) of ``sid`` at ``layer``, gathered from its blocks."""
        nb = -(-n_tokens // self.bt)
        g = self.blocks[self._index(sid)[:nb], layer]  # [nb, 2, bt, kv, hd]
        g = g.transpose(0, 1).reshape(2, nb * self.bt, *g.shape[-2:])
        return g[0, :n_tokens], g[1, :n_tokens]


@dataclass
class Served:
    """What :func:`serve` measured: per-iteration shapes and times, per-request token times."""

    shapes: list[BatchShape] = field(default_factory=list)
    iter_s: list[float] = field(default_factory=list)
    members: list[list[tuple[int, bool]]] = field(default_factory=list)  # (request, emits first token?)
    first_token_s: dict[int, float] = field(default_factory=dict)
    finish_s: dict[int, float] = field(default_factory=dict)


def make_requests(setup: InferenceSetup, n: int | None = None, seed: int | None = None) -> list[tuple[int, int, int]]:
    """``(id, prompt_tokens, output_tokens)`` drawn uniformly from the setup's ranges."""
    rng = np.random.default_rng(setup.seed if seed is None else seed)
    n = setup.n_requests if n is None else n
    p = rng.integers(setup.prompt_tokens[0], setup.prompt_tokens[1] + 1, n)
    o = rng.integers(setup.output_tokens[0], setup.output_tokens[1] + 1, n)
    return [(i, int(a), int(b)) for i, (a, b) in enumerate(zip(p, o))]


def serve(model: TinyLM, kv: PagedKV, requests: list[tuple[int, int, int]], max_seqs: int, max_tokens: int,
          seed: int = 0) -> Served:
    """Continuous batching of ``requests`` (all arriving at 0) until all finish; see module doc."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    waiting = list(requests)
    running: dict[int, list] = {}  # id -> [cached tokens, generated, output_tokens, last token]
    out = Served()
    dev = model.device
    sync = (lambda: torch.cuda.synchronize(dev)) if str(dev).startswith("cuda") else (lambda: None)
    t0 = t_prev = time.perf_counter()
    while waiting or running:
        seqs, toks, members = [], [], []
        pf = pairs = pctx = dec = dctx = 0
        for rid, st in running.items():  # decode one token each (reserve room for it)
            if not kv.reserve(rid, st[0] + 1):
                raise torch.OutOfMemoryError(f"KV pool full while decoding request {rid}")
            seqs.append((rid, 1, st[0]))
            toks.append(torch.tensor([st[3]], device=dev))
            members.append((rid, False))
            dec += 1
            dctx += st[0] + 1
        budget = max_tokens - dec
        while waiting and len(seqs) < max_seqs and waiting[0][1] <= budget:
            rid, p, o = waiting[0]
            if not kv.reserve(rid, p):
                break
            waiting.pop(0)
            running[rid] = [0, 0, o, None]
            seqs.append((rid, p, 0))
            toks.append(torch.randint(0, model.spec.vocab, (p,), generator=g).to(dev))
            members.append((rid, True))
            budget -= p
            pf += p
            pairs += p * (p + 1) // 2
            pctx += p
        if not seqs:
            raise RuntimeError("no request fits an empty batch (max_tokens or KV pool too small)")
        nxt = model.forward(torch.cat(toks), seqs, kv)
        sync()
        te = time.perf_counter()
        out.shapes.append(BatchShape(pf, pairs, pctx, dec, dctx, len(seqs), len(seqs)))
        out.iter_s.append(te - t_prev)  # the whole iteration: batch formation, KV blocks, forward
        t_prev = te
        out.members.append(members)
        now = te - t0
        for (rid, n_new, _), tok in zip(seqs, nxt.tolist()):
            st = running[rid]
            st[0] += n_new
            st[1] += 1
            st[3] = tok
            if st[1] == 1:
                out.first_token_s[rid] = now
            if st[1] >= st[2]:
                out.finish_s[rid] = now
                del running[rid]
                kv.free(rid)
    return out


class FittedCost(CostModel):
    """Iteration time ``a + b·n_seqs + c·n_prefill + d·n_decode + e·(attn pairs + decode ctx)``
    seconds, fitted by non-negative least squares to measured iterations."""

    FEATURES = ("base_s", "per_seq_s", "per_prefill_token_s", "per_decode_token_s", "per_attn_pair_s")

    def __init__(self, coef: np.ndarray | list[float]) -> None:
        self.coef = np.asarray(coef, dtype=float)

    @staticmethod
    def features(b: BatchShape) -> np.ndarray:
        """The regressors of one iteration, in :attr:`FEATURES` order."""
        return np.array([1.0, b.n_seqs, b.n_prefill_tokens, b.n_decode_tokens,
                         b.prefill_attn_pairs + b.decode_ctx_tokens])

    def iteration_s(self, b: BatchShape) -> float:
        return float(self.features(b) @ self.coef)

    @classmethod
    def fit(cls, shapes: list[BatchShape], times_s: list[float]) -> "FittedCost":
        X = np.stack([cls.features(b) for b in shapes])
        y = np.asarray(times_s, dtype=float)
        coef = _nnls(X, y)
        return cls(coef)


def _nnls(X: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Least squares with the coefficients clipped to >= 0 (active set by repeated refits),
    weighting each row by 1/y so that small iterations count as much as large ones."""
    w = 1.0 / np.maximum(y, 1e-9)
    Xw, yw = X * w[:, None], y * w
    active = np.ones(X.shape[1], dtype=bool)
    coef = np.zeros(X.shape[1])
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(Xw[:, active], yw, rcond=None)
        coef[:] = 0.0
        coef[active] = c
        if (c >= 0).all():
            break
        active[np.flatnonzero(active)[c < 0]] = False
    return coef


def replay_times(members: list[list[tuple[int, bool]]], iter_s) -> tuple[dict[int, float], dict[int, float]]:
    """First-token and finish times of each request for a schedule and its iteration times
    (iterations back to back from 0, as :func:`serve` runs them)."""
    first, finish = {}, {}
    t = 0.0
    for dt, mem in zip(iter_s, members):
        t += float(dt)
        for rid, _ in mem:
            first.setdefault(rid, t)
            finish[rid] = t
    return first, finish


def replay(served: Served, cost: CostModel) -> tuple[dict[int, float], dict[int, float]]:
    """Predicted first-token and finish times: the measured schedule with modelled iteration times."""
    return replay_times(served.members, [cost.iteration_s(b) for b in served.shapes])


def build(setup: InferenceSetup) -> tuple[TinyLM, PagedKV]:
    """The model and its KV cache on the first local device."""
    dev = discover()[0]
    apply_threads(setup.threads)
    dt = DTYPES[resolve_dtype(setup.dtype, dev.kind)]
    spec = setup.spec()
    return TinyLM(spec, dev.torch_device, dt, setup.seed), PagedKV(spec, dev.torch_device, dt, setup.block_tokens,
                                                                  setup.kv_blocks)


def profile(model: TinyLM, kv: PagedKV, setup: InferenceSetup, rounds: int = 3) -> Served:
    """Profiling run for the fit: other request lists (other seeds, sizes) than the validation."""
    prof = Served()
    for r in range(rounds):
        reqs = make_requests(setup, n=setup.max_seqs * 2, seed=10_000 + r)
        reqs = [(1000 * (r + 1) + i, p, min(o, 12)) for i, p, o in reqs]
        s = serve(model, kv, reqs, setup.max_seqs, setup.max_tokens, seed=r + 1)
        prof.shapes += s.shapes
        prof.iter_s += s.iter_s
    return prof


def _mape(real: Served, reqs, first, finish) -> tuple[float, float]:
    """TTFT and TPOT mean absolute relative error of one measured run against the prediction."""
    e1, e2 = [], []
    for rid, _, o in reqs:
        e1.append(abs(real.first_token_s[rid] / first[rid] - 1))
        tp_r = (real.finish_s[rid] - real.first_token_s[rid]) / max(o - 1, 1)
        tp_s = (finish[rid] - first[rid]) / max(o - 1, 1)
        e2.append(abs(tp_r / tp_s - 1))
    return float(np.mean(e1)), float(np.mean(e2))


def compare_inference(setup: InferenceSetup = InferenceSetup(), calibration: str | None = None
                      ) -> tuple[pd.DataFrame, dict]:
    """Profile, fit the cost model, serve the validation requests for real, replay them with
    the model; per-request TTFT/TPOT real vs sim and a summary (``calibration`` unused: the
    serving model is fitted here)."""
    model, kv = build(setup)
    serve(model, kv, make_requests(setup, n=4, seed=99), setup.max_seqs, setup.max_tokens)  # warm up
    reqs = make_requests(setup)
    # profile before and after the validation runs, so slow drift of the machine averages out
    prof = profile(model, kv, setup, rounds=2)
    runs = [serve(model, kv, reqs, setup.max_seqs, setup.max_tokens, seed=setup.seed)
            for _ in range(max(1, setup.repeats))]
    p2 = profile(model, kv, setup, rounds=2)
    prof.shapes += p2.shapes
    prof.iter_s += p2.iter_s
    cost = FittedCost.fit(prof.shapes, prof.iter_s)
    real = runs[0]
    if len(runs) > 1:  # the schedule is deterministic: same shapes every run; median time per iteration
        assert all(r.shapes == real.shapes for r in runs)
        med = np.median(np.array([r.iter_s for r in runs]), axis=0)
        real = Served(real.shapes, list(med), real.members)
        real.first_token_s, real.finish_s = replay_times(real.members, med)
    first, finish = replay(real, cost)
    rows = []
    for rid, p, o in reqs:
        ttft_r, ttft_s = real.first_token_s[rid], first[rid]
        tpot_r = (real.finish_s[rid] - ttft_r) / max(o - 1, 1)
        tpot_s = (finish[rid] - ttft_s) / max(o - 1, 1)
        rows.append({"request_id": rid, "prompt_tokens": p, "output_tokens": o, "ttft_sim_s": ttft_s,
                     "ttft_real_s": ttft_r, "ttft_err": ttft_r / ttft_s - 1, "tpot_sim_s": tpot_s,
                     "tpot_real_s": tpot_r, "tpot_err": tpot_r / tpot_s - 1})
    df = pd.DataFrame(rows)
    it_pred = np.array([cost.iteration_s(b) for b in real.shapes])
    summary = {
        "n_requests": len(reqs), "n_iterations": len(real.shapes), "repeats": len(runs),
        "single_run_ttft_mape": _mape(runs[0], reqs, first, finish)[0],
        "single_run_tpot_mape": _mape(runs[0], reqs, first, finish)[1],
        "ttft_mape": float(df["ttft_err"].abs().mean()), "tpot_mape": float(df["tpot_err"].abs().mean()),
        "iteration_mape": float(np.mean(np.abs(np.array(real.iter_s) / it_pred - 1))),
        "fitted_cost": dict(zip(FittedCost.FEATURES, map(float, cost.coef))),
        "n_profile_iterations": len(prof.shapes), "model": setup.spec().name,
        "params": setup.spec().params, "device": model.device, "dtype": str(model.dtype),
        "kv_block_bytes": kv.block_bytes, "kv_pool_failures": kv.pool.stats().n_failures,
    }
    return df, summary
