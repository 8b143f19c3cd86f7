"""Shared helpers of the torch backend tests (a plain module: the test folders are not packages)."""
from __future__ import annotations

#: every test fixes C so that no calibration or measurement runs (seconds, not minutes)
C = 2e10


def real_overrides(durations, arrivals=None, mem_bytes=4 << 20, extra=()):
    """Overrides for ``experiment=sim_vs_real`` with a tiny fixed workload and fixed ``C``."""
    arrivals = arrivals if arrivals is not None else [0.01 * i for i in range(len(durations))]
    return ["experiment=sim_vs_real", f"cluster.flops={C}", f"workload.reference_flops={C}",
            "cluster.mem_bytes=67108864", f"workload.durations_s={list(durations)}",
            f"workload.arrivals_s={list(arrivals)}", f"workload.mem_bytes={mem_bytes}", "dtype=fp32",
            *extra]
