"""The shared-cluster experiments' trade-off plot: one point per run, or, for a run with
several seeds, each seed as a small point and their mean as a large one."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from llmos_sim.experiments import tradeoff_scatter  # noqa: E402


def test_a_run_with_seeds_shows_each_seed_and_their_mean():
    df = pd.DataFrame({"run": ["one", "seeded", "seeded", "seeded"],
                       "train_jct_avg_s": [600.0, 60.0, 120.0, 180.0],
                       "slo_attainment": [0.5, 0.2, 0.4, 0.9],
                       "service_gpu_h": [1.25, 1.0, 1.5, 2.0]})
    fig, ax = plt.subplots()
    tradeoff_scatter(ax, df)
    offsets = [c.get_offsets().tolist() for c in ax.collections]
    assert offsets == [[[10.0, 0.5]], [[1.0, 0.2], [2.0, 0.4], [3.0, 0.9]], [[2.0, 0.5]]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "one (1.2 service GPU-h)", "seeded (1.50 service GPU-h)"]
    plt.close(fig)
