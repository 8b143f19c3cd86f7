"""Driver of ``benchmarks/gpu_check.sh``: run each stage in a subprocess with its own time
limit, then summarise into ``$OUT/gpu_summary.{json,md}`` and ``$OUT/gpu_check.png``.

Stages (limits add up to < 8 minutes with start-up):

1. ``calibrate``: matmul FLOP/s per dtype (fp32, bf16, fp16) and bandwidth of every GPU;
2. ``sim_vs_real``: the training workload real vs the calibrated SimPy model, and
   ``experiment=serving_real`` (the small transformer serving a Poisson stream on the GPU)
   real vs simulated with the fitted serving cost model (TTFT, TPOT, e2e);
3. ``serving_1b``: the same serving comparison with a ~1.2 B-parameter model in bf16
   (``model=small_1b_real``), whose iterations are GPU-bound;
4. ``pytest_gpu``: ``pytest -m gpu tests/torch_backend``; 5. ``pytest_torch``: the whole torch folder
   on the GPU (the CPU tests then run on CUDA devices too), if time is left.

Reported figures: achieved bf16 FLOP/s as a fraction of the H200's 989 TFLOPS dense peak (and
of the preset peak of the detected part), per-dtype rates, sim-vs-real errors.
This script imports neither torch nor llmos_sim itself, so it always writes a summary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

H200_BF16_PEAK = 989e12  #: dense bf16 FLOP/s of an H200 SXM (datasheet)
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165.2e12, "A10": 125e12}


def stage(name: str, cmd: list[str], limit_s: float, out: Path, results: dict) -> bool:
    """Run ``cmd`` with a time limit; log to ``out/<name>.log``; record rc and duration."""
    t = time.time()
    log = out / f"{name}.log"
    print(f"[gpu_check] {name}: {' '.join(cmd)} (limit {limit_s:.0f} s)", flush=True)
    try:
        with open(log, "w") as fh:
            p = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=limit_s)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    except OSError as e:
        rc = f"error: {e}"
    results[name] = {"rc": rc, "wall_s": round(time.time() - t, 1), "log": log.name}
    tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
    print(f"[gpu_check] {name}: rc={rc} in {time.time() - t:.1f} s\n  " + "\n  ".join(tail), flush=True)
    return rc == 0


def figures(out: Path, results: dict) -> dict:
    """Collect the headline figures from the stages' output files."""
    fig: dict = {}
    cal_p = out / "calibration" / "calibration.json"
    if cal_p.exists():
        cal = json.loads(cal_p.read_text())
        fig["devices"] = []
        for d in cal.get("devices", []):
            rates = {dt: e["flops"] for dt, e in d.get("dtypes", {}).items()}
            peak = next((v for k, v in PEAKS.items() if k.lower() in d.get("name", "").lower()), None)
            entry = {"name": d.get("name"), "kind": d.get("kind"), "flops": rates,
                     "mem_bw_bytes_s": d.get("mem_bw_bytes_s"), "sweep": d.get("sweep", {})}
            if "bf16" in rates:
                entry["bf16_fraction_of_h200_peak"] = rates["bf16"] / H200_BF16_PEAK
                if peak:
                    entry["bf16_fraction_of_own_peak"] = rates["bf16"] / peak
            fig["devices"].append(entry)
    svr_p = out / "sim_vs_real" / "summary.json"
    if svr_p.exists():
        s = json.loads(svr_p.read_text())
        t, i = s.get("training", {}), s.get("inference", {})
        fig["training_run_s_mape"] = t.get("run_s_mape")
        fig["training_jct_s_mape"] = t.get("jct_s_mape")
        fig["training_same_start_order"] = t.get("same_start_order")
        fig["training_achieved_flops_s"] = t.get("achieved_flops_s_mean")
        fig["inference_ttft_mape"] = i.get("ttft_mape")
        fig["inference_tpot_mape"] = i.get("tpot_mape")
        fig["inference_e2e_mape"] = i.get("e2e_mape")
        fig["inference_iteration_mape"] = i.get("iteration_mape")
        fig["inference_same_schedule_order"] = i.get("same_schedule_order")
        fig["targets_met"] = {
            "training<=5%": t.get("run_s_mape") is not None and t["run_s_mape"] <= 0.05,
            "ttft<=10%": i.get("ttft_mape") is not None and i["ttft_mape"] <= 0.10,
            "tpot<=10%": i.get("tpot_mape") is not None and i["tpot_mape"] <= 0.10,
        }
    s1b_p = out / "serving_1b" / "summary.json"
    if s1b_p.exists():
        i = json.loads(s1b_p.read_text()).get("inference", {})
        for k in ("ttft_mape", "tpot_mape", "e2e_mape", "iteration_mape"):
            fig[f"serving_1b_{k}"] = i.get(k)
    fig["stages"] = results
    return fig


def plot(fig: dict, path: Path) -> None:
    """Achieved FLOP/s per dtype as a fraction of the H200 bf16 peak, and the sim-vs-real errors."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    f, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for d in fig.get("devices", []):
        ks = list(d["flops"])
        a.bar([f"{d['name'][:14]}\n{k}" for k in ks], [d["flops"][k] / H200_BF16_PEAK for k in ks])
    a.axhline(1.0, color="k", lw=0.8, ls="--")
    a.set_ylabel("achieved / 989 TFLOPS (H200 bf16 peak)")
    a.set_title("matmul rate")
    names = ["training_run_s_mape", "inference_ttft_mape", "inference_tpot_mape"]
    vals = [fig.get(n) or 0.0 for n in names]
    b.bar(["training run", "TTFT", "TPOT"], vals, color=["C0", "C1", "C2"])
    b.axhline(0.05, color="C0", ls="--", lw=0.8)
    b.axhline(0.10, color="C1", ls="--", lw=0.8)
    b.set_ylabel("mean |real / sim - 1|")
    b.set_title("sim vs real")
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--budget-s", type=float, default=450.0, help="total time for all stages")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    py = a.python
    root = Path(__file__).resolve().parent.parent
    t0 = time.time()
    results: dict = {}

    def left(cap: float) -> float:
        return max(10.0, min(cap, a.budget_s - (time.time() - t0)))

    stage("calibrate", [py, "-m", "llmos_sim.backends.torch_gpu.calibrate", "--out", str(out / "calibration"),
                        "--seconds", "1.0"], left(150), out, results)
    cal = out / "calibration" / "calibration.json"
    svr = [py, "-m", "llmos_sim.backends.torch_gpu.sim_vs_real", "--out", str(out / "sim_vs_real"),
           "--bracket-s", "1.0"]
    if cal.exists():
        svr += ["--calibration", str(cal)]
    stage("sim_vs_real", svr, left(180), out, results)
    stage("pytest_gpu", [py, "-m", "pytest", str(root / "tests" / "torch_backend"), "-m", "gpu", "-q", "-p", "no:cacheprovider",
                         f"--junitxml={out / 'pytest_gpu.xml'}"], left(90), out, results)
    # serving a ~1.2 B-parameter model for real (bf16): GPU-bound iterations, not Python-bound
    stage("serving_1b", [py, "-m", "llmos_sim.backends.torch_gpu.sim_vs_real", "--out", str(out / "serving_1b"),
                         "--skip-training", "--inference-overrides", "model=small_1b_real", "workload.n=96",
                         "workload.rate_per_s=40"], left(120), out, results)
    if a.budget_s - (time.time() - t0) > 60:
        stage("pytest_torch", [py, "-m", "pytest", str(root / "tests" / "torch_backend"), "-q", "-p", "no:cacheprovider",
                               f"--junitxml={out / 'pytest_torch.xml'}"], left(100), out, results)
    fig = figures(out, results)
    (out / "gpu_summary.json").write_text(json.dumps(fig, indent=2, default=str))
    lines = ["# GPU check", ""]
    for d in fig.get("devices", []):
        lines.append(f"- {d['name']}: " + ", ".join(f"{k} {v / 1e12:.4g} TFLOP/s" for k, v in d["flops"].items())
                     + (f"; bf16 = {d['bf16_fraction_of_h200_peak']:.1%} of the H200's 989 TFLOPS"
                        if "bf16_fraction_of_h200_peak" in d else "")
                     + (f"; bandwidth {d['mem_bw_bytes_s'] / 1e12:.2f} TB/s" if d.get("mem_bw_bytes_s") else ""))
    for k in ("training_run_s_mape", "training_jct_s_mape", "inference_ttft_mape", "inference_tpot_mape",
              "inference_e2e_mape", "inference_iteration_mape", "serving_1b_ttft_mape", "serving_1b_tpot_mape",
              "serving_1b_e2e_mape", "serving_1b_iteration_mape"):
        if fig.get(k) is not None:
            lines.append(f"- {k}: {fig[k]:.2%}")
    lines.append(f"- stages: {json.dumps(results)}")
    (out / "gpu_summary.md").write_text("\n".join(lines) + "\n")
    try:
        plot(fig, out / "gpu_check.png")
    except Exception as e:  # noqa: BLE001 - a figure must not hide the numbers
        print(f"[gpu_check] plot failed: {e}")
    print("\n".join(lines), flush=True)
    ok = all(r["rc"] == 0 for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
