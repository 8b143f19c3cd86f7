"""Does the profiled cost model reproduce the profile's own measurements? (No run is read.)

    python experiments/gpu_fidelity/profile_check.py   # ~20 s: into results/profile_check.md

1. **The unequal-length correction at every measured point.** ``tp1/skew.csv`` (shipped for
   the RTX 4090 profile only) holds kernel measurements of one attention layer over ``n``
   decode rows, ``nb`` of them at ``kv_big`` tokens and the rest at ``kvs`` (with a prefill
   chunk ``pc`` after ``kp`` cached tokens in the ``mixed`` regime): ``t_skew`` measured,
   ``t_mean`` and ``t_max`` the same batch with every row at the mean / the longest length.
   For each row the model's attention time for the same batch (``ProfiledCost.attention`` at
   the mean, corrected with its ``alpha`` lookup at skew rate ``nb/n`` and longest ``kv_big``)
   is compared with ``t_skew``, each relative to its own uniform-at-the-mean time (the file's
   times are ~3.0× the attention table's at the same points, whatever the profiler summed:
   only ratios are compared). Residuals by regime, rows, longest row, bucket; and the fit's
   residuals as the other profiles' ``meta.yaml`` state theirs (their ``skew.csv`` is not
   shipped: that is all there is to compare on the RTX PRO 6000).
2. **Between measured row counts.** ``skew.csv`` measures rows at 2, 4, …, 256 only (each
   ``n`` bucket of ``skew_fit.csv`` holds one row count, its top edge). Leave one row count
   out and predict its measurements from its neighbours' bucket ``alpha``: the bucket rule
   (the next measured row count up, as a bucket's top stands for the whole bucket) against
   linear interpolation in rows (as every other table of the profile is read); the same for
   the prefill chunk (the model takes the nearest measured one).
3. **Leave-one-out on the attention and dense grids** at the batch sizes the runs use (the
   attention table's decode rows 2–128 by powers of 2, its decode lengths; the dense table's
   token counts): each point held out and interpolated from its neighbours.
4. **What a pure-decode step is made of** at the RTX 4090 run's row counts (the model, its
   token-wise layers padded to the run's CUDA-graph sizes, every row at 1,300 tokens): the
   weight-bound matrix layers, the element-wise ones (``layernorm`` twice, ``rotary_emb``,
   ``act_fn``, ``qk_norm``; ``embedding`` and ``final_layernorm`` once), attention, LM head and
   sampler. The element-wise share bounds what fusing them (the run's engine compiles the model
   with inductor, ``compilation_config.mode`` 3, ``custom_ops`` none; the profile ran eagerly)
   could remove from a step: nothing in the profile or the run measures how much it does.
5. **Where the correction grows with rows**, both GPUs: each row-count bucket's mean
   pure-decode ``alpha`` from ``skew_fit.csv``, beside the row count below which
   FlashAttention 2's split heuristic (vLLM 0.19 runs FlashAttention 2 on both GPUs) splits
   the rows' KV when it runs eagerly, as the profiler ran it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim import fidelity as F
from llmos_sim.serving import profiled as P
from llmos_sim.workload.requests import DATA_DIR
from llmos_sim.serving.specs import LLAMA31_8B, RTX4090, RTX_PRO_6000

HERE = Path(__file__).resolve().parent
GPUS = (("RTX 4090", RTX4090, "RTX4090/Llama-3.1-8B"), ("RTX PRO 6000", RTX_PRO_6000, "RTXPRO6000/Llama-3.1-8B"))


def skew_rows(c: P.ProfiledCost, raw: pd.DataFrame, alpha=None) -> pd.DataFrame:
    """The model's relative excess of each ``skew.csv`` row over uniform-at-the-mean, and the
    measured one; ``alpha(row)`` replaces the model's lookup when given."""
    out = []
    for r in raw.itertuples():
        t_mean = c.attention(r.pc, r.kp, r.n, r.kv_mean)
        t_max = c.attention(r.pc, r.kp, r.n, r.kv_big)
        a = c.skew(r.pc, r.n, r.nb / r.n, r.kv_big, r.kp) if alpha is None else alpha(r)
        pred = t_mean + a * (t_max - t_mean) if t_max > t_mean else t_mean
        out.append((pred / t_mean, r.t_skew_us / r.t_mean_us))
    d = raw.copy()
    d["model"], d["measured"] = np.array(out).T
    d["err"] = d["model"] / d["measured"] - 1
    return d


def summary(d: pd.DataFrame, by: str) -> list[str]:
    g = d.groupby(by)
    lines = [f"| {by} | rows | measured excess | model excess | bias | mean abs. error |", "|---|---|---|---|---|---|"]
    for k, x in g:
        lines.append(f"| {k} | {len(x)} | {100 * (x.measured.mean() - 1):+.2f} % | {100 * (x.model.mean() - 1):+.2f} % | "
                     f"{100 * x.err.mean():+.2f} % | {100 * x.err.abs().mean():.2f} % |")
    return lines


#: leave-one-out along an axis of the correction: (column, what the model does between two
#: measured values, the table header's words for the axis and for that rule)
LOO_AXES = {"n": ("the next count up (bucket rule)", "rows"), "pc": ("the nearest (the model's rule)", "prefill chunk")}


def leave_one_out(c: P.ProfiledCost, raw: pd.DataFrame, axis: str) -> list[str]:
    """Section 2: each interior value of ``axis`` (``n`` or ``pc``) held out and its
    measurements predicted from its neighbours' alphas, by the model's rule for values between
    two measured ones (rows: the next measured count up, as a bucket's top stands for the whole
    bucket; chunk: the nearest, with doubling chunks the one below) and by linear
    interpolation."""
    rule, name = LOO_AXES[axis]
    vals = sorted(v for v in raw[axis].unique() if v > 0)
    sk = c.skew
    lines = [f"| held-out {name} | measurements | bias, {rule} | bias, interpolated | "
             "mean abs. error, model's rule / interpolated |", "|---|---|---|---|---|"]
    for lo, v, hi in zip(vals, vals[1:], vals[2:]):
        sel = raw[raw[axis] == v]
        w = (v - lo) / (hi - lo)
        other = hi if axis == "n" or hi - v < v - lo else lo

        def at(r, x):
            pc, n = (x, r.n) if axis == "pc" else (r.pc, x)
            return sk(pc, n, r.nb / r.n, r.kv_big, r.kp)

        a = skew_rows(c, sel, lambda r: at(r, other))
        b = skew_rows(c, sel, lambda r: (1 - w) * at(r, lo) + w * at(r, hi))
        lines.append(f"| {v} (from {lo}, {hi}) | {len(sel)} | {100 * a.err.mean():+.2f} % | {100 * b.err.mean():+.2f} % | "
                     f"{100 * a.err.abs().mean():.2f} / {100 * b.err.abs().mean():.2f} % |")
    return lines


def grid_loo(c: P.ProfiledCost, tp_dir: Path) -> list[str]:
    """Section 3: pure-decode attention by rows (each length), and the dense layers' sum by tokens."""
    attn = pd.read_csv(tp_dir / "attention.csv.gz")
    pure = attn[(attn.prefill_chunk == 0) & (attn.n_decode > 0) & (attn.kv_decode > 0)]
    lines = ["| pure-decode rows held out | lengths | bias | max abs. error |", "|---|---|---|---|"]
    nds = sorted(pure.n_decode.unique())
    for lo, n, hi in zip(nds, nds[1:], nds[2:]):
        if n > 128:
            break
        t = pure.pivot_table(index="kv_decode", columns="n_decode", values="time_us")
        kv = t.index[t[[lo, n, hi]].notna().all(axis=1)]
        w = (n - lo) / (hi - lo)
        err = ((1 - w) * t.loc[kv, lo] + w * t.loc[kv, hi]) / t.loc[kv, n] - 1
        lines.append(f"| {n} (from {lo}, {hi}) | {len(kv)} ({kv.min()}–{kv.max()}) | {100 * err.mean():+.2f} % | "
                     f"{100 * err.abs().max():.2f} % |")
    lines += ["", "| pure-decode length held out (rows 16–64) | bias | max abs. error |", "|---|---|---|"]
    for n in (16, 32, 64):
        s = pure[pure.n_decode == n].sort_values("kv_decode")
        kv, ts = s.kv_decode.to_numpy(float), s.time_us.to_numpy(float)
        errs = [(np.interp(kv[i], np.delete(kv, i), np.delete(ts, i)) / ts[i] - 1) for i in range(1, len(kv) - 1)
                if kv[i] >= 256]
        lines.append(f"| rows {n}, lengths {int(kv[1:-1][kv[1:-1] >= 256].min())}–{int(kv[-2])} | "
                     f"{100 * np.mean(errs):+.2f} % | {100 * np.max(np.abs(errs)):.2f} % |")
    dense = pd.read_csv(tp_dir / "dense.csv.gz")
    per_layer = [x for x in sorted(set(dense.layer)) if x not in P.ONCE_PER_ITERATION]
    xs, tot = P._layer_sum(dense, "tokens", per_layer, lambda x: P.PER_LAYER_REPEAT.get(x, 1))
    lines += ["", "| dense tokens held out | points | bias | max abs. error |", "|---|---|---|---|"]
    for lo_t, hi_t in ((1, 16), (17, 64), (65, 256), (257, 512)):
        idx = [i for i in range(1, len(xs) - 1) if lo_t <= xs[i] <= hi_t]
        errs = [np.interp(xs[i], np.delete(xs, i), np.delete(tot, i)) / tot[i] - 1 for i in idx]
        lines.append(f"| {lo_t}–{hi_t} | {len(idx)} | {100 * np.mean(errs):+.2f} % | {100 * np.max(np.abs(errs)):.2f} % |")
    return lines


#: token-wise layers whose cost is launch and element-wise work, not a weight read
ELEMENTWISE = ("layernorm", "rotary_emb", "act_fn", "qk_norm", "embedding", "final_layernorm")


def step_parts(c: P.ProfiledCost, tp_dir: Path, kv: int = 1300) -> list[str]:
    """Section 4: a pure-decode step's parts (ms) by rows, padded to the RTX 4090 run's graph sizes."""
    pad = P.graph_padding(F.RunFolder.read(DATA_DIR / "vllm_rtx4090_llama31_8b").cuda_graph_sizes())
    dense = pd.read_csv(tp_dir / "dense.csv.gz")
    L = c.model.layers
    lines = ["| rows (padded) | step | matrix layers | element-wise layers | attention | LM head + sampler | "
             "element-wise share |", "|---|---|---|---|---|---|---|"]
    for n in (16, 20, 24, 28, 32, 40, 48):
        t = pad[n]
        ew = 0.0
        for name in sorted(set(dense.layer) & set(ELEMENTWISE)):
            d = dense[dense.layer == name].sort_values("tokens")
            reps = 1 if name in P.ONCE_PER_ITERATION else L * P.PER_LAYER_REPEAT.get(name, 1)
            ew += reps * P.interp(d.tokens.tolist(), d.time_us.tolist(), t)
        total_dense, attn, seq = c.dense(t), L * c.attention(0, 0, n, kv), c.per_seq(n)
        step = total_dense + attn + seq
        lines.append(f"| {n} ({t}) | {step / 1e3:.2f} | {(total_dense - ew) / 1e3:.2f} | {ew / 1e3:.2f} | "
                     f"{attn / 1e3:.2f} | {seq / 1e3:.2f} | {100 * ew / step:.1f} % |")
    return lines


def fit_residuals(c: P.ProfiledCost, d: pd.DataFrame) -> list[str]:
    """The residuals of the correction over ``skew.csv`` as the profiles' ``meta.yaml`` states
    them for their own fit (|relative error| p50 / p90 / p99 and the signed mean of
    ``t_mean + alpha·(t_max − t_mean)`` against ``t_skew``, the file's own ``t_mean`` and
    ``t_max``), then through the model's attention table (its ratios), beside every stated one."""
    a = np.array([c.skew(r.pc, r.n, r.nb / r.n, r.kv_big, r.kp) for r in d.itertuples()])
    own = np.where(d.t_max_us > d.t_mean_us, d.t_mean_us + a * (d.t_max_us - d.t_mean_us), d.t_mean_us)

    def row(what: str, n: int, rel) -> str:
        q = np.percentile(np.abs(rel), [50, 90, 99])
        return (f"| {what} | {n} | {100 * q[0]:.2f} / {100 * q[1]:.2f} / {100 * q[2]:.1f} % | "
                f"{100 * float(np.mean(rel)):+.2f} % |")

    lines = ["| fit of the unequal-length measurements | measurements | abs. rel. error p50 / p90 / p99 | signed mean |",
             "|---|---|---|---|",
             row("RTX 4090 Llama-3.1-8B TP1, the file's t_mean, t_max", len(d), own / d.t_skew_us - 1),
             row("RTX 4090 Llama-3.1-8B TP1, the model (attention table)", len(d), d.model / d.measured - 1)]
    for meta in sorted(P.PROFILES_DIR.glob("*/*/meta.yaml")):
        per_tp = ((P.load_meta(meta.parent).get("skew_fit") or {}).get("per_tp") or {})
        for tp, st in sorted(per_tp.items()):
            lines.append(f"| {meta.parent.parent.name} {meta.parent.name} TP{tp}, as its meta.yaml states | "
                         f"{st['n_samples']} | {100 * st['rel_err_p50']:.2f} / {100 * st['rel_err_p90']:.2f} / "
                         f"{100 * st['rel_err_p99']:.1f} % | {100 * st['signed_mean']:+.2f} % |")
    return lines


#: streaming multiprocessors (the GPUs' datasheets: AD102 in the RTX 4090, GB202 in the RTX PRO 6000)
SMS = {"RTX 4090": 128, "RTX PRO 6000": 188}


def alpha_by_rows(c: P.ProfiledCost, name: str) -> list[str]:
    """Section 5: the mean pure-decode ``alpha`` of each row-count bucket (no prefill, no
    cached KV; ``skew_fit.csv`` itself), and the row count below which FlashAttention 2's
    split heuristic splits the rows' KV when it runs eagerly (rows × KV heads below
    0.8 × 2 × SMs)."""
    f = P._read(c.folder / f"tp{c.tp}", "skew_fit", ("pc", "n_label", "kp_label", "alpha"),
                text=("n_label", "skew_rate_label", "kv_big_label", "kp_label"), signed=("alpha",))
    labels = c.skew.bins[0][1]
    pure = f[(f.pc == 0) & (f.kp_label == c.skew.bins[3][1][0])].groupby("n_label").alpha.mean()
    have = [lab for lab in labels if lab in pure.index]
    split = 0.8 * 2 * SMS[name] / c.model.kv_heads
    return [f"Pure-decode `alpha` by row count, the bucket mean (FlashAttention 2 splits eagerly below "
            f"{split:.1f} rows here: {SMS[name]} SMs, {c.model.kv_heads} KV heads):", "",
            "| " + " | ".join(have) + " |", "|" + "---|" * len(have),
            "| " + " | ".join(f"{pure[lab]:.3f}" for lab in have) + " |"]


def bucket_bias(c: P.ProfiledCost, d: pd.DataFrame) -> str:
    """The spread of the bias over ``skew_fit.csv``'s buckets (the rows each bucket's alpha covers)."""
    sk = c.skew
    keys = [(min([0, *sk.pcs], key=lambda x: abs(x - r.pc)), *(sk._index(b, v) for (b, _), v in
             zip(sk.bins, (r.n, r.nb / r.n, r.kv_big, r.kp)))) for r in d.itertuples()]
    b = d.assign(bucket=keys).groupby("bucket").err.mean().abs()
    return (f"Over the {len(b)} buckets the measurements fall in, the bias of each bucket's rows: |bias| p50 "
            f"{100 * b.median():.2f} %, p90 {100 * b.quantile(0.9):.2f} %, max {100 * b.max():.2f} %.")


def main() -> None:
    lines = ["# The cost model against its own profile (`python experiments/gpu_fidelity/profile_check.py`)", ""]
    for name, gpu, prof in GPUS:
        c = P.ProfiledCost(LLAMA31_8B, gpu, profile=prof)
        tp_dir = c.folder / "tp1"
        lines += [f"## {name}", ""]
        raw_path = tp_dir / "skew.csv.gz"
        if raw_path.is_file():
            raw = pd.read_csv(raw_path)
            d = skew_rows(c, raw)
            lines += [f"Unequal-length correction at each of the {len(d)} measurements of `skew.csv` (excess: time "
                      "over the same batch at the mean length; bias: mean of model / measured − 1):", ""]
            lines += summary(d, "regime") + [""] + summary(d[d.regime == "pure"].assign(rows=lambda x: x.n), "rows")
            lines += [""] + summary(d.assign(rows=lambda x: x.n), "rows")
            lines += [""] + summary(d.assign(longest=lambda x: x.kv_big), "longest")
            mixed = d[d.regime == "mixed"]
            lines += [""] + summary(mixed.assign(chunk=lambda x: x.pc), "chunk")
            lines += [""] + summary(mixed.assign(cached=lambda x: x.kp), "cached")
            lines += ["", bucket_bias(c, d)]
            lines += ["", "The same measurements as the profiles state their fit's residuals (the RTX PRO 6000 "
                      "profiles ship no skew.csv, so for them only what their meta.yaml states):", ""]
            lines += fit_residuals(c, d)
            lines += ["", "Between measured row counts (leave one row count out), all measurements:", ""]
            lines += leave_one_out(c, raw, "n") + ["", "The same, pure decode only:", ""]
            lines += leave_one_out(c, raw[raw.regime == "pure"], "n")
            lines += ["", "Between measured prefill chunks (leave one chunk out):", ""] + leave_one_out(c, raw, "pc")
        else:
            lines += ["No `skew.csv` shipped (only its fit, `skew_fit.csv`): the correction cannot be checked "
                      "against the measurements."]
        lines += [""] + alpha_by_rows(c, name)
        lines += ["", "Leave-one-out on the grids:", ""] + grid_loo(c, tp_dir) + [""]
        if gpu is RTX4090:
            lines += ["A pure-decode step (ms, every row at 1,300 tokens, the run's graph padding):", ""]
            lines += step_parts(c, tp_dir) + [""]
    text = "\n".join(lines)
    print(text)
    (HERE / "results" / "profile_check.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
