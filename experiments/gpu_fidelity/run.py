"""GPU fidelity: predict two real vLLM runs from operator profiles alone (and from the roofline).

    python experiments/gpu_fidelity/run.py            # ~20 s: both shipped runs × {profiled, roofline},
                                                      # plus the two synthesized Qwen3 deployments

For each shipped run (``llmos_sim/workload/data/vllm_*``) it calls what ``python -m
llmos_sim.fidelity RUN_DIR --cost profiled|roofline`` calls and writes that command's outputs
to ``results/<run>_<cost>/``; ``results/summary.md`` puts the headline errors side by side with
the errors the profiles' authors report for their own simulator. It also writes two run
folders for deployments nobody measured here (Qwen3-32B on 2 GPUs with TP; Qwen3-30B-A3B on 2
GPUs with DP and expert parallelism) with :func:`llmos_sim.fidelity.synthesize_run` (the
requests' lengths and send times are the RTX PRO 6000 run's first 60; the times in them are
llmos_sim's own) and replays them: the command must rebuild those deployments from
``meta.json`` alone and reproduce them.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

from llmos_sim import fidelity as F  # noqa: E402
from llmos_sim.workload.requests import DATA_DIR  # noqa: E402

RUNS = ("vllm_rtx4090_llama31_8b", "vllm_rtxpro6000_llama31_8b")
#: the profiles' authors' reported errors for their own simulator on the RTX PRO 6000 run
#: (signed error of the mean and of p99, simulated vs measured)
AUTHORS = {"vllm_rtxpro6000_llama31_8b": {"ttft_s_mean": -4.0, "tpot_s_mean": -1.0, "e2e_s_mean": -1.8,
                                          "ttft_s_p99": -2.0, "tpot_s_p99": 0.6, "e2e_s_p99": -1.6}}
SYNTHETIC = {
    "qwen3_32b_tp2": dict(model="Qwen/Qwen3-32B", tensor_parallel_size=2, data_parallel_size=1,
                          enable_expert_parallel=False, max_num_seqs=32, max_num_batched_tokens=2048, dtype="bfloat16"),
    "qwen3_30b_a3b_dp2_ep": dict(model="Qwen/Qwen3-30B-A3B-Instruct-2507", tensor_parallel_size=1,
                                 data_parallel_size=2, enable_expert_parallel=True, max_num_seqs=32,
                                 max_num_batched_tokens=2048, dtype="bfloat16"),
}


def headline(s: dict) -> dict:
    out = {}
    for k in F.METRICS:
        out[f"{k}_mape"] = 100 * s[f"{k}_mape"]
        out[f"{k}_bias"] = 100 * s[f"{k}_bias"]
        for q in ("mean", "p50", "p90", "p99"):
            out[f"{k}_{q}"] = 100 * (s[f"{k}_{q}_sim"] / s[f"{k}_{q}_meas"] - 1)
    return out


def main() -> None:
    res = HERE / "results"
    rows = {}
    for run in RUNS:
        for cost in ("profiled", "roofline"):
            for arrival in ("send", "engine"):
                f = F.replay(DATA_DIR / run, cost, arrival=arrival)
                name = f"{run}_{cost}" + ("" if arrival == "send" else "_engine_arrival")
                F.write(f, res / name, F.title_of(f, DATA_DIR / run), plots=cost == "profiled" and arrival == "send")
                rows[(run, cost, arrival)] = headline(f.summary)
                print(run, cost, arrival, {k: round(v, 1) for k, v in rows[(run, cost, arrival)].items() if "mape" in k})
    src = DATA_DIR / "vllm_rtxpro6000_llama31_8b" / "requests.jsonl"
    reqs = [json.loads(line) for line in src.read_text().splitlines()[:60]]
    synth = {}
    for name, ek in SYNTHETIC.items():
        folder = res / "synthetic" / name
        F.synthesize_run(folder, ek, "RTXPRO6000", [r["input_toks"] for r in reqs], [r["output_toks"] for r in reqs],
                         [r["arrival_time"] for r in reqs])
        f = F.replay(folder)
        F.write(f, res / "synthetic" / f"{name}_replay", F.title_of(f, folder), plots=False)
        synth[name] = (f.deployment, f.summary)
        print(name, {k: f.summary[f"{k}_mape"] for k in F.METRICS})
    lines = ["| run | cost model | latencies from | TTFT MAPE | TPOT MAPE | e2e MAPE | TTFT mean / p99 | TPOT mean / p99 "
             "| e2e mean / p99 |", "|---|---|---|---|---|---|---|---|---|"]
    for (run, cost, arrival), h in rows.items():
        lines.append(f"| {run} | {cost} | {'client send' if arrival == 'send' else 'engine enqueue'} | "
                     f"{h['ttft_s_mape']:.1f} % | {h['tpot_s_mape']:.1f} % | {h['e2e_s_mape']:.1f} % | "
                     + " | ".join(f"{h[f'{k}_mean']:+.1f} / {h[f'{k}_p99']:+.1f} %" for k in F.METRICS) + " |")
    for run, a in AUTHORS.items():
        lines.append(f"| {run} | the profiles' authors' simulator (their report) | – | – | – | – | "
                     + " | ".join(f"{a[f'{k}_mean']:+.1f} / {a[f'{k}_p99']:+.1f} %" for k in F.METRICS) + " |")
    lines += ["", "| synthesized deployment | read from meta.json | KV blocks | TTFT / TPOT / e2e MAPE of the replay |",
              "|---|---|---|---|"]
    for name, (d, s) in synth.items():
        lines.append(f"| {name} | {d['model']}, tp={d['tp']}, dp={d['dp']}, expert_parallel={d['expert_parallel']}, "
                     f"max_num_seqs={d['max_num_seqs']} | {d['kv_blocks']} | "
                     + " / ".join(f"{100 * s[f'{k}_mape']:.1g} %" for k in F.METRICS) + " |")
    (res / "summary.md").write_text("\n".join(lines) + "\n")
    (res / "summary.json").write_text(json.dumps({"|".join(k): h for k, h in rows.items()}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
