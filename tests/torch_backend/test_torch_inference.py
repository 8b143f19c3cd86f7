"""Real serving: the batching policy's batches run on a transformer whose KV cache lives in the
pool's blocks of an arena; decisions are the simulator's, times are measured."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from llmos_sim.backends.torch_gpu.inference import FittedCost, TinyLM, compare_inference, real_run  # noqa: E402
from llmos_sim.backends.torch_gpu.serving import ArenaKV, ExecutingReplica  # noqa: E402
from llmos_sim.policies.memory.paged import PagedPool  # noqa: E402
from llmos_sim.run import compose  # noqa: E402
from llmos_sim.serving import simulate  # noqa: E402
from llmos_sim.serving.cost import BatchShape, CostModel  # noqa: E402
from llmos_sim.serving.specs import ModelSpec  # noqa: E402

SPEC = ModelSpec("t", layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab=128, dtype_bytes=4)
#: experiment=serving_real shrunk to a few requests of a 2-layer model (fp32 on the CPU)
SMALL = ["model.layers=2", "model.hidden=64", "model.heads=4", "model.kv_heads=2", "model.intermediate=128",
         "model.vocab=128", "workload.n=8", "workload.rate_per_s=0", "workload.prompt_min=4",
         "workload.prompt_max=24", "workload.output_min=2", "workload.output_max=9", "batching.max_num_seqs=4",
         "batching.max_num_batched_tokens=64", "serving.block_tokens=4", "serving.num_kv_blocks=64"]


def test_cached_decode_equals_full_recompute():
    """Prefill 10 tokens then decode the 11th from the paged cache == prefill all 11 at once,
    with the two sequences' blocks where the pool put them in the arena."""
    kv = ArenaKV(SPEC, "cpu", torch.float32, 4, 64 * SPEC.kv_bytes_per_token * 4)
    pool = PagedPool(kv.arena.numel(), block_bytes=kv.block_bytes)
    model = TinyLM(SPEC, "cpu", torch.float32, seed=0)
    toks = torch.randint(0, 128, (11,), generator=torch.Generator().manual_seed(1))
    a0, a1 = (pool.allocate(3 * kv.block_bytes, tag=i) for i in (0, 1))
    kv.set_table(0, list(a0.blocks))
    kv.set_table(1, list(a1.blocks))
    model.forward(toks[:10], [(0, 10, 0)], kv)
    cached = model.forward(toks[10:], [(0, 1, 10)], kv)
    full = model.forward(toks, [(1, 11, 0)], kv)
    assert torch.equal(cached, full)
    assert set(a0.blocks).isdisjoint(a1.blocks)
    k0, _ = kv.read(0, 1, 11)
    k1, _ = kv.read(1, 1, 11)
    assert torch.allclose(k0, k1, atol=1e-5)


class ReplayCost(CostModel):
    """Iteration times from a list, in order (a real run's measurements)."""

    def __init__(self, times, **_):
        self.times = list(times)

    def iteration_s(self, b: BatchShape) -> float:
        return self.times.pop(0)


def _trace(res):
    """The run's decisions and their times: every record but the batch durations' source."""
    return [(t, k, s) for t, k, s, _ in res.log]


@pytest.mark.parametrize("extra", [[], ["batching=chunked_prefill", "batching.max_num_batched_tokens=16"],
                                   ["serving.num_kv_blocks=12", "batching.preemption=swap"],
                                   ["serving.num_kv_blocks=12", "batching.preemption=recompute"]])
def test_real_run_is_the_simulation_with_measured_times(extra):
    """Simulating the same config with the real run's measured iteration times reproduces the
    real run's event log exactly: the real backend ran the policy's decisions, nothing else."""
    real = real_run([*SMALL, *extra])
    rep = real.extra["replicas"][0]
    assert isinstance(rep, ExecutingReplica) and rep.measured
    times = [t for _, t in rep.measured]
    assert all(t > 0 for t in times)
    req = real.tables["requests"]
    assert (req["first_token_s"] > req["arrival_s"]).all() and (req["finish_s"] >= req["first_token_s"]).all()
    cfg = compose(["experiment=serving_real", *SMALL, *extra, "serving.fast_forward=false", "seed=0"])
    cfg.cost = {"_target_": "tests.torch_backend.test_torch_inference.ReplayCost", "_partial_": True,
               "times": times}
    sim = simulate(cfg, seed=0)
    assert _trace(sim) == _trace(real)
    assert sim.tables["requests"].equals(real.tables["requests"])


def test_generated_tokens_do_not_depend_on_batching_or_preemption():
    """Greedy decoding of the same prompts gives the same tokens whether the request ran alone
    in a roomy cache, batched (continuous, static, Orca, chunked prefill), or was preempted (recompute re-prefills its tokens; swap copies
    its blocks out and back): the KV cache the model reads is right in every case."""
    runs = {name: real_run([*SMALL, *extra]) for name, extra in {
        "roomy": ["batching.max_num_seqs=1"],
        "batched": [],
        "static": ["batching=static"],  # finished rows ride along as padding
        "orca": ["batching=orca"],
        "chunked": ["batching=chunked_prefill", "batching.max_num_batched_tokens=16"],
        "recompute": ["serving.num_kv_blocks=10", "batching.preemption=recompute"],
        "swap": ["serving.num_kv_blocks=10", "batching.preemption=swap"],
    }.items()}
    outs = {k: r.extra["replicas"][0].outputs for k, r in runs.items()}
    assert runs["recompute"].tables["requests"]["preemptions"].sum() > 0
    assert runs["swap"].tables["requests"]["preemptions"].sum() > 0
    assert len(outs["roomy"]) == 8
    for k in outs:
        assert outs[k] == outs["roomy"], k


def test_block_tables_are_disjoint_arena_slices(monkeypatch):
    """Every iteration, the live sequences' blocks are distinct, block-aligned slices inside
    the arena, and each holds its sequence's computed tokens."""
    seen = []

    def check(self, shape, tokens):
        tabs = [self.kv.block_offsets(r) for r in self.table.rid]
        flat = [o for t in tabs for o in t]
        assert len(flat) == len(set(flat))
        assert all(o % self.arena_kv.block_bytes == 0 and o + self.arena_kv.block_bytes <= self.arena_kv.arena.numel()
                   for o in flat)
        for t, c, x in zip(tabs, self.table.computed, tokens):
            assert len(t) * self.kv.block_tokens >= c + x
        seen.append(len(flat))
        return orig(self, shape, tokens)

    orig = ExecutingReplica._iteration_s
    monkeypatch.setattr(ExecutingReplica, "_iteration_s", check)
    real_run([*SMALL, "serving.num_kv_blocks=12"])
    assert seen and max(seen) > 1


def test_prefix_caching_is_refused_clearly():
    with pytest.raises(ValueError, match="prefix_caching"):
        real_run([*SMALL, "serving.prefix_caching=true"])


def test_fitted_cost_recovers_a_linear_model():
    shapes = [BatchShape(p, p * (p + 1) // 2, p, d, d * 10 + d * d, s, s) for p, d, s in
              [(0, 1, 1), (0, 4, 4), (16, 0, 1), (64, 2, 3), (32, 8, 9), (128, 0, 2), (8, 3, 4)]]
    true = FittedCost([1e-3, 1e-4, 2e-5, 3e-5, 1e-7, 4e-7])
    fit = FittedCost.fit(shapes, [true.iteration_s(b) for b in shapes])
    for b in shapes:
        assert fit.iteration_s(b) == pytest.approx(true.iteration_s(b), rel=1e-6)


def test_compare_inference_reports_errors():
    df, s = compare_inference([*SMALL, "workload.rate_per_s=200"], repeats=1)
    assert len(df) == 8 and (df["ttft_real_s"] > 0).all() and (df["tpot_sim_s"] > 0).all()
    assert s["ttft_mape"] >= 0 and s["n_iterations_real"] > 0 and s["n_profile_iterations"] > 0


def test_out_of_memory_fails_the_batch_alone(monkeypatch):
    """A real OOM in one iteration fails the requests in that batch (here request 3, alone in
    its batches); the others complete and the KV pool ends empty."""
    orig = TinyLM.forward

    def forward(self, tokens, seqs, kv):
        if any(sid == 3 for sid, _, _ in seqs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return orig(self, tokens, seqs, kv)

    monkeypatch.setattr(TinyLM, "forward", forward)
    res = real_run([*SMALL, "batching.max_num_seqs=1"])
    req = res.tables["requests"].set_index("request")
    assert req.loc[3, "fail_reason"].startswith("oom: CUDA out of memory")
    assert req.drop(index=3)["fail_reason"].isna().all() and req.drop(index=3)["finish_s"].notna().all()
    rep = res.extra["replicas"][0]
    assert rep.kv.free_blocks == rep.kv.total_blocks and rep.outstanding == 0
    assert 3 not in rep.outputs and len(rep.outputs) == 7
