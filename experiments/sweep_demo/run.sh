#!/usr/bin/env bash
# The sweep of docs/workflow.md: 3 schedulers x 2 memory pools x 3 seeds, 100 jobs each,
# in parallel with joblib, merged at the end by the compare callback.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-outputs/multirun/sweep_demo}
python -m llmos_sim -m experiment=quickstart \
  scheduler=fifo,fifo_skip,sjf memory=ideal,first_fit seed=0,1,2 \
  workload.n_jobs=100 workload.arrival_rate_per_s=0.05 \
  hydra/launcher=joblib_local hydra.launcher.n_jobs=2 hydra/callbacks=compare \
  hydra.sweep.dir="$out"
python -m llmos_sim.compare "$out" --metrics jct_s_avg jct_s_p99 wait_s_avg utilisation
