"""Smoke-test an installed llmos_sim from outside the repository: the quickstart, every shipped
workload (short runs) and the experiments that read nested data, then a comparison of them.

CI runs it in a fresh virtual environment holding only the built wheel, from /tmp, so a config
or a trace that the wheel leaves out fails here. Every ``configs/workload/*.yaml`` of the
installed package must be covered by a run below (a new workload without one fails).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: (label, overrides): short runs, seconds each
RUNS = [
    ("quickstart", ["experiment=quickstart"]),
    ("synthetic", ["workload=synthetic", "workload.n_jobs=50"]),
    ("philly", ["workload=philly", "workload.max_jobs=200"]),
    ("pollux", ["workload=pollux"]),
    ("tiresias", ["workload=tiresias", "cluster=tiresias_n32g4"]),
    ("alibaba", ["experiment=train_fractional", "workload.max_jobs=300"]),
    ("train_hetero", ["experiment=train_hetero"]),
    ("azure_conv", ["mode=serving", "workload=azure_conv", "workload.max_requests=200"]),
    ("azure_code", ["mode=serving", "workload=azure_code", "workload.max_requests=200"]),
    ("arxiv_summarization", ["mode=serving", "workload=arxiv_summarization", "workload.max_requests=200"]),
    ("mooncake_conv", ["mode=serving", "workload=mooncake_conv", "workload.max_requests=200"]),
    ("mooncake_synthetic", ["mode=serving", "workload=mooncake_synthetic", "workload.max_requests=200"]),
    ("requests_synthetic", ["mode=serving", "workload=requests_synthetic", "workload.n=100"]),
    ("vllm_rtx4090", ["experiment=fidelity_vllm_4090"]),
    ("profiled", ["mode=serving", "workload=azure_conv", "workload.max_requests=200", "cost=profiled",
                  "gpu=rtx_pro_6000"]),
    ("disaggregated", ["experiment=serving_disagg", "topology=disaggregated", "workload.max_requests=200"]),
    ("autoscaled", ["experiment=shared_autoscale"]),
]


def main() -> int:
    import llmos_sim
    import llmos_sim.configs

    pkg = Path(llmos_sim.__file__).parent
    print(f"llmos_sim {llmos_sim.__version__} from {pkg}")
    shipped = {p.stem for p in (Path(llmos_sim.configs.__file__).parent / "workload").glob("*.yaml")}
    covered = {label for label, _ in RUNS} | {ov.split("=", 1)[1] for _, ovs in RUNS for ov in ovs
                                              if ov.startswith("workload=")}
    missing = sorted(shipped - covered)
    if missing:
        print(f"FAIL: shipped workloads without a smoke run: {missing}")
        return 1
    out = Path(tempfile.mkdtemp(prefix="llmos_smoke_"))
    failed = []
    for i, (label, ovs) in enumerate(RUNS):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "llmos_sim", *ovs, "output.plots=false",
                            f"hydra.run.dir={out / str(i)}"], capture_output=True, text=True)
        ok = p.returncode == 0 and (out / str(i) / "complete.json").is_file()
        print(f"{'ok  ' if ok else 'FAIL'} {time.perf_counter() - t0:5.1f} s  {label}: {' '.join(ovs)}")
        if not ok:
            failed.append(label)
            print(p.stdout[-1500:], p.stderr[-3000:], sep="\n")
    p = subprocess.run([sys.executable, "-m", "llmos_sim.compare", str(out), "--no-plots"], capture_output=True,
                       text=True)
    print(f"{'ok  ' if p.returncode == 0 else 'FAIL'} compare over {len(RUNS)} runs")
    if p.returncode != 0:
        failed.append("compare")
        print(p.stderr[-3000:])
    print(f"{len(RUNS) - len(failed)} of {len(RUNS)} runs ok" + (f"; outputs in {out}" if failed else ""))
    if not failed:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
