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
preemptions).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llmos_sim import fidelity as F
from llmos_sim.serving import profiled as P
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
    print("\n".join(lines[-7:]))
    (HERE / "results" / "ablation.md").write_text("\n".join(lines) + "\n")


def preemption_split(f: F.Fidelity) -> list[str]:
    """Per-request TPOT MAPE and bias by (preempted in the simulation, stalled in the run)."""
    t = f.requests.copy()
    t["sim"] = f.result.tables["requests"]["preemptions"].to_numpy() > 0
    near = np.array([t.tpot_s[(t.arrival_s - a).abs() <= 2].median() for a in t.arrival_s])
    t["real"] = t.tpot_s >= 1.3 * near
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


if __name__ == "__main__":
    main()
