"""Which NICs a KV transfer shares: 2P+2D on the conversation trace at 38.8 req/s, with the
transfers sharing the prefill replica's NICs (``source``), the decode replica's
(``destination``), or both at once (``both``: max-min fair over the two), at 400 and 25 Gb/s
per GPU.

    python experiments/serving_disagg/link_scope.py

Writes ``results/link_scope.csv``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmos_sim.run import compose
from llmos_sim.serving import simulate

OUT = Path(__file__).resolve().parent / "results"
KEYS = ("slo_attainment", "goodput_req_s", "kv_transfer_s_mean", "kv_transfer_wait_s_mean", "p99_tpot_ms", "p99_itl_ms")


def main() -> None:
    rows = []
    for bw in (5e10, 3.125e9):
        for scope in ("source", "destination", "both"):
            c = compose(["experiment=serving_disagg", "workload=azure_conv", "workload.rate_scale=8",
                         "serving.slo_ttft_s=0.25", "serving.slo_tpot_s=0.02", "topology=disaggregated",
                         f"topology.link.bw_bytes_s={bw}", f"topology.link.scope={scope}"])
            s = simulate(c, seed=0).summary
            rows.append({"link_gbit_s": bw * 8 / 1e9, "scope": scope, **{k: s[k] for k in KEYS}})
            print(rows[-1], flush=True)
    OUT.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(OUT / "link_scope.csv", index=False)


if __name__ == "__main__":
    main()
