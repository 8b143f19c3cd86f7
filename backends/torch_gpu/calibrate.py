"""Calibration: measure each local device and write a cluster config the SimPy backend can use.

``python -m llmos_sim.backends.torch_gpu.calibrate [--out DIR] [--seconds S]`` measures, per
local device (every CUDA GPU, else the CPU):

- achieved matmul FLOP/s per dtype (fp32, bf16; fp16 on GPUs) at the size the torch backend
  runs (:data:`~llmos_sim.backends.torch_gpu.devices.DEFAULT_MATMUL_N`), with the same stepping
  loop, plus a small size sweep for reference;
- memory bandwidth (device-to-device copy).

It writes ``DIR/calibration.json`` (read by ``cluster=local`` and the torch backend; point
``$LLMOS_CALIBRATION`` at it, or keep the default ``outputs/calibration/``) and
``DIR/cluster/calibrated.yaml``, a ``llmos_sim.hardware.build_cluster`` config with custom
device FLOP/s, usable as ``python -m llmos_sim --config-dir DIR cluster=calibrated``.

``python -m llmos_sim experiment=calibrate backend=torch`` runs the same thing (the run builder
dispatches ``mode: calibrate`` to :func:`calibrate` with the ``calibration`` config node).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Sequence

import torch

from llmos_sim.backends.torch_gpu.devices import (DEFAULT_CALIBRATION, DEFAULT_MATMUL_N, DTYPES, apply_threads,
                                                  default_arena_bytes, discover, resolve_dtype)
from llmos_sim.backends.torch_gpu.work import measure_bandwidth, measure_matmul


def calibrate(out_dir: str | Path | None = None, seconds: float = 1.0, dtypes: Sequence[str] | None = None,
              sweep: bool = True, job_dtype: str = "auto", mem_bytes: int | None = None,
              threads: int | None = None, verbose: bool = True) -> dict:
    """Measure every local device; write ``calibration.json`` and ``cluster/calibrated.yaml``
    into ``out_dir`` (default ``outputs/calibration``); return the calibration dict.

    ``seconds``: timing budget per (device, dtype) measurement; ``dtypes``: default fp32, bf16
    (+ fp16 on GPUs); ``job_dtype``: the dtype whose rate becomes the cluster's ``C``.
    """
    out = Path(out_dir) if out_dir is not None else Path(DEFAULT_CALIBRATION).parent
    apply_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    devices = []
    for dev in discover():
        ds = list(dtypes) if dtypes else (["fp32", "bf16", "fp16"] if dev.kind == "cuda" else ["fp32", "bf16"])
        entry: dict = {"index": dev.index, "name": dev.name, "kind": dev.kind, "torch_device": dev.torch_device,
                       "total_mem_bytes": dev.total_mem_bytes, "dtypes": {}, "sweep": {}}
        for dt in ds:
            n = DEFAULT_MATMUL_N[(dev.kind, dt)]
            t = time.perf_counter()
            share: list = []
            f = measure_matmul(dev.torch_device, DTYPES[dt], n, seconds=seconds, cpu_share=share)
            entry["dtypes"][dt] = {"flops": f, "matmul_n": n, "cpu_share": share[0]}
            if verbose:
                print(f"[calibrate] {dev.torch_device} {dev.name} {dt} n={n}: {f / 1e12:.4g} TFLOP/s "
                      f"({time.perf_counter() - t:.1f} s)", flush=True)
            if sweep:
                sizes = [n // 4, n // 2, n * 2] if dev.kind == "cuda" else [n // 4, n // 2, n * 2]
                entry["sweep"][dt] = {str(s): measure_matmul(dev.torch_device, DTYPES[dt], s, seconds=seconds / 4,
                                                             warmup_s=0.05) for s in sizes}
        bw_bytes = (1 << 30) if dev.kind == "cuda" else (64 << 20)
        entry["mem_bw_bytes_s"] = measure_bandwidth(dev.torch_device, bw_bytes, seconds=min(seconds, 0.5))
        entry["mem_bytes"] = int(mem_bytes) if mem_bytes is not None else default_arena_bytes(dev)
        if verbose:
            print(f"[calibrate] {dev.torch_device} bandwidth {entry['mem_bw_bytes_s'] / 1e9:.4g} GB/s", flush=True)
        if dev.kind == "cuda":
            torch.cuda.empty_cache()
        devices.append(entry)
    cal = {"version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "devices": devices}
    (out / "calibration.json").write_text(json.dumps(cal, indent=2))
    (out / "cluster").mkdir(exist_ok=True)
    (out / "cluster" / "calibrated.yaml").write_text(cluster_yaml(cal, job_dtype))
    if verbose:
        print(f"[calibrate] wrote {out / 'calibration.json'} and {out / 'cluster' / 'calibrated.yaml'}", flush=True)
    return cal


def cluster_yaml(cal: dict, job_dtype: str = "auto") -> str:
    """A ``build_cluster`` config: one node, one group per distinct calibrated device."""
    lines = ["# Written by llmos_sim.backends.torch_gpu.calibrate: the local devices' measured rates.",
             f"# host {cal.get('host')}, torch {cal.get('torch')}, {cal.get('created')}",
             "_target_: llmos_sim.hardware.build_cluster", "groups:"]
    for d in cal["devices"]:
        dt = resolve_dtype(job_dtype, d["kind"])
        f = d["dtypes"][dt]["flops"]
        name = f"{d['name']}:{dt}".replace('"', "")
        lines += ["  - nodes: 1", "    devices_per_node: 1",
                  f"    device: {{name: \"{name}\", flops: {f:.6e}, mem_bytes: {int(d['mem_bytes'])}, "
                  f"mem_bw_bytes_s: {d['mem_bw_bytes_s']:.6e}}}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(DEFAULT_CALIBRATION).parent), help="output folder")
    p.add_argument("--seconds", type=float, default=1.0, help="timing budget per (device, dtype)")
    p.add_argument("--dtypes", nargs="*", default=None, help="dtypes to measure (default fp32 bf16 [+fp16 on GPU])")
    p.add_argument("--no-sweep", action="store_true", help="skip the matmul size sweep")
    p.add_argument("--job-dtype", default="auto", help="dtype whose rate is the cluster's C")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    a = p.parse_args(argv)
    return calibrate(a.out, a.seconds, a.dtypes, sweep=not a.no_sweep, job_dtype=a.job_dtype, threads=a.threads)


if __name__ == "__main__":
    main()
