"""What each engine detail the profiled cost model now takes in moves, on both shipped runs.

    python experiments/gpu_fidelity/ablation.py     # ~30 s: 4 replays per run, into results/ablation.md

For each run: the profiled model without the unequal-length correction and without CUDA-graph
padding, with each of them alone, and with both (as shipped); on the RTX 4090 run also with
the RTX PRO 6000 Llama-3.1-8B profile's ``alpha`` table in place of its own (the question a
profile without unequal-length measurements would raise: does the fraction carry over between
GPUs?). Prints and writes TTFT / TPOT / e2e MAPE and the signed error of the mean and the p99
(%, client send times). Then, on the RTX 4090 run as shipped, the per-request TPOT error split
by preemption: requests the simulation preempted, and requests whose measured TPOT is >= 1.3x
the median of those sent within 2 s of them (a recompute stall; the run did not record its
preemptions); and the RTX 4090 run with each KV-cache detail of vLLM's on / off (the free
queue's order, when a returning victim's hit is looked up).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim import fidelity as F
from llmos_sim.serving import profiled as P
from llmos_sim.serving import replica as R
from llmos_sim.serving.specs import LLAMA31_8B, RTX_PRO_6000
from llmos_sim.workload.requests import DATA_DIR

HERE = Path(__file__).resolve().parent
RUNS = ("vllm_rtx4090_llama31_8b", "vllm_rtxpro6000_llama31_8b")


def errors(f: F.Fidelity) -> str:
    s = f.summary
    mape = " / ".join(f"{100 * s[f'{k}_mape']:.1f}" for k in F.METRICS)
    mean = " / ".join(f"{100 * (s[f'{k}_mean_sim'] / s[f'{k}_mean_meas'] - 1):+.1f}" for k in F.METRICS)
    p99 = " / ".join(f"{100 * (s[f'{k}_p99_sim'] / s[f'{k}_p99_meas'] - 1):+.1f}" for k in F.METRICS)
    return f"{mape} % | {mean} % | {p99} %"


def replay(run: str, skew: str, graphs: bool) -> F.Fidelity:
    """``skew``: ``own`` (the profile's), ``none`` or ``rtxpro6000`` (that profile's table)."""
    init = P.ProfiledCost.__init__
    donor = P.ProfiledCost(LLAMA31_8B, RTX_PRO_6000, profile="RTXPRO6000/Llama-3.1-8B").skew

    def variant(self, *a, **kw):
        if not graphs:
            kw["cuda_graph_sizes"] = None
        init(self, *a, **kw)
        if skew != "own":
            self.skew = donor if skew == "rtxpro6000" else None
            self.wants_decode_spread = self.skew is not None
            self._span_curves.clear()

    P.ProfiledCost.__init__ = variant
    try:
        return F.replay(DATA_DIR / run, "profiled")
    finally:
        P.ProfiledCost.__init__ = init


def main() -> None:
    lines = ["| run | unequal-length correction | CUDA-graph padding | TTFT / TPOT / e2e MAPE | mean | p99 |",
             "|---|---|---|---|---|---|"]
    for run in RUNS:
        cases = [("none", False), ("own", False), ("none", True), ("own", True)]
        if run.startswith("vllm_rtx4090"):
            cases.append(("rtxpro6000", True))
        for skew, graphs in cases:
            row = (f"| {run} | {dict(own='its own', none='none', rtxpro6000='the RTX PRO 6000 table')[skew]} | "
                   f"{'on' if graphs else 'off'} | " + errors(replay(run, skew, graphs)).replace(" | ", " | ") + " |")
            print(row, flush=True)
            lines.append(row)
    lines += ["", *preemption_split(replay(RUNS[0], "own", True))]
    lines += ["", *preemption_evidence()]
    print("\n".join(lines[-40:]))
    (HERE / "results" / "ablation.md").write_text("\n".join(lines) + "\n")


def neighbours(tpot: pd.Series, arrival: pd.Series) -> np.ndarray:
    """Each request's TPOT over the median TPOT of the requests sent within 2 s of it."""
    return (tpot / np.array([tpot[(arrival - a).abs() <= 2].median() for a in arrival])).to_numpy()


def preemption_split(f: F.Fidelity) -> list[str]:
    """Per-request TPOT MAPE and bias by (preempted in the simulation, stalled in the run)."""
    t = f.requests.copy()
    t["sim"] = f.result.tables["requests"]["preemptions"].to_numpy() > 0
    t["real"] = neighbours(t.tpot_s, t.arrival_s) >= 1.3
    total = t.err_tpot_s.abs().sum()
    out = [f"RTX 4090: {int(t.sim.sum())} requests preempted in the simulation "
           f"({int(f.result.tables['requests']['preemptions'].sum())} preemptions), {int(t.real.sum())} stalled in the run "
           f"(TPOT >= 1.3x their neighbours'), {int((t.sim & t.real).sum())} both", "",
           "| requests | n | TPOT MAPE | bias | share of the MAPE's sum |", "|---|---|---|---|---|"]
    for name, m in (("all", t.sim | ~t.sim), ("neither", ~t.sim & ~t.real), ("preempted in the simulation only", t.sim & ~t.real),
                    ("stalled in the run only", ~t.sim & t.real), ("both", t.sim & t.real)):
        e = t.err_tpot_s[m]
        out.append(f"| {name} | {len(e)} | {100 * e.abs().mean():.1f} % | {100 * e.mean():+.1f} % | "
                   f"{100 * e.abs().sum() / total:.0f} % |")
    return out


def preemption_evidence() -> list[str]:
    """The RTX 4090 run as shipped: the simulation's preemptions seen the way the run's are
    (the same 1.3x-neighbours detector on the simulated TPOTs), what each one costs there
    (wait in the queue, tokens recomputed after the prefix-cache hit), the TPOT ratio to the
    neighbours by group, how often each side's KV cache is at its ceiling, and how the errors
    move with the KV block count a few blocks either side (what one block's chaos is worth)."""
    log: list = []
    evict, admit = R.Replica._evict, R.Replica._admit

    order = [0, 0]  # preemptions with earlier victims still waiting; of those, one that arrived before it

    def evict_(self, r, swap, t, quiet=False):
        log.append((t, self.table.rid[r], None))
        # vLLM prepends a victim to its waiting queue; here the queue is in arrival order: the
        # same unless a victim still waiting arrived before the new one
        earlier = [w.arrival_s for w in self.waiting if w.started]
        order[0] += bool(earlier)
        order[1] += any(a < self.table.arrival_s[r] for a in earlier)
        return evict(self, r, swap, t, quiet)

    def admit_(self, adm, tokens, t, *rest):
        back = [w for w in (self.waiting[p] for p, _ in adm) if w.started]
        swapped = admit(self, adm, tokens, t, *rest)
        for w in back:  # (its cached tokens as the admission counted them)
            log.append((t, w.rid, w.prompt + w.generated - w.computed))
        return swapped

    # the KV gauge as vLLM reads it: after the step's finished requests are freed (here: after
    # each decision's held finished rows are released), not right after the allocations
    gauge: list = []
    start, release = R.Replica._start, R.Replica._release_finished

    def start_(self):
        t0 = self.now
        plan = start(self)
        gauge.append([t0, self.kv.free_blocks])
        return plan

    def release_(self):
        release(self)
        if gauge:
            gauge[-1][1] = self.kv.free_blocks

    R.Replica._evict, R.Replica._admit, R.Replica._start, R.Replica._release_finished = evict_, admit_, start_, release_
    try:
        f = F.replay(DATA_DIR / RUNS[0], "profiled")
    finally:
        R.Replica._evict, R.Replica._admit, R.Replica._start, R.Replica._release_finished = evict, admit, start, release
    out_at: dict = {}
    waits, recompute = [], []
    for t, rid, rec in log:
        if rec is None:
            out_at[rid] = t
        else:
            waits.append(t - out_at.pop(rid))
            recompute.append(rec)
    waits, recompute = np.array(waits), np.array(recompute)
    t = f.requests
    sim_tpot = t.sim_tpot_s
    real_r, sim_r = neighbours(t.tpot_s, t.arrival_s), neighbours(sim_tpot, t.arrival_s)
    pre = f.result.tables["requests"]["preemptions"].to_numpy() > 0
    real = real_r >= 1.3
    q = lambda x: " / ".join(f"{v:.3g}" for v in np.quantile(x, [0.25, 0.5, 0.75, 0.9]))
    out = [f"RTX 4090, the simulation's preemptions ({len(waits)}, of {int(pre.sum())} requests): "
           f"{int((sim_r >= 1.3).sum())} requests with a simulated TPOT >= 1.3x their neighbours' "
           f"(the run: {int(real.sum())}); wait in the queue p25 / p50 / p75 / p90 {q(waits)} s "
           f"(mean {waits.mean():.2f} s); tokens recomputed on return (after the prefix-cache hit) "
           f"{q(recompute)}; {order[0]} preemptions found earlier victims still waiting, {order[1]} of them one "
           f"that arrived before the new victim (where arrival order and vLLM's prepending differ)", "",
           "| requests | n | measured TPOT / neighbours' (mean) | simulated (mean) |", "|---|---|---|---|"]
    for name, m in (("neither", ~pre & ~real), ("preempted in the simulation only", pre & ~real),
                    ("stalled in the run only", ~pre & real), ("both", pre & real)):
        out.append(f"| {name} | {int(m.sum())} | {real_r[m].mean():.3f} | {sim_r[m].mean():.3f} |")
    ts = f.series
    g = np.array(gauge)
    j = np.clip(np.searchsorted(g[:, 0], ts["sim_t"].to_numpy(float), side="right") - 1, 0, None)
    after_frees = 100.0 * (1.0 - g[j, 1] / float(f.result.extra["kv_blocks_per_replica"]))
    bound = ((ts["t"] > 5) & (ts["t"] < 165)).to_numpy()  # the run's KV-bound middle
    out += ["", "| KV cache used (share of the 1-s samples; mean between 5 and 165 s) | >= 95 % | >= 97 % | >= 99 % "
            "| mean, 5-165 s |", "|---|---|---|---|---|"]
    for name, x in (("the run", ts["kv_cache_pct"].to_numpy(float)),
                    ("the simulation (after each decision's allocations)", ts["sim_kv_cache_pct"].to_numpy(float)),
                    ("the simulation, read after the finished requests' frees", after_frees)):
        out.append(f"| {name} | " + " | ".join(f"{100 * (x >= v).mean():.0f} %" for v in (95, 97, 99))
                   + f" | {x[bound].mean():.2f} % |")
    out += ["", "| KV blocks (vLLM's count) | preempted requests | preemptions | TTFT / TPOT / e2e MAPE | mean | p99 |",
            "|---|---|---|---|---|---|"]
    build = F.build_config
    for d in (-4, -2, 0, 2, 4):
        F.build_config = lambda *a, _d=d, **kw: _shift_blocks(build(*a, **kw), _d)
        try:
            g = F.replay(DATA_DIR / RUNS[0], "profiled")
        finally:
            F.build_config = build
        n = g.result.tables["requests"]["preemptions"]
        out.append(f"| {g.deployment['kv_blocks']} | {int((n > 0).sum())} | {int(n.sum())} | " + errors(g) + " |")
    return out + ["", *free_queue_evidence(), "", *hit_order_evidence()]


def hit_order_evidence() -> list[str]:
    """The RTX 4090 run with a returning victim's cached blocks looked up after the blocks the
    same iteration took before its admission (the running rows' growth, earlier admissions:
    vLLM's order, now) and, as before, ahead of them."""
    from llmos_sim.serving import kv as KV
    now = KV.KVCacheManager.requeued_tokens
    out = ["RTX 4090: a returning victim's hit, looked up after the iteration's earlier allocations (vLLM's "
           "scheduler: running requests first, then the waiting ones in turn) or before them", "",
           "| hit looked up | TTFT / TPOT / e2e MAPE | mean | p99 | preempted (preemptions) |", "|---|---|---|---|---|"]
    for name, fn in (("after them (now)", now), ("before them (before)", lambda self, seq, known, ahead: now(self, seq, known, 0))):
        KV.KVCacheManager.requeued_tokens = fn
        try:
            f = F.replay(DATA_DIR / RUNS[0], "profiled")
        finally:
            KV.KVCacheManager.requeued_tokens = now
        n = f.result.tables["requests"]["preemptions"]
        out.append(f"| {name} | " + errors(f) + f" | {int((n > 0).sum())} ({int(n.sum())}) |")
    return out


def _old_take_cached(self, seq, tokens: int) -> None:
    """The KV manager's hit before the free-queue fix (diagnostic only): blocks taken back from
    the middle of the free queue left their positions behind, so the queue looked longer than
    the free count and later victims' blocks looked further from eviction than they were."""
    self._cached.pop(seq, None)
    if tokens:
        self._hit[seq] = tokens // self.block_tokens


def _windows(f: F.Fidelity, calm: np.ndarray) -> pd.DataFrame:
    t = f.requests.copy()
    meas = pd.read_json(DATA_DIR / RUNS[0] / "requests.jsonl", lines=True)
    first = (meas["first_token_ts"] - meas["queued_ts"].min()).to_numpy()
    t["window"] = pd.cut(first, [0, 10, 20, 40, 60, 80, 100, 120, 140, 160, 200])
    t["calm"] = calm
    g = t.groupby("window", observed=True)
    out = pd.DataFrame({"n": g.size(), "bias": 100 * g.err_tpot_s.mean(),
                        "mape": 100 * g.err_tpot_s.apply(lambda x: x.abs().mean())})
    c = t[t.calm].groupby("window", observed=True)
    out["calm_n"], out["calm_bias"] = c.size(), 100 * c.err_tpot_s.mean()
    return out


def free_queue_evidence() -> list[str]:
    """Where the RTX 4090 TPOT error lives, with the free queue as vLLM keeps it and (diagnostic)
    as the KV manager kept it before: by the window of the request's first token, all requests
    and the undisturbed ones (not preempted in the simulation, not stalled in the run); then
    what a step costs where no preemption muddles it (decode-only 1-s samples; the 2,048-token
    steps of the run's first seconds)."""
    from llmos_sim.serving import kv as KV
    new = KV.KVCacheManager.take_cached
    res = {}
    for name, fn in (("vLLM's free queue (now)", new), ("positions left behind (before)", _old_take_cached)):
        KV.KVCacheManager.take_cached = fn
        try:
            res[name] = F.replay(DATA_DIR / RUNS[0], "profiled")
        finally:
            KV.KVCacheManager.take_cached = new
    out = ["RTX 4090: blocks a victim takes back leave the free queue (vLLM's `touch`), moving every later block "
           "up; before, their positions stayed, so later victims' blocks looked further from eviction", "",
           "| free queue | TTFT / TPOT / e2e MAPE | mean | p99 | preempted (preemptions) | undisturbed: n, TPOT bias "
           "| preempted in the simulation only: TPOT / neighbours', measured / simulated |",
           "|---|---|---|---|---|---|---|"]
    wins = {}
    for name, f in res.items():
        t = f.requests
        n = f.result.tables["requests"]["preemptions"].to_numpy()
        real_r, sim_r = neighbours(t.tpot_s, t.arrival_s), neighbours(t.sim_tpot_s, t.arrival_s)
        only, calm = (n > 0) & (real_r < 1.3), (n == 0) & (real_r < 1.3)
        wins[name] = _windows(f, calm)
        out.append(f"| {name} | " + errors(f) + f" | {int((n > 0).sum())} ({int(n.sum())}) | {int(calm.sum())}, "
                   f"{100 * t.err_tpot_s[calm].mean():+.1f} % | {real_r[only].mean():.3f} / {sim_r[only].mean():.3f} |")
    out += ["", "TPOT error by the window of the request's first token (s from the run's start): bias / MAPE of all "
            "requests, bias of the undisturbed ones (n)", "",
            "| first token | n | " + " | ".join(f"{k}: all | undisturbed" for k in wins) + " |",
            "|---|---|" + "---|---|" * len(wins)]
    a = next(iter(wins.values()))
    for w in a.index:
        cells = [f"{wins[k].loc[w, 'bias']:+.1f} / {wins[k].loc[w, 'mape']:.1f} % | "
                 f"{wins[k].loc[w, 'calm_bias']:+.1f} % ({int(wins[k].loc[w, 'calm_n'])})" for k in wins]
        out.append(f"| {w} | {int(a.loc[w, 'n'])} | " + " | ".join(cells) + " |")
    ts = next(iter(res.values())).series
    m = ts[(ts.prompt_throughput == 0) & (ts.running > 0) & (ts.gen_throughput > 0)]
    s = ts[(ts.sim_prompt_throughput == 0) & (ts.sim_running > 0) & (ts.sim_gen_throughput > 0)]
    bins = [16, 24, 32, 40, 48]
    mg = (1e3 * m.running / m.gen_throughput).groupby(pd.cut(m.running, bins), observed=True).median()
    sg = (1e3 * s.sim_running / s.sim_gen_throughput).groupby(pd.cut(s.sim_running, bins), observed=True).median()
    out += ["", "Decode-only 1-s samples (no prompt tokens that second): running / generated tokens per second = one "
            "step (ms), median by running requests", "", "| running | measured | simulated |", "|---|---|---|"]
    for b in mg.index:
        out.append(f"| {b} | {mg[b]:.1f} | {sg.get(b, float('nan')):.1f} |")
    meas = pd.read_json(DATA_DIR / RUNS[0] / "requests.jsonl", lines=True)
    ft = np.unique(np.round(meas["first_token_ts"].to_numpy() - meas["queued_ts"].min(), 4))
    gaps = np.diff(ft[(ft > 2.3) & (ft < 3.4)])
    out += ["", f"The run's first seconds (every step a 2,048-token chunk plus the decode rows; consecutive first-token "
            f"times): {', '.join(f'{1e3 * g:.0f}' for g in gaps)} ms; the profile prices 2,032 prefill tokens after "
            f"0 / 1,000 cached ones with 16 decode rows at {_mixed_ms(0):.0f} / {_mixed_ms(1000):.0f} ms"]
    return out


def _mixed_ms(ctx: int) -> float:
    from llmos_sim.serving.cost import BatchShape
    from llmos_sim.serving.specs import RTX4090
    c = P.ProfiledCost(LLAMA31_8B, RTX4090, profile="RTX4090/Llama-3.1-8B")
    n, nd = 2032, 16
    b = BatchShape(n_prefill_tokens=n, prefill_attn_pairs=n * ctx + n * (n + 1) // 2, prefill_ctx_tokens=ctx + n,
                   n_decode_tokens=nd, decode_ctx_tokens=nd * 600, n_seqs=nd + 1, n_logits=nd + 1,
                   decode_ctx_max=600, decode_ctx_min=600)
    return 1e3 * c.iteration_s(b)


def _shift_blocks(built, d: int):
    cfg, dep = built
    cfg.serving.num_kv_blocks += d
    dep["kv_blocks"] += d
    return cfg, dep


if __name__ == "__main__":
    main()
