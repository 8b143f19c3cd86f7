"""Real inference: the paged KV cache is correct and TTFT/TPOT are measured per request."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmos_sim.backends.torch_gpu.inference import (FittedCost, InferenceSetup, PagedKV, TinyLM,  # noqa: E402
                                                    compare_inference, make_requests, serve)
from llmos_sim.serving.cost import BatchShape  # noqa: E402

SMALL = InferenceSetup(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=128, dtype="fp32",
                       block_tokens=4, kv_blocks=64, max_seqs=4, max_tokens=64, n_requests=6,
                       prompt_tokens=(4, 20), output_tokens=(2, 6), repeats=1)


def small_model():
    spec = SMALL.spec()
    return TinyLM(spec, "cpu", torch.float32, seed=0), PagedKV(spec, "cpu", torch.float32, 4, 64)


def test_cached_decode_equals_full_recompute():
    model, kv = small_model()
    toks = torch.randint(0, 128, (11,), generator=torch.Generator().manual_seed(1))
    # prefill 10 tokens, then decode the 11th from the paged cache ...
    assert kv.reserve(0, 11)
    model.forward(toks[:10], [(0, 10, 0)], kv)
    cached = model.forward(toks[10:], [(0, 1, 10)], kv)
    # ... equals prefilling all 11 at once in another sequence (blocks elsewhere in the arena)
    assert kv.reserve(1, 11)
    full = model.forward(toks, [(1, 11, 0)], kv)
    assert torch.equal(cached, full)
    assert set(kv.alloc[0].blocks).isdisjoint(kv.alloc[1].blocks)
    k0, _ = kv.read(0, 1, 11)
    k1, _ = kv.read(1, 1, 11)
    assert torch.allclose(k0, k1, atol=1e-5)


def test_serve_measures_every_request_and_frees_the_pool():
    model, kv = small_model()
    reqs = make_requests(SMALL)
    out = serve(model, kv, reqs, SMALL.max_seqs, SMALL.max_tokens)
    for rid, _, o in reqs:
        assert 0 < out.first_token_s[rid] <= out.finish_s[rid]
    assert all(t > 0 for t in out.iter_s)
    assert sum(b.n_prefill_tokens for b in out.shapes) == sum(p for _, p, _ in reqs)
    assert sum(b.n_decode_tokens for b in out.shapes) == sum(o - 1 for _, _, o in reqs)
    assert kv.pool.stats().n_live == 0 and kv.pool.stats().n_alloc == len(reqs)


def test_fitted_cost_recovers_a_linear_model():
    shapes = [BatchShape(p, p * (p + 1) // 2, p, d, d * 10, s, s) for p, d, s in
              [(0, 1, 1), (0, 4, 4), (16, 0, 1), (64, 2, 3), (32, 8, 9), (128, 0, 2)]]
    true = FittedCost([1e-3, 1e-4, 2e-5, 3e-5, 1e-7])
    fit = FittedCost.fit(shapes, [true.iteration_s(b) for b in shapes])
    for b in shapes:
        assert fit.iteration_s(b) == pytest.approx(true.iteration_s(b), rel=1e-6)


def test_compare_inference_reports_errors():
    df, s = compare_inference(SMALL)
    assert len(df) == SMALL.n_requests and (df["ttft_real_s"] > 0).all() and (df["tpot_sim_s"] > 0).all()
    assert s["kv_pool_failures"] >= 0 and s["ttft_mape"] >= 0
