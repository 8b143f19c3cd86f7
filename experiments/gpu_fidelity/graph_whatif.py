"""What if every step were shorter by the CUDA-graph saving the profiles' authors measured?

    python experiments/gpu_fidelity/graph_whatif.py [STEP_CSV]   # ~10 s: both shipped runs, profiled

The shipped profiles were taken eagerly (``enforce_eager: true``) and time each layer by its
CUDA kernels; the runs replay full decode graphs and piecewise graphs for mixed batches of up
to the largest capture size. The profiles' authors measure that difference with a second
engine boot (``step.csv``: per CUDA-graph branch and batch size, the step's saving in µs
against the same step without graphs), but none of the shipped profiles has one. The nearest
is LLMServingSim's ``profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/bf16/tp1/step.csv``,
shipped as ``data/step_rtxpro6000_llama31_8b_vllm028.csv`` (MIT, ``data/LICENSE.LLMServingSim``)
and read by default (an RTX PRO 6000, vLLM 0.28: another GPU than the RTX 4090 run's and another vLLM version
than either run's), so this is a what-if, not a model: each iteration whose tokens fit the
run's capture sizes is made shorter by that file's ``saved_us`` (``full`` rows for a
pure-decode batch, ``piecewise`` for a batch with a prefill chunk; the rows at one token count
averaged, linear between token counts, held flat beyond the last), and the fidelity table's
headline figures are printed for both runs, with and without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from llmos_sim import fidelity as F
from llmos_sim.serving import profiled as P
from llmos_sim.workload.requests import DATA_DIR

STEP_CSV = Path(__file__).parent / "data" / "step_rtxpro6000_llama31_8b_vllm028.csv"
RUNS = ("vllm_rtx4090_llama31_8b", "vllm_rtxpro6000_llama31_8b")


def saving_curves(path: str) -> dict[bool, pd.Series]:
    """``saved_us`` by token count: ``True`` for pure decode (``full``), ``False`` for mixed."""
    st = pd.read_csv(path)
    return {decode: st[st["branch"] == branch].groupby("num_tokens")["saved_us"].mean()
            for decode, branch in ((True, "full"), (False, "piecewise"))}


def headline(f: F.Fidelity) -> str:
    s = f.summary
    k = ("ttft_s", "tpot_s", "e2e_s")
    mape = " / ".join(f"{100 * s[f'{x}_mape']:.1f}" for x in k)
    mean = " / ".join(f"{100 * (s[f'{x}_mean_sim'] / s[f'{x}_mean_meas'] - 1):+.1f}" for x in k)
    p99 = " / ".join(f"{100 * (s[f'{x}_p99_sim'] / s[f'{x}_p99_meas'] - 1):+.1f}" for x in k)
    return f"{mape} % | {mean} % | {p99} %"


def main(step_csv: str) -> None:
    curves = saving_curves(step_csv)
    plain = P.ProfiledCost._iteration_us

    def with_saving(self, b, n_tok):
        t = plain(self, b, n_tok)
        pad = self._graph_pad
        if pad is None or n_tok >= len(pad):  # eager, or above the largest capture size: no graph
            return t
        c = curves[b.n_prefill_tokens == 0]
        return t - float(np.interp(n_tok, c.index, c.to_numpy()))

    print("| run | CUDA-graph saving | MAPE TTFT / TPOT / e2e | mean | p99 |\n|---|---|---|---|---|")
    for run in RUNS:
        for label, fn in (("none (the model)", plain), ("the RTX PRO 6000's step.csv", with_saving)):
            P.ProfiledCost._iteration_us = fn
            try:
                f = F.replay(DATA_DIR / run)
            finally:
                P.ProfiledCost._iteration_us = plain
            print(f"| {run} | {label} | {headline(f)} |")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        sys.exit(f"usage: graph_whatif.py [STEP_CSV] (a profile's step.csv: branch, num_tokens, saved_us, ...;"
                 f" default {STEP_CSV})")
    main(sys.argv[1] if len(sys.argv) == 2 else str(STEP_CSV))
