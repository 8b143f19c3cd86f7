"""A check, not a model change: how much of the RTX 4090 run's ~4 % shortfall the missing
unequal-length correction explains (its profile has no skew measurements).

    python experiments/gpu_fidelity/check_4090_skew.py     # ~10 s

Replays the RTX 4090 run with the profiled cost model as shipped, then with the RTX PRO 6000
Llama-3.1-8B profile's ``alpha`` table (its own measurements of unequal decode rows) applied
to the RTX 4090's attention times — an assumption that the fraction is a property of the
kernel rather than of the GPU, which nothing here measures; so it is reported, not shipped.
Prints TTFT / TPOT / e2e MAPE and the signed error of the mean and the p99, in %.
"""
from __future__ import annotations

from llmos_sim import fidelity as F  # noqa: E402
from llmos_sim.serving import profiled as P  # noqa: E402
from llmos_sim.serving.specs import LLAMA31_8B, RTX_PRO_6000  # noqa: E402
from llmos_sim.workload.requests import DATA_DIR  # noqa: E402


def errors(f: F.Fidelity) -> str:
    s = f.summary
    return "  ".join(f"{k}: MAPE {100 * s[f'{k}_mape']:.1f}, mean {100 * (s[f'{k}_mean_sim'] / s[f'{k}_mean_meas'] - 1):+.1f}, "
                     f"p99 {100 * (s[f'{k}_p99_sim'] / s[f'{k}_p99_meas'] - 1):+.1f}" for k in F.METRICS)


def main() -> None:
    run = DATA_DIR / "vllm_rtx4090_llama31_8b"
    print("as shipped (no correction):   ", errors(F.replay(run, "profiled")))
    donor = P.ProfiledCost(LLAMA31_8B, RTX_PRO_6000, profile="RTXPRO6000/Llama-3.1-8B").skew
    init = P.ProfiledCost.__init__

    def with_donor(self, *a, **kw):
        init(self, *a, **kw)
        if self.skew is None:
            self.skew, self.wants_decode_spread = donor, True

    P.ProfiledCost.__init__ = with_donor
    try:
        print("RTX PRO 6000 alphas borrowed: ", errors(F.replay(run, "profiled")))
    finally:
        P.ProfiledCost.__init__ = init


if __name__ == "__main__":
    main()
