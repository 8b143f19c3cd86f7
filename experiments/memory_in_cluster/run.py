"""Which memory-pool policies turn the same training jobs into out-of-memory failures?

    python experiments/memory_in_cluster/run.py      # ~1 min; writes results.csv/results.md here
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from llmos_sim.run import compose, run_config

HERE = Path(__file__).parent
POLICIES = ["ideal", "first_fit", "best_fit", "next_fit", "worst_fit", "buddy", "size_class", "caching",
            "caching_expandable"]


def main() -> pd.DataFrame:
    rows = []
    for mem in POLICIES:
        r = run_config(compose(["experiment=memory_in_cluster", f"memory={mem}"]))
        m, s = r.tables["memory"], r.summary
        rows.append({"memory": mem, "completed": s["n_completed"], "failed_oom": s["n_failed"],
                     "peak_reserved_GB": round(m["pool_reserved"].max() / 1e9, 1),
                     "peak_allocated_GB": round(m["pool_allocated"].max() / 1e9, 1),
                     "mean_external_frag": round(float(m["external_frag"].mean()), 3),
                     "jct_s_avg": round(s["jct_s_avg"], 1)})
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "results.csv", index=False)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return df


if __name__ == "__main__":
    main()
