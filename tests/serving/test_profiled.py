"""The profile-driven cost model: exact costs of hand-built batches on a tiny hand-written
profile, the interpolation rules, the TP and EP timing rules, and the shipped profiles."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.serving.profiled import (
    SKEW_AXES, AttentionTable, ProfileError, ProfiledCost, available_profiles, bracket, expected_active,
    expected_max_normal, find_profile, graph_padding, load_meta, pooled_alpha)
from llmos_sim.serving.specs import LLAMA31_8B, QWEN3_30B_A3B, QWEN3_32B, RTX4090, RTX_PRO_6000, GpuSpec, ModelSpec

TINY = ModelSpec("tiny", 2, 64, 4, 4, 256, 1000)
TINY_MOE = ModelSpec("tinymoe", 2, 64, 4, 4, 256, 1000, experts=4, active_experts=2, expert_intermediate=32)
GPU = GpuSpec("test-gpu", 1e12, 1e12, 10**12, link_bw_bytes_s=1e9, host_bw_bytes_s=1e9)


def attn_formula(pc, kp, nd, kd):
    """The tiny profile's attention times: bilinear in (pc, kp) and (nd, kd), so multilinear
    interpolation inside the grid reproduces it exactly."""
    return 5 + 0.5 * pc + 0.01 * pc * kp + 0.1 * nd * kd


def write_profile(root, model="test/tiny", tps=(1,), moe=False):
    """A hand-written profile: dense(T) = 2T + 33 µs for 2 layers, per_seq(S) = 54 + S µs,
    attention :func:`attn_formula`, MoE 10 + 2·tokens + 5·experts µs."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.yaml").write_text(f"model: {model}\ntp_degrees: {list(tps)}\n")
    for tp in tps:
        d = root / f"tp{tp}"
        d.mkdir()
        (d / "dense.csv").write_text("layer,tokens,time_us\n" + "".join(
            f"{n},{t},{v}\n" for n, pts in (("qkv_proj", ((1, 10), (100, 109))), ("layernorm", ((1, 2), (100, 2))),
                                            ("embedding", ((1, 3), (100, 3))), ("final_layernorm", ((1, 4), (100, 4))))
            for t, v in pts))
        (d / "per_sequence.csv").write_text("layer,sequences,time_us\nlm_head,1,50\nlm_head,10,59\nsampler,1,5\nsampler,10,5\n")
        rows = []
        for nd in (1, 4):
            for kd in (16, 64):
                rows.append((0, 0, nd, kd))
        for pc in (16, 32):
            for kp in (0, 32):
                rows.append((pc, kp, 0, 0))
                for nd in (1, 4):
                    for kd in (16, 64):
                        rows.append((pc, kp, nd, kd))
        (d / "attention.csv").write_text("prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n" + "".join(
            f"{pc},{kp},{nd},{kd},{attn_formula(pc, kp, nd, kd)}\n" for pc, kp, nd, kd in rows))
        if moe and tp == 1:
            (d / "moe.csv").write_text("tokens,activated_experts,time_us\n" + "".join(
                f"{t},{e},{10 + 2 * t + 5 * e}\n" for t in (1, 8) for e in (2, 4)))
    return root


@pytest.fixture
def tiny_profile(tmp_path):
    return write_profile(tmp_path / "tiny", tps=(1, 2))


@pytest.fixture
def moe_profile(tmp_path):
    return write_profile(tmp_path / "tinymoe", model="test/tinymoe", moe=True)


# -- interpolation ---------------------------------------------------------------------------
def test_bracket_rules():
    xs = [0, 16, 32]
    assert bracket(xs, 16) == ((1, 1.0),)  # a grid point: exact
    assert bracket(xs, 24) == ((1, 0.5), (2, 0.5))  # between: linear
    assert bracket(xs, -3) == ((0, 1.0),)  # below: clamped
    assert bracket(xs, 48) == ((1, -1.0), (2, 2.0))  # above: extrapolated from the last two
    assert bracket([5], 99) == ((0, 1.0),)


def test_attention_at_grid_points_is_the_measured_value(tiny_profile):
    c = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    for args in ((0, 0, 1, 16), (0, 0, 4, 64), (16, 0, 0, 0), (32, 32, 0, 0), (32, 32, 4, 64), (16, 0, 1, 16)):
        assert c.attention(*args) == pytest.approx(attn_formula(*args), abs=1e-12)


def test_attention_between_grid_points_is_multilinear(tiny_profile):
    a = ProfiledCost(TINY, GPU, profile=str(tiny_profile)).attention
    for args in ((24, 16, 2, 40), (20, 8, 3, 50), (0, 0, 2, 30), (30, 1, 0, 0)):
        assert a(*args) == pytest.approx(attn_formula(*args), abs=1e-9)


def test_attention_clamps_below_and_extrapolates_above(tiny_profile):
    a = ProfiledCost(TINY, GPU, profile=str(tiny_profile)).attention
    assert a(8, 0, 0, 0) == pytest.approx(attn_formula(16, 0, 0, 0))  # a chunk below the smallest: clamped
    assert a(0, 0, 2, 8) == pytest.approx(attn_formula(0, 0, 2, 16))  # decode length below the smallest: clamped
    assert a(0, 0, 8, 16) == pytest.approx(attn_formula(0, 0, 8, 16))  # 8 rows: linear from 1 and 4 (exact here)
    assert a(64, 0, 0, 0) == pytest.approx(attn_formula(64, 0, 0, 0))  # a chunk above the largest: linear
    assert a(0, 0, 1, 128) == pytest.approx(attn_formula(0, 0, 1, 128))
    assert a(0, 0, 0, 0) == 0.0


def test_nested_grids_use_each_slices_own_points(tmp_path):
    """A slice measured at other KV points than its neighbour is bracketed on its own."""
    import pandas as pd
    rows = [(0, 0, 1, 16, 10.0), (0, 0, 1, 64, 40.0), (16, 0, 0, 0, 7.0), (16, 100, 0, 0, 17.0),
            (24, 0, 0, 0, 8.0), (24, 50, 0, 0, 13.0), (24, 200, 0, 0, 28.0)]
    t = AttentionTable(pd.DataFrame(rows, columns=["prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"]))
    # pc 20 is halfway between 16 and 24; kp 50: 12 on the pc=16 slice (0..100), 13 on pc=24's own point
    assert t(20, 50, 0, 0) == pytest.approx(0.5 * 12.0 + 0.5 * 13.0)
    assert t(0, 0, 1, 40) == pytest.approx(25.0)


# -- whole iterations ------------------------------------------------------------------------
def test_exact_cost_of_hand_built_batches(tiny_profile):
    c = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    # dense(T) = 2 layers · (qkv 9+T + 2 · layernorm 2) + embedding 3 + final norm 4 = 2T + 33
    assert c.dense(26) == pytest.approx(85.0)
    assert c.dense(250) == pytest.approx(533.0)  # beyond the grid: linear
    assert c.per_seq(3) == pytest.approx(57.0)  # lm_head 49+S + sampler 5
    # one chunk of 24 tokens after 16 cached (684 pairs) + 2 decode rows of 40 tokens (80 in all)
    b = BatchShape(n_prefill_tokens=24, prefill_attn_pairs=24 * 16 + 24 * 25 // 2, prefill_ctx_tokens=40,
                   n_decode_tokens=2, decode_ctx_tokens=80, n_seqs=3, n_logits=3)
    assert c.attention_args(b) == (24, 16.0, 2, 40.0)
    attn = 5 + 0.5 * 24 + 0.01 * 24 * 16 + 0.1 * 2 * 40  # 28.84 µs
    assert c.iteration_s(b) == pytest.approx((85 + 57 + 2 * attn) * 1e-6, rel=1e-12)
    # pure decode of 3 rows of 40: 39 + 57 + 2 · 17 µs
    d = BatchShape(0, 0, 0, 3, 120, 3, 3)
    assert c.iteration_s(d) == pytest.approx(130e-6, rel=1e-12)
    assert c.iteration_s(BatchShape()) == 0.0
    # swap traffic rides on top, over the host link
    assert c.iteration_s(BatchShape(0, 0, 0, 3, 120, 3, 3, swap_bytes=1000)) == pytest.approx(130e-6 + 1e-6)


def test_several_prefill_chunks_map_to_one_chunk_of_the_same_work(tiny_profile):
    c = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    # two chunks: 8 tokens after 40 cached, 8 after 8: pairs 8·40+36 + 8·8+36 = 456; Q = 16
    b = BatchShape(16, 8 * 40 + 36 + 8 * 8 + 36, 64, 0, 0, 2, 0)
    q, kp, n, kd = c.attention_args(b)
    assert (q, n) == (16, 0) and kp == pytest.approx(456 / 16 - 17 / 2)  # 20 cached: 16·20 + 136 = 456 pairs
    # two fresh prompts of 8: 72 pairs < 16·17/2: one fresh chunk of Q' tokens, Q'(Q'+1)/2 = 72
    q, kp, _, _ = c.attention_args(BatchShape(16, 72, 16, 0, 0, 2, 2))
    assert kp == 0.0 and q * (q + 1) / 2 == pytest.approx(72.0)


def test_tp_rule_two_allreduces_per_layer(tiny_profile):
    c = ProfiledCost(TINY, GPU, tp=2, profile=str(tiny_profile), allreduce_latency_s=10e-6, link_bw_bytes_s=1e9)
    # 26 tokens · 64 hidden · 2 bytes = 3328 bytes; ring over 2: 2·(2−1)/2 · 3328 B / 1 GB/s = 3.328 µs
    assert c.allreduce_us(26) == pytest.approx(10 + 3.328)
    b = BatchShape(24, 24 * 16 + 300, 40, 2, 80, 3, 3)
    one = ProfiledCost(TINY, GPU, tp=1, profile=str(tiny_profile)).iteration_s(b)
    assert c.iteration_s(b) == pytest.approx(one + 2 * 2 * 13.328e-6, rel=1e-12)
    with pytest.raises(ProfileError, match="no tp4/"):
        ProfiledCost(TINY, GPU, tp=4, profile=str(tiny_profile))


def test_moe_without_expert_parallelism(moe_profile):
    c = ProfiledCost(TINY_MOE, GPU, profile=str(moe_profile))
    # 3 tokens, top-2 of 4 experts: 4·(1 − 0.5³) = 3.5 experts active; 10 + 2·3 + 5·3.5 µs
    assert expected_active(3, 4, 2) == pytest.approx(3.5)
    assert c.moe_us(3) == pytest.approx(33.5)
    assert c.iteration_s(BatchShape(0, 0, 0, 3, 120, 3, 3)) == pytest.approx((39 + 57 + 2 * 17 + 2 * 33.5) * 1e-6)


def test_ep_rule_the_slowest_rank_sets_the_pace(moe_profile):
    c = ProfiledCost(TINY_MOE, GPU, profile=str(moe_profile), dp=2, expert_parallel=True,
                     allreduce_latency_s=10e-6, link_bw_bytes_s=1e9)
    # each of the 2 ranks carries 3 tokens: 6 gathered, 12 (token, expert) pairs; a rank gets
    # 6 ± √3, the slower of two 6 + √3/√π pairs = (6 + √3/√π)/2 tokens of 2 experts' work on
    # 2·(1 − 0.5⁶) = 1.97 local experts (clamped to the profile's 2)
    assert expected_max_normal(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-9)
    worst_tokens = (6 + math.sqrt(3) / math.sqrt(math.pi)) / 2
    experts = 10 + 2 * worst_tokens + 5 * 2
    comm = 2 * (10 + 0.5 * 6 * 128 / 1e9 * 1e6)  # all-gather + reduce-scatter of 6 tokens' activations
    assert c.moe_us(3) == pytest.approx(experts + comm, rel=1e-9)
    assert c.iteration_s(BatchShape(0, 0, 0, 3, 120, 3, 3)) == pytest.approx(
        (39 + 57 + 2 * 17 + 2 * (experts + comm)) * 1e-6, rel=1e-9)
    # a rank never gets more pairs than its experts can take
    assert expected_max_normal(1) == 0.0


def test_moe_profile_and_model_must_agree(tiny_profile, moe_profile):
    with pytest.raises(ProfileError, match="no moe.csv"):
        ProfiledCost(ModelSpec("tiny", 2, 64, 4, 4, 256, 1000, experts=4, active_experts=2, expert_intermediate=32),
                     GPU, profile=str(tiny_profile))
    with pytest.raises(ProfileError, match="has no experts"):
        ProfiledCost(ModelSpec("tinymoe", 2, 64, 4, 4, 256, 1000), GPU, profile=str(moe_profile))
    with pytest.raises(ProfileError, match="is not"):
        ProfiledCost(LLAMA31_8B, GPU, profile=str(tiny_profile))


def test_bad_profile_files_are_named(tmp_path):
    root = write_profile(tmp_path / "bad")
    (root / "tp1" / "dense.csv").write_text("layer,tokens,time_us\nqkv_proj,1,abc\n")
    with pytest.raises(ProfileError, match=r"dense.csv:2: column 'time_us'"):
        ProfiledCost(TINY, GPU, profile=str(root))
    with pytest.raises(ProfileError, match="no meta.yaml"):
        ProfiledCost(TINY, GPU, profile=str(tmp_path / "nowhere"))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), ctx=st.integers(1, 20000), k=st.integers(2, 400), lag=st.integers(0, 3),
       limit=st.one_of(st.just(math.inf), st.floats(0.001, 10.0)), skew=st.one_of(st.none(), st.integers(0, 9000)),
       low=st.floats(0.0, 1.0))
def test_decode_spans_match_iterations(n, ctx, k, lag, limit, skew, low):
    """A span's closed form / vectorised durations are the iterations' own, one by one, with
    and without rows of unequal length (``spread``: longest, shortest; each grows by 1)."""
    c = _shipped()
    g = max(0, n - lag)
    ctx = n * ctx
    spread = None
    if skew is not None and n > 1:
        hi = ctx // n + skew + 1
        spread = (hi, max(1, int((ctx // n) * low)))
    shapes = [BatchShape(0, 0, 0, n, ctx + j * g, n, n, 0, *((spread[0] + j, spread[1] + j) if spread else (0, 0)))
              for j in range(k)]
    durs = np.array([c.iteration_s(b) for b in shapes])
    assert np.allclose(c.decode_span_s(n, ctx, k, g, spread), durs, rtol=1e-12, atol=0)
    got = c.decode_span(n, ctx, k, g, 0.0, limit, spread)
    kk = k
    if durs.sum() - durs[-1] >= limit:
        kk = max(1, int(np.searchsorted(np.cumsum(durs) - durs, limit, side="left")))
    assert got[0] == kk and got[1] == pytest.approx(durs[:kk].sum(), rel=1e-9)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 300), mean=st.integers(1, 20000), k=st.integers(1, 300), lag=st.integers(0, 3),
       skew=st.integers(1, 9000), low=st.floats(0.0, 1.0))
def test_decode_span_s_takes_alpha_once_per_bucket_exactly(n, mean, k, lag, skew, low):
    """A span whose iterations stay in one ``alpha`` bucket takes that ``alpha`` once: the same
    floats, bit for bit, as looking it up for every iteration (the vectorised formula)."""
    c = _shipped()
    g, ctx = max(0, n - lag), n * mean
    spread = (mean + skew, max(1, int(mean * low)))
    j = np.arange(k, dtype=np.float64)
    kd = (ctx + g * j) / n
    xs, ys, slope, fixed = c._decode_curve(n)
    attn = c._on_curve(xs, ys, slope, kd)
    longest, shortest = spread[0] + j, spread[1] + j
    alpha = c.skew.decode_vec(n, (kd - shortest) / (spread[0] - spread[1]), longest)
    t_max = c._on_curve(xs, ys, slope, longest)
    want = np.where((alpha != 0.0) & (t_max > attn), attn + alpha * (t_max - attn), attn) + fixed
    assert np.array_equal(c.decode_span_s(n, ctx, k, g, spread), want)


@settings(max_examples=300, deadline=None)
@given(a=st.one_of(st.just(0.0), st.floats(1e-6, 1.0)), b=st.one_of(st.just(0.0), st.floats(1e-12, 1e-2)),
       k=st.integers(1, 5000), start=st.floats(0.0, 100.0), room=st.floats(-1.0, 200.0))
def test_one_line_span_is_span_of_lines(a, b, k, start, room):
    """The decode span's one-line closed form returns exactly what the general one (the
    two-line search with the second line never on top) does."""
    from llmos_sim.serving.cost import _span_of_two_lines, span_of_line
    assert span_of_line(a, b, k, start, start + room) == _span_of_two_lines(a, b, a, b, k, k, start, start + room)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 600), sr=st.floats(-0.5, 1.5), longest=st.integers(1, 40000))
def test_decode_alpha_lookups_agree(n, sr, longest):
    """The three pure-decode ``alpha`` lookups (by bucket labels, the dense grid, and the per-row-count
    lists the closed-form spans use) give the same value, bucket edges included."""
    sk = _shipped().skew
    for x in (sr, 0.05, 0.4, 1.0):  # 0.05, 0.4: skew-rate bucket edges
        a = sk(0, n, x, longest, 0)
        assert sk.decode_alpha(n, x, longest) == a == sk.row_alpha(sk.decode_row(n), x, longest)
        i, j = sk.row_bucket(x, longest)
        assert sk.decode_row(n)[i][j] == a
        assert sk.row_alpha(sk.decode_row(n), x, 4096) == sk(0, n, x, 4096, 0)  # a longest-row edge


def test_unequal_decode_rows_cost_more_by_the_profiles_alpha():
    """Pure decode of 64 rows, mean 1024: the longest at 4096 adds alpha · (t(4096) − t(1024))
    per layer, alpha from the profile's bucket (n<=64, skew rate 0.3 → sr<=40%, kvB<=4k, kp=0)."""
    import pandas as pd
    from llmos_sim.serving.profiled import PROFILES_DIR
    c = _shipped()
    fit = pd.read_csv(PROFILES_DIR / "RTXPRO6000" / "Llama-3.1-8B" / "tp1" / "skew_fit.csv.gz")
    row = fit[(fit.pc == 0) & (fit.n_label == "n<=64") & (fit.skew_rate_label == "sr<=40%")
              & (fit.kv_big_label == "kvB<=4k") & (fit.kp_label == "kp=0")]
    alpha = float(row.alpha.iloc[0])
    even = c.iteration_s(BatchShape(0, 0, 0, 64, 64 * 1024, 64, 64))
    # shortest 1024 − 0.3/0.7 · 3072 = −292: take shortest 10 → skew rate (1024 − 10)/(4086) = 0.248
    uneven = c.iteration_s(BatchShape(0, 0, 0, 64, 64 * 1024, 64, 64, 0, 4096, 10))
    t_mean, t_max = c.attention(0, 0, 64, 1024), c.attention(0, 0, 64, 4096)
    assert c.skew(0, 64, 1014 / 4086, 4096, 0) == alpha
    assert uneven - even == pytest.approx(32 * alpha * (t_max - t_mean) * 1e-6, rel=1e-9)


def test_pooled_alpha_is_the_least_squares_fit():
    """alpha minimising Σ (ds − alpha·dm)²: Σ ds·dm / Σ dm² (ds = t_skew − t_mean, dm = t_max − t_mean)."""
    import pandas as pd
    df = pd.DataFrame({"t_mean_us": [10.0, 20.0, 5.0], "t_max_us": [12.0, 24.0, 5.0], "t_skew_us": [11.0, 21.0, 7.0]})
    assert pooled_alpha(df) == pytest.approx((1 * 2 + 1 * 4 + 0) / (4 + 16))
    assert pooled_alpha(df.iloc[2:]) == 0.0  # no row with t_max != t_mean


def test_rtx4090_uses_its_own_unequal_length_measurements():
    """The RTX 4090 profile's meta.yaml has no skew_fit section, but its folder holds skew.csv and
    its per-bucket fit: the profiler's standard bins, alpha_default the pooled fit of skew.csv, and
    each bucket's alpha that file's own least-squares fit of its rows."""
    import pandas as pd
    from llmos_sim.serving.profiled import PROFILES_DIR
    folder = PROFILES_DIR / "RTX4090" / "Llama-3.1-8B"
    assert not (load_meta(folder).get("skew_fit") or {}).get("enabled")
    c = ProfiledCost(LLAMA31_8B, RTX4090)
    assert c.wants_decode_spread and c.skew is not None
    raw = pd.read_csv(folder / "tp1" / "skew.csv.gz")
    assert c.skew.alpha_default == pooled_alpha(raw) == pytest.approx(0.0224, abs=5e-5)
    # one bucket, refitted from the measurements: pure decode, 9–16 rows, skew rate in (5 %, 15 %], longest <= 4k
    sel = raw[(raw.pc == 0) & (raw.kp == 0) & (raw.n > 8) & (raw.n <= 16) & (raw.ratio > 0.05) & (raw.ratio <= 0.15)
              & (raw.kv_big > 1024) & (raw.kv_big <= 4096)]
    assert len(sel) > 0
    dm, ds = sel.t_max_us - sel.t_mean_us, sel.t_skew_us - sel.t_mean_us
    assert c.skew(0, 16, 0.125, 4096, 0) == pytest.approx(float((ds * dm).sum() / (dm * dm).sum()), abs=5e-5)
    # the standard bins are those the RTX PRO 6000 profiles state
    assert load_meta(PROFILES_DIR / "RTXPRO6000" / "Llama-3.1-8B")["skew_fit"]["bucket_axes"] | {"pc": None} == (
        SKEW_AXES | {"pc": None})


def test_rtx4090_correction_reproduces_its_own_unequal_length_measurements():
    """At every batch skew.csv measured (n rows, nb of them at kv_big and the rest at kvs, with or
    without a prefill chunk), the model's corrected attention time over its time at the mean
    length matches the measured t_skew / t_mean: no bias at any measured row count (pure decode:
    |bias| < 1 % per row count; all 13,009 measurements: < 0.5 %). Without the correction the
    pure-decode batches are 5.1 % short on average."""
    import pandas as pd
    from llmos_sim.serving.profiled import PROFILES_DIR
    c = ProfiledCost(LLAMA31_8B, RTX4090)
    raw = pd.read_csv(PROFILES_DIR / "RTX4090" / "Llama-3.1-8B" / "tp1" / "skew.csv.gz")
    err, plain = [], []
    for r in raw.itertuples():
        t_mean, t_max = c.attention(r.pc, r.kp, r.n, r.kv_mean), c.attention(r.pc, r.kp, r.n, r.kv_big)
        a = c.skew(r.pc, r.n, r.nb / r.n, r.kv_big, r.kp)
        model = 1 + a * (t_max / t_mean - 1) if t_max > t_mean else 1.0
        err.append(model / (r.t_skew_us / r.t_mean_us) - 1)
        plain.append(1 / (r.t_skew_us / r.t_mean_us) - 1)
    d = raw.assign(err=err, plain=plain)
    pure = d[d.regime == "pure"]
    assert pure.groupby("n").err.mean().abs().max() < 0.01
    assert abs(d.err.mean()) < 0.005
    assert pure.plain.mean() < -0.04


def test_cuda_graph_padding_prices_token_wise_layers_at_the_next_size(tiny_profile):
    """Sizes 1, 2, 4, 8: a batch of 3 tokens runs dense layers at 4, a batch of 9 (beyond the
    largest) unpadded; the LM head / sampler and attention see the real rows."""
    assert graph_padding([8, 1, 4, 2]) == [0, 1, 2, 4, 4, 8, 8, 8, 8]
    assert graph_padding(None) is None
    with pytest.raises(ValueError, match="cuda_graph_sizes"):
        graph_padding([0, 4])
    eager = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    graphs = ProfiledCost(TINY, GPU, profile=str(tiny_profile), cuda_graph_sizes=[1, 2, 4, 8])
    d3 = BatchShape(0, 0, 0, 3, 120, 3, 3)  # pure decode, 3 rows of 40: dense(3) = 39 → dense(4) = 41 µs
    assert graphs.iteration_s(d3) - eager.iteration_s(d3) == pytest.approx(2e-6, rel=1e-9)
    d9 = BatchShape(0, 0, 0, 9, 360, 9, 9)
    assert graphs.iteration_s(d9) == eager.iteration_s(d9)
    # decode spans price the same padded iterations
    durs = graphs.decode_span_s(3, 120, 5, 3)
    assert durs.tolist() == pytest.approx([graphs.iteration_s(BatchShape(0, 0, 0, 3, 120 + 3 * j, 3, 3))
                                           for j in range(5)], rel=1e-12)


_CACHE = {}


def _shipped():
    if "c" not in _CACHE:
        _CACHE["c"] = ProfiledCost(LLAMA31_8B, RTX_PRO_6000, profile="RTXPRO6000/Llama-3.1-8B")
    return _CACHE["c"]


# -- caches and one-at-a-time paths: the same floats as what they stand for --------------------
def test_cached_iteration_prices_are_the_computed_ones(tiny_profile):
    """A batch shape priced again (from the iteration cache) costs exactly what a fresh cost
    model computes; swap traffic rides on the cached price; a swap-only batch costs the
    overhead and the swap."""
    shapes = [BatchShape(24, 24 * 16 + 24 * 25 // 2, 40, 2, 80, 3, 3), BatchShape(0, 0, 0, 3, 120, 3, 3),
              BatchShape(16, 136, 16, 0, 0, 1, 1)]
    c = ProfiledCost(TINY, GPU, profile=str(tiny_profile), overhead_s=1e-3)
    first = [c.iteration_s(b) for b in shapes]
    assert [c.iteration_s(b) for b in shapes] == first
    assert [ProfiledCost(TINY, GPU, profile=str(tiny_profile), overhead_s=1e-3).iteration_s(b) for b in shapes[::-1]] \
        == first[::-1]
    assert first[1] == pytest.approx(130e-6 + 1e-3, rel=1e-12)  # 39 + 57 + 2 · 17 µs, plus the overhead
    assert c.iteration_s(BatchShape(0, 0, 0, 3, 120, 3, 3, swap_bytes=1000)) == first[1] + 1000 / GPU.host_bw_bytes_s
    assert c.iteration_s(BatchShape(swap_bytes=1000)) == 1e-3 + 1000 / GPU.host_bw_bytes_s
    assert c.iteration_s(BatchShape()) == 0.0


def test_pure_decode_attention_is_the_tables_own_sum(tiny_profile):
    """The pure-decode lookup (its row brackets kept per row count) returns the attention
    table's own value, bit for bit, on the hand-built grid and on a shipped one."""
    for table in (ProfiledCost(TINY, GPU, profile=str(tiny_profile)).attention, _shipped().attention):
        for n in (1, 2, 3, 4, 8, 17, 64, 300):
            for kd in (1, 8, 16, 16.5, 40, 64, 100.25, 5000, 40000):
                assert table.decode(n, kd) == table(0, 0, n, kd)
                assert table.decode(n, kd) == table.decode(n, kd)  # (again, from the kept brackets)
    assert ProfiledCost(TINY, GPU, profile=str(tiny_profile)).attention.decode(2, 40) == pytest.approx(13.0)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), mean=st.integers(1, 30000), over=st.integers(0, 9000), low=st.floats(0.0, 1.0))
def test_pure_decode_iteration_is_the_general_lookup(n, mean, over, low):
    """A pure-decode iteration's attention (the table's pure-decode sum, ``alpha`` from the
    row count's list) is the general lookup's: the attention table at the mean, corrected by
    the bucket-label ``alpha`` towards the longest row."""
    c = _shipped()
    ctx = n * mean + (mean % n)
    kd = ctx / n
    hi, lo = mean + over, max(1, int(mean * low))
    want = c.attention(0, 0.0, n, kd)
    if n > 1 and hi > kd:
        want = c._skewed(want, 0, 0.0, n, kd, hi, lo)
    assert c._decode_attention_us(n, ctx, hi, lo) == want


@settings(max_examples=300, deadline=None)
@given(xs=st.lists(st.floats(1e-6, 1e3), min_size=1, max_size=600))
def test_array_sum_is_numpys(xs):
    """The pairwise sum written out is numpy's float64 sum, bit for bit, at every length."""
    from llmos_sim.serving.profiled import _array_sum
    assert _array_sum(xs, 0, len(xs)) == float(np.array(xs).sum())
    assert _array_sum([0.5] + xs, 1, len(xs)) == float(np.array(xs).sum())


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 300), mean=st.integers(1, 20000), k=st.integers(1, 300), lag=st.integers(0, 3),
       skew=st.one_of(st.none(), st.integers(0, 9000)), low=st.floats(0.0, 1.0),
       limit=st.one_of(st.just(math.inf), st.floats(0.0, 3.0)))
def test_short_spans_priced_one_by_one_are_the_vectorised_ones(n, mean, k, lag, skew, low, limit):
    """A span the closed form cannot price, taken one iteration at a time in Python, has the
    vectorised durations, total and cut (numpy's cumulative starts), bit for bit."""
    c = _shipped()
    g, ctx = max(0, n - lag), n * mean + (mean % n)
    spread = None if skew is None or n == 1 else (mean + skew + 1, max(1, int(mean * low)))
    durs = c.decode_span_s(n, ctx, k, g, spread)
    assert c._span_durations(n, ctx, k, g, spread) == durs.tolist()
    kk = k
    if float(durs.sum()) - float(durs[-1]) >= limit:
        kk = max(1, int(np.searchsorted(np.cumsum(durs) - durs, limit, side="left")))
    assert c._span_by_iterations(n, ctx, k, g, 0.0, limit, spread) == (kk, float(durs[:kk].sum()))


# -- shipped profiles ------------------------------------------------------------------------
def test_shipped_profiles_and_lookup_by_preset():
    assert available_profiles() == ["RTX4090/Llama-3.1-8B", "RTXPRO6000/Llama-3.1-8B",
                                    "RTXPRO6000/Qwen3-30B-A3B-Instruct-2507", "RTXPRO6000/Qwen3-32B"]
    assert find_profile("RTX-4090", "Llama-3.1-8B") == "RTX4090/Llama-3.1-8B"
    assert find_profile("RTX-PRO-6000", "Qwen3-30B-A3B") == "RTXPRO6000/Qwen3-30B-A3B-Instruct-2507"
    assert find_profile("H100-SXM", "Llama-3.1-8B") is None
    with pytest.raises(ProfileError, match="no shipped profile"):
        ProfiledCost(LLAMA31_8B, GpuSpec("H100-SXM", 1e15, 3e12, 80 * 2**30))


def test_shipped_profile_at_a_grid_point_is_the_sum_of_its_rows():
    """Pure decode of 64 rows of 1024 tokens on the RTX PRO 6000 profile, by hand from the CSVs."""
    import pandas as pd
    from llmos_sim.serving.profiled import PROFILES_DIR
    d = PROFILES_DIR / "RTXPRO6000" / "Llama-3.1-8B" / "tp1"
    dense = pd.read_csv(d / "dense.csv.gz").set_index(["layer", "tokens"])["time_us"]
    per = pd.read_csv(d / "per_sequence.csv.gz").set_index(["layer", "sequences"])["time_us"]
    att = pd.read_csv(d / "attention.csv.gz").set_index(["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"])["time_us"]
    layer = sum(dense[(n, 64)] * (2 if n == "layernorm" else 1) for n in
                ("qkv_proj", "rotary_emb", "o_proj", "layernorm", "gate_up_proj", "act_fn", "down_proj"))
    want = 32 * layer + dense[("embedding", 64)] + dense[("final_layernorm", 64)] + per[("lm_head", 64)] \
        + per[("sampler", 64)] + 32 * att[(0, 0, 64, 1024)]
    got = _shipped().iteration_s(BatchShape(0, 0, 0, 64, 64 * 1024, 64, 64))
    assert got == pytest.approx(want * 1e-6, rel=1e-12)


@pytest.mark.parametrize("model,tp,kw", [(QWEN3_32B, 2, {}), (QWEN3_30B_A3B, 1, {}), (QWEN3_30B_A3B, 2, {}),
                                         (QWEN3_30B_A3B, 1, {"dp": 2, "expert_parallel": True})])
def test_every_shipped_deployment_prices_batches(model, tp, kw):
    c = ProfiledCost(model, RTX_PRO_6000, tp=tp, **kw)
    small, big = BatchShape(0, 0, 0, 8, 8 * 500, 8, 8), BatchShape(0, 0, 0, 128, 128 * 500, 128, 128)
    assert 0 < c.iteration_s(small) < c.iteration_s(big) < 1.0
    mixed = BatchShape(2000, 2000 * 2001 // 2, 2000, 40, 40 * 800, 41, 40)
    assert c.iteration_s(mixed) > c.iteration_s(BatchShape(0, 0, 0, 40, 40 * 800, 40, 40))


def test_rtx4090_profile_is_tp1_only():
    assert ProfiledCost(LLAMA31_8B, RTX4090).folder.name == "Llama-3.1-8B"
    with pytest.raises(ProfileError, match="no tp2/"):
        ProfiledCost(LLAMA31_8B, RTX4090, tp=2)


def test_cost_group_replaces_serving_cost():
    from llmos_sim.run import compose
    from llmos_sim.serving import simulate
    from llmos_sim.serving.cost import RooflineCost
    base = ["mode=serving", "workload=requests_synthetic", "workload.n=6", "gpu=rtx_pro_6000", "model=qwen3_32b",
            "serving.tp=2"]
    res = simulate(compose(base + ["cost=profiled"]), seed=0)
    cost = res.extra["replicas"][0].cost
    assert isinstance(cost, ProfiledCost) and cost.tp == 2 and cost.folder.name == "Qwen3-32B"
    assert res.summary["n_finished"] == 6
    assert type(simulate(compose(base), seed=0).extra["replicas"][0].cost) is RooflineCost  # unchanged default


def test_new_presets_match_their_configs_and_published_sizes():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from llmos_sim.fidelity import CONFIGS
    for name, preset in (("qwen3_32b", QWEN3_32B), ("qwen3_30b_a3b", QWEN3_30B_A3B)):
        assert instantiate(OmegaConf.load(CONFIGS / "model" / f"{name}.yaml")) == preset
    assert instantiate(OmegaConf.load(CONFIGS / "gpu" / "rtx_pro_6000.yaml")) == RTX_PRO_6000
    assert round(QWEN3_32B.params / 1e9, 1) == 32.8 and QWEN3_32B.head_dim == 128
    assert QWEN3_32B.kv_bytes_per_token == 2 * 64 * 8 * 128 * 2  # 256 KiB
    assert round(QWEN3_30B_A3B.params / 1e9, 1) == 30.5 and QWEN3_30B_A3B.is_moe
    # active per token: attention + router + 8 of 128 experts per layer (embeddings apart)
    assert round(QWEN3_30B_A3B.active_layer_params * 48 / 1e9, 2) == 2.73
    assert QWEN3_30B_A3B.kv_bytes_per_token == 2 * 48 * 4 * 128 * 2  # 96 KiB
    assert LLAMA31_8B.active_layer_params == LLAMA31_8B.layer_params and round(LLAMA31_8B.params / 1e9, 2) == 8.03
    with pytest.raises(ValueError, match="active_experts"):
        ModelSpec("bad", 2, 64, 4, 4, 256, 1000, experts=4, active_experts=8, expert_intermediate=32)


@pytest.mark.parametrize("name", ["RTX4090/Llama-3.1-8B", "RTXPRO6000/Qwen3-32B"])
def test_every_measured_attention_point_is_returned_exactly(name):
    """The nested grids keep every measured row: a lookup at a row's own coordinates returns
    its time (all rows of the shipped tables)."""
    import pandas as pd
    from llmos_sim.serving.profiled import PROFILES_DIR
    df = pd.read_csv(PROFILES_DIR / name / "tp1" / "attention.csv.gz")
    t = AttentionTable(df)
    got = np.array([t(pc, kp, nd, kd) for pc, kp, nd, kd in
                    df[["prefill_chunk", "kv_prefill", "n_decode", "kv_decode"]].itertuples(index=False, name=None)])
    assert np.allclose(got, df["time_us"].to_numpy(), rtol=1e-12, atol=1e-9)


def test_moe_under_tp_shards_experts_or_spreads_them(tmp_path):
    root = write_profile(tmp_path / "moe_tp", model="test/tinymoe", tps=(1, 2), moe=True)  # moe.csv at TP1 only
    # TP without expert parallelism: each rank holds half of every expert → the TP1 time / 2
    c = ProfiledCost(TINY_MOE, GPU, tp=2, profile=str(root))
    assert c.moe_us(3) == pytest.approx(33.5 / 2)
    # TP with expert parallelism (one DP rank): 2 ranks of 2 whole experts, the same 3 tokens
    # on both, no gather; the slower rank's pairs 3 + √1.5/√π of 6, 1.75 experts (clamped to 2)
    e = ProfiledCost(TINY_MOE, GPU, tp=2, profile=str(root), expert_parallel=True)
    worst = (3 + math.sqrt(1.5) / math.sqrt(math.pi)) / 2
    assert e.moe_us(3) == pytest.approx(10 + 2 * worst + 5 * 2, rel=1e-9)


def test_profile_tables_are_read_once_per_file_version(tiny_profile):
    """A second cost model on the same files shares their parsed tables; a changed file is
    read again (its modification time and size are part of the key)."""
    a = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    b = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    assert a.attention is b.attention
    f = tiny_profile / "tp1" / "attention.csv"
    f.write_text(f.read_text().replace("prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n",
                                       "prefill_chunk,kv_prefill,n_decode,kv_decode,time_us\n0,0,2,16,99.5\n"))
    c = ProfiledCost(TINY, GPU, profile=str(tiny_profile))
    assert c.attention is not a.attention
    assert c.attention(0, 0, 2, 16) == 99.5 and a.attention(0, 0, 2, 16) != 99.5
