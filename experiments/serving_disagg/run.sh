#!/usr/bin/env bash
# Co-located vs disaggregated serving at equal GPU count (4 H100s) on the Azure conversation and
# code traces, over request rates: one Hydra multirun per trace and setup (the package's own
# command and the experiment config configs/experiment/serving_disagg.yaml), then analyze.py
# reads every run's requests table and writes results/ (tables and the plot).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-outputs/multirun/serving_disagg}
declare -A SETUPS=(
  [colocated_continuous]="batching=continuous"
  [colocated_chunked]="batching=chunked_prefill"
  [disagg_1p3d]="topology=disaggregated topology.prefill.replicas=1 topology.decode.replicas=3"
  [disagg_2p2d]="topology=disaggregated topology.prefill.replicas=2 topology.decode.replicas=2"
  [disagg_3p1d]="topology=disaggregated topology.prefill.replicas=3 topology.decode.replicas=1"
)
declare -A RATES=([conv]="2,4,6,8,10,12,14,16" [code]="1,2,3,4,5,6")
# per-trace SLOs: the code trace's prompts are twice as long (p90 5.2k tokens: ~0.15 s of prefill alone)
declare -A SLOS=([conv]="serving.slo_ttft_s=0.25 serving.slo_tpot_s=0.02"
                 [code]="serving.slo_ttft_s=0.5 serving.slo_tpot_s=0.02")
for trace in conv code; do
  for setup in colocated_continuous colocated_chunked disagg_1p3d disagg_2p2d disagg_3p1d; do
    # shellcheck disable=SC2086
    python -m llmos_sim -m experiment=serving_disagg workload=azure_$trace workload.rate_scale=${RATES[$trace]} \
      ${SLOS[$trace]} ${SETUPS[$setup]} output.plots=false hydra.sweep.dir="$out/$trace/$setup" > /dev/null
  done
done
# the link: 2P+2D on conv with 400, 100 and 25 Gb/s per GPU (25 Gb/s: DistServe's cross-node network)
python -m llmos_sim -m experiment=serving_disagg workload=azure_conv workload.rate_scale=8,10 ${SLOS[conv]} \
  ${SETUPS[disagg_2p2d]} topology.link.bw_bytes_s=5e10,1.25e10,3.125e9 output.plots=false \
  hydra.sweep.dir="$out/link/disagg_2p2d" > /dev/null
python experiments/serving_disagg/analyze.py "$out"
