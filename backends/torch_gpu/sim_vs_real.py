"""Sim vs real: the same workload on the torch backend and on the calibrated SimPy model.

``python -m llmos_sim.backends.torch_gpu.sim_vs_real --out DIR [--skip-inference]``

1. calibrates the local devices into ``DIR/calibration.json`` (unless ``--calibration`` names
   an existing file), so model and measurement see the same machine state;
2. training: runs ``experiment=sim_vs_real`` with ``backend=torch`` (real matmuls, wall clock)
   and with ``backend=simpy`` (``T_d = T / Σ C_i`` with the calibrated ``C``), and compares
   per job: run time (start → finish, compute bound) and JCT (arrival → finish);
3. inference: runs a request list through the tiny real transformer with continuous batching
   and compares each request's measured TTFT and TPOT with the serving cost model's
   prediction (:mod:`llmos_sim.backends.torch_gpu.inference`).

Writes ``DIR/training_jobs.csv``, ``DIR/inference_requests.csv``, ``DIR/summary.json``,
``DIR/sim_vs_real.md`` (tables) and ``DIR/sim_vs_real.png``; the two training runs' full
results go to ``DIR/real/`` and ``DIR/sim/``. Relative error = real / sim − 1.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmos_sim.run import compose, run_config, write_results


def training_pair(out: Path, calibration: str, overrides: Sequence[str] = (), bracket_s: float = 0.0,
                  repeats: int = 1) -> tuple[pd.DataFrame, dict]:
    """Run the training workload real and simulated; return the per-job comparison and a summary.

    With ``repeats > 1`` the real run is repeated and each job's real times are the median
    over the repeats (the decisions must be identical in every repeat; checked).

    Job sizes ``T`` come from ``calibration``. With ``bracket_s > 0`` the devices are measured
    again right after the real run and the SimPy model uses the mean of the two measurements
    (``calibration_bracketed.json``): on a shared machine the achievable rate drifts with other
    load, and a bracket tracks the state the real run saw.
    """
    from llmos_sim.backends.torch_gpu.workload import CalibratedJobs

    ov = ["experiment=sim_vs_real", f"calibration={calibration}", *overrides]
    cfg_real = compose([*ov, "backend=torch"])
    ref = CalibratedJobs([1.0], dtype=str(cfg_real.dtype), calibration=calibration).flops()
    ov.append(f"workload.reference_flops={ref!r}")
    reals = [run_config(compose([*ov, "backend=torch"])) for _ in range(max(1, repeats))]
    real = reals[0]
    sim_cal = calibration
    if bracket_s > 0:
        from llmos_sim.backends.torch_gpu.calibrate import calibrate

        before = json.loads(Path(calibration).read_text())
        after = calibrate(out / "after", seconds=bracket_s, sweep=False, verbose=False)
        for d0, d1 in zip(before["devices"], after["devices"]):
            for dt, e in d0["dtypes"].items():
                if dt in d1["dtypes"]:
                    e["flops_before"], e["flops_after"] = e["flops"], d1["dtypes"][dt]["flops"]
                    e["flops"] = 0.5 * (e["flops_before"] + e["flops_after"])
                    if "cpu_share" in e and "cpu_share" in d1["dtypes"][dt]:
                        e["cpu_share"] = 0.5 * (e["cpu_share"] + d1["dtypes"][dt]["cpu_share"])
        sim_cal = str(out / "calibration_bracketed.json")
        Path(sim_cal).write_text(json.dumps(before, indent=2))
    sim = run_config(compose([*[o for o in ov if not o.startswith("calibration=")], f"calibration={sim_cal}",
                              "backend=simpy"]))
    write_results(real, out / "real", plots=False)
    write_results(sim, out / "sim", plots=False)
    dfs = [compare_jobs(r, sim) for r in reals]
    df = dfs[0].copy()
    if len(dfs) > 1:
        num = ["start_s_real", "finish_s_real", "run_s_real", "jct_s_real", "compute_s", "setup_s", "achieved_flops_s",
               "cpu_share"]
        num = [c for c in num if c in df.columns]
        df[num] = np.median(np.stack([d[num].to_numpy(dtype=float) for d in dfs]), axis=0)
        df["run_err"] = df["run_s_real"] / df["run_s_sim"] - 1.0
        df["jct_err"] = df["jct_s_real"] / df["jct_s_sim"] - 1.0
        df["run_err_single"] = dfs[0]["run_err"]
    # CPU devices only: the model assumes the CPU share the calibration got; scale the real times
    # by (share during the run / share during calibration) to see the error without contention
    cal_dev = json.loads(Path(sim_cal).read_text())["devices"][0]
    cal_share = cal_dev.get("dtypes", {}).get(str(cfg_real.dtype if cfg_real.dtype != "auto" else "fp32"), {}).get(
        "cpu_share")
    if cal_dev.get("kind") == "cpu" and cal_share and "cpu_share" in df:
        df["run_err_cpu_corrected"] = df["run_s_real"] * df["cpu_share"] / cal_share / df["run_s_sim"] - 1.0
    same_across = all(lifecycle(r.log) == lifecycle(real.log) for r in reals)
    starts_real = [s for _, _, s, _ in real.log.of("start")]
    starts_sim = [s for _, _, s, _ in sim.log.of("start")]
    ok = df["status_real"].eq("completed")
    summary = {
        "n_jobs": int(len(df)),
        "n_completed_real": int(ok.sum()),
        "same_start_order": starts_real == starts_sim,
        "same_decisions_every_repeat": same_across,
        "repeats": len(reals),
        "run_s_mape_single_run": float(dfs[0].loc[ok, "run_err"].abs().mean()),
        "cpu_share_mean": float(df["cpu_share"].mean()) if "cpu_share" in df else None,
        "cpu_share_calibration": cal_share,
        "run_s_mape_cpu_corrected": (float(df.loc[ok, "run_err_cpu_corrected"].abs().mean())
                                     if "run_err_cpu_corrected" in df else None),
        "run_s_mape": float(df.loc[ok, "run_err"].abs().mean()),
        "run_s_max_ape": float(df.loc[ok, "run_err"].abs().max()),
        "jct_s_mape": float(df.loc[ok, "jct_err"].abs().mean()),
        "makespan_real_s": float(real.summary.get("makespan_s", np.nan)),
        "makespan_sim_s": float(sim.summary.get("makespan_s", np.nan)),
        "reference_flops_s": ref,
        "sim_flops_s": float(sim.cluster.devices[0].flops),
        "achieved_flops_s_mean": float(df.loc[ok, "achieved_flops_s"].mean()),
        "sim_calibration": sim_cal,
        "backend_facts": real.facts,
    }
    return df, summary


def lifecycle(log) -> list[tuple[str, object]]:
    """The decisions of a run: its start/finish/fail/preempt records in order."""
    return [(k, s) for _, k, s, _ in log if k in ("start", "finish", "fail", "preempt")]


def compare_jobs(real, sim) -> pd.DataFrame:
    """Per job: start, finish, run (finish − start) and JCT, real vs sim, and their relative errors;
    plus the measured compute time and achieved FLOP/s from the ``measured`` records."""
    cols = ["job_id", "arrival_s", "work_flops", "start_s", "finish_s", "run_s", "jct_s", "status"]
    r = real.tables["jobs"][cols]
    s = sim.tables["jobs"][cols[:1] + cols[3:]]
    df = r.merge(s, on="job_id", suffixes=("_real", "_sim"))
    m = real.log.frame("measured")
    if len(m):
        m = m[m["status"] == "done"].groupby("subject").agg(
            compute_s=("wall_end_s", "max"), c0=("wall_start_s", "min"), flops=("done_flops", "sum"),
            setup_s=("setup_s", "sum"), cpu_s=("cpu_s", "sum"))
        m["compute_s"] = m["compute_s"] - m.pop("c0")
        m["achieved_flops_s"] = m["flops"] / m["compute_s"]
        m["cpu_share"] = m["cpu_s"] / m["compute_s"]  # CPU devices: < threads means contention
        df = df.merge(m[["compute_s", "setup_s", "achieved_flops_s", "cpu_share"]], left_on="job_id", right_index=True,
                      how="left")
    df["run_err"] = df["run_s_real"] / df["run_s_sim"] - 1.0
    df["jct_err"] = df["jct_s_real"] / df["jct_s_sim"] - 1.0
    return df


def markdown(df: pd.DataFrame, float_fmt: str = "{:.4g}") -> str:
    """A pipe table (no extra dependency)."""
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = []
    for _, row in df.iterrows():
        cells = [float_fmt.format(v) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        rows.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def plot(train: pd.DataFrame | None, infer: pd.DataFrame | None, path: Path) -> None:
    """Training: bars of real vs sim run time per job. Inference: real vs sim per request
    (TTFT, TPOT, end-to-end), one dot per request, on the diagonal when the model is right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["train"] if train is not None and len(train) else []) + (
        ["ttft", "tpot", "e2e"] if infer is not None and len(infer) else [])
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4), squeeze=False)
    for ax, key in zip(axes[0], panels):
        if key == "train":
            x = np.arange(len(train))
            ax.bar(x - 0.2, train["run_s_sim"], 0.4, label="sim (calibrated SimPy)")
            ax.bar(x + 0.2, train["run_s_real"], 0.4, label="real (torch)")
            ax.set_xticks(x, [str(j) for j in train["job_id"]])
            ax.set_xlabel("job")
            ax.set_ylabel("run time (s)")
            ax.set_title(f"training run time: MAPE {train['run_err'].abs().mean():.1%}")
            ax.legend(fontsize=8)
            continue
        sim_ms, real_ms = infer[f"{key}_sim_s"] * 1e3, infer[f"{key}_real_s"] * 1e3
        ax.scatter(sim_ms, real_ms, s=14, alpha=0.7)
        lo, hi = 0.0, float(max(sim_ms.max(), real_ms.max())) * 1.05
        ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="real = sim")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"simulated {key.upper()} (ms)")
        ax.set_ylabel(f"measured {key.upper()} (ms)")
        ax.set_title(f"serving {key.upper()}: MAPE {infer[f'{key}_err'].abs().mean():.1%}")
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _loadavg() -> list[float] | None:
    """The machine's load average (other processes skew CPU measurements), if known."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/sim_vs_real", help="output folder")
    p.add_argument("--calibration", default=None, help="use this calibration file instead of calibrating now")
    p.add_argument("--seconds", type=float, default=1.0, help="calibration budget per (device, dtype)")
    p.add_argument("--bracket-s", type=float, default=1.0,
                   help="re-measure after the real run for this long and model the mean (0: off)")
    p.add_argument("--repeats", type=int, default=3, help="real training runs; per-job medians")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--inference-overrides", nargs="*", default=[],
                   help="Hydra overrides of experiment=serving_real for the inference comparison")
    p.add_argument("--inference-repeats", type=int, default=5, help="real serving runs; per-request medians")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the training runs")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cal = a.calibration
    if cal is None:
        from llmos_sim.backends.torch_gpu.calibrate import calibrate

        calibrate(out, seconds=a.seconds, sweep=False)
        cal = str(out / "calibration.json")
    summary: dict = {"calibration": cal, "loadavg_before": _loadavg()}
    md = ["# Sim vs real\n"]
    train = infer = None
    if not a.skip_training:
        train, summary["training"] = training_pair(out, cal, a.overrides, a.bracket_s, a.repeats)
        train.to_csv(out / "training_jobs.csv", index=False)
        t = summary["training"]
        md += [f"## Training (compute bound): run-time MAPE {t['run_s_mape']:.2%} (median of {t['repeats']} real runs; "
               f"single run {t['run_s_mape_single_run']:.2%}), JCT MAPE {t['jct_s_mape']:.2%}, "
               f"same start order: {t['same_start_order']}"
               + (f"; CPU share run {t['cpu_share_mean']:.2f} vs calibration {t['cpu_share_calibration']:.2f}, "
                  f"contention-corrected MAPE {t['run_s_mape_cpu_corrected']:.2%}" if t.get("run_s_mape_cpu_corrected")
                  is not None else "") + "\n",
               markdown(train[[c for c in ["job_id", "work_flops", "run_s_sim", "run_s_real", "run_err", "jct_s_sim",
                                           "jct_s_real", "jct_err", "achieved_flops_s", "cpu_share",
                                           "run_err_cpu_corrected"] if c in train]])]
    if not a.skip_inference:
        from llmos_sim.backends.torch_gpu.inference import compare_inference

        infer, summary["inference"] = compare_inference(a.inference_overrides, repeats=a.inference_repeats)
        infer.to_csv(out / "inference_requests.csv", index=False)
        s = summary["inference"]
        md += [f"\n## Inference (experiment=serving_real: {s['model']} on {s['device']}, Poisson arrivals, the "
               f"simulator deciding its own batches): TTFT MAPE {s['ttft_mape']:.2%}, TPOT MAPE {s['tpot_mape']:.2%}, "
               f"e2e MAPE {s['e2e_mape']:.2%} (median of {s['repeats']} real runs; single run "
               f"{s['single_run_ttft_mape']:.2%} / {s['single_run_tpot_mape']:.2%} / {s['single_run_e2e_mape']:.2%}); "
               + (f"real runs against each other (noise floor): {s['real_vs_real_ttft_mape']:.2%} / "
                  f"{s['real_vs_real_tpot_mape']:.2%} / {s['real_vs_real_e2e_mape']:.2%}"
                  if "real_vs_real_tpot_mape" in s else "")
               + f"; fitted model on the real iterations: {s['iteration_mape']:.2%}; same scheduling order: "
               f"{s['same_schedule_order']}; iterations real {s['n_iterations_real']}, sim {s['n_iterations_sim']}\n",
               markdown(infer)]
    plot(train, infer, out / "sim_vs_real.png")
    summary["loadavg_after"] = _loadavg()
    md.append(f"\nload average (1, 5, 15 min) before {summary['loadavg_before']}, after {summary['loadavg_after']}\n")
    (out / "sim_vs_real.md").write_text("\n".join(md))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n".join(md))
    print(f"# results in {out}")
    return summary


if __name__ == "__main__":
    main()
