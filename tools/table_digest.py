"""Run every shipped config on a small input and save its tables; compare two such snapshots.

Before/after checks for changes that must not alter results (refactors, speed work), and the
record of what a deliberate semantic change altered:

    python tools/table_digest.py snapshot /tmp/before          # on the old code
    python tools/table_digest.py snapshot /tmp/after           # on the new code
    python tools/table_digest.py compare /tmp/before /tmp/after

``snapshot`` runs each case in-process (``run_config``) and writes ``<case>/<table>.parquet``
and ``<case>/summary.json``; ``compare`` checks every table frame by frame (values, dtypes,
column order) and prints one row per case. ``--only SUBSTR`` restricts the cases.

The cases: every option of every config group on a small base run (training groups on the
quickstart, serving groups on serving_quick), every shipped workload, and every shipped
experiment that runs in simulated time.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: experiments that need a real backend, or that measure this machine
SKIP_EXPERIMENTS = {"calibrate", "sim_vs_real"}
#: request workloads (serving mode); every other workload is a training workload
TRAIN_BASE = ["experiment=quickstart", "workload.n_jobs=60"]
SERVE_BASE = ["experiment=serving_quick", "workload.max_requests=300"]
#: options that cannot run here (real device allocations)
SKIP_OPTIONS = {("memory", "torch_native"), ("cluster", "local")}  # local: measures this machine
#: options that need a setting to run at all
SERVE_EXTRA = {("model", "llama3_70b"): ["serving.tp=2"]}
#: workloads on their own defaults (not the quickstart's, whose keys belong to the synthetic one)
WORKLOAD_SIZE = {"philly": ["workload.max_jobs=300"], "alibaba": ["workload.max_jobs=300"],
                 "synthetic": ["workload.n_jobs=60"]}
#: shrink heavy experiments without changing what they exercise
EXPERIMENT_SIZE = {
    "train_policies": ["workload.max_jobs=400"],
    "train_placement": [],
    "train_hetero": [],
    "train_fractional": ["workload.max_jobs=400"],
    "fidelity_vllm_4090": [],
    "shared_cluster": [],
    "memory_in_cluster": [],
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _is_request_workload(name: str) -> bool:
    text = (CONFIGS / "workload" / f"{name}.yaml").read_text()
    target = re.search(r"^_target_:\s*(\S+)", text, re.M)
    if not target:
        return False
    import importlib

    module, _, cls = target.group(1).rpartition(".")
    return hasattr(getattr(importlib.import_module(module), cls), "requests")


def cases() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for group in ("scheduler", "placement", "memory", "cluster"):
        for opt in _options(group):
            if (group, opt) in SKIP_OPTIONS:
                continue
            out[f"train-{group}-{opt}"] = TRAIN_BASE + [f"{group}={opt}"]
    for opt in _options("workload"):
        if _is_request_workload(opt):
            size = ["workload.max_requests=300"] if opt != "requests_synthetic" else ["~workload.max_requests"]
            out[f"serve-workload-{opt}"] = ["experiment=serving_quick", f"workload={opt}"] + size
        else:
            out[f"train-workload-{opt}"] = [f"workload={opt}"] + WORKLOAD_SIZE.get(opt, [])
    for group in ("batching", "router", "model", "gpu"):
        for opt in _options(group):
            extra = ["serving.replicas=2"] if group == "router" else SERVE_EXTRA.get((group, opt), [])
            out[f"serve-{group}-{opt}"] = SERVE_BASE + [f"{group}={opt}"] + extra
    for opt in _options("cost"):  # the profiled model on each profiled GPU (the roofline's on it too)
        for gpu in ("rtx_pro_6000", "rtx4090"):
            out[f"serve-cost-{opt}-{gpu}"] = SERVE_BASE + [f"cost={opt}", f"gpu={gpu}"]
    out["serve-cost-profiled-continuous"] = SERVE_BASE + ["cost=profiled", "gpu=rtx_pro_6000", "batching=continuous"]
    out["serve-cost-profiled-qwen3_32b_tp2"] = SERVE_BASE + ["cost=profiled", "gpu=rtx_pro_6000", "model=qwen3_32b",
                                                             "serving.tp=2"]
    out["serve-cost-profiled-qwen3_30b_a3b_dp2_ep"] = SERVE_BASE + [
        "cost=profiled", "gpu=rtx_pro_6000", "model=qwen3_30b_a3b", "serving.replicas=2", "cost.dp=2",
        "cost.expert_parallel=true"]
    for opt in _options("topology"):  # co-located vs prefill/decode pools on the same 4 GPUs
        out[f"serve-topology-{opt}"] = ["experiment=serving_disagg", f"topology={opt}", "workload.max_requests=300"]
    for mem in ("paged", "contiguous", "first_fit", "buddy", "ideal"):
        for b in _options("batching"):
            out[f"serve-mem-{mem}-{b}"] = SERVE_BASE + [f"memory={mem}", f"batching={b}"]
    for opt in _options("experiment"):
        if opt in SKIP_EXPERIMENTS:
            continue
        out[f"experiment-{opt}"] = [f"experiment={opt}"] + EXPERIMENT_SIZE.get(opt, [])
    return out


def snapshot(dest: Path, only: str | None) -> int:
    from llmos_sim.run import compose, run_config

    dest.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, overrides in cases().items():
        if only and only not in name:
            continue
        folder = dest / name
        folder.mkdir(exist_ok=True)
        t0 = time.process_time()
        try:
            res = run_config(compose(overrides))
        except Exception as exc:  # a case that fails is recorded as such, and compared as such
            (folder / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
            print(f"{name:45s} ERROR {type(exc).__name__}: {str(exc)[:120]}")
            failures += 1
            continue
        for tname, df in res.tables.items():
            df.to_parquet(folder / f"{tname}.parquet", index=False)
        (folder / "summary.json").write_text(json.dumps(res.summary, sort_keys=True, default=str, indent=1))
        (folder / "overrides.txt").write_text(" ".join(overrides) + "\n")
        print(f"{name:45s} ok  {time.process_time() - t0:6.2f} CPU-s  "
              + " ".join(f"{k}={len(v)}" for k, v in res.tables.items()))
    return failures


def _cell(v):
    """A cell as plain data, whatever its storage: a tuple repr or JSON object -> the list of its
    values, "0,1,2" -> [0, 1, 2], "" -> [], arrays -> lists, NA/NaN -> None, tuples -> lists."""
    import math

    import numpy as np

    if isinstance(v, str):
        if v == "":  # an empty data cell or device list, as earlier versions stored it
            return []
        if v[:1] in "({":
            from llmos_sim.events import parse_data

            return [_cell(x) for x in parse_data(v).values()]
        if v and all(part.strip().lstrip("-").isdigit() for part in v.split(",")):
            return [int(x) for x in v.split(",")]
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_cell(x) for x in v]
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def _diff_values(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """The first difference in content, ignoring how cells are stored (``--canonical``);
    columns only added are named but do not count as a difference."""
    if set(a.columns) - set(b.columns) or len(a) > len(b):
        return _diff_frame(a, b)
    extra = len(b) - len(a)
    if extra:  # records appended after the old ones (e.g. a new kind logged at the end)
        b = b.head(len(a))
    for col in a.columns:
        x, y = [_cell(v) for v in a[col]], [_cell(v) for v in b[col]]
        if x != y:
            i = next(i for i, (p, q) in enumerate(zip(x, y)) if p != q)
            return f"{col} differs first at row {i}: {str(x[i])[:40]!r} -> {str(y[i])[:40]!r}"
    return f"+{extra} rows appended (the first {len(a)} identical)" if extra else None


def _diff_frame(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    if list(a.columns) != list(b.columns):
        return f"columns {sorted(set(a.columns) ^ set(b.columns))} differ" if set(a.columns) != set(b.columns) \
            else "column order differs"
    if len(a) != len(b):
        return f"rows {len(a)} -> {len(b)}"
    for col in a.columns:
        if str(a[col].dtype) != str(b[col].dtype):
            return f"dtype of {col}: {a[col].dtype} -> {b[col].dtype}"
        try:
            pd.testing.assert_series_equal(a[col], b[col], check_exact=True, check_names=False)
        except AssertionError:
            x, y = a[col].astype(str), b[col].astype(str)
            i = int((x != y).to_numpy().argmax())
            return f"{col} differs first at row {i}: {x.iloc[i][:40]!r} -> {y.iloc[i][:40]!r}"
    return None


def _same(x, y) -> bool:
    """Equal, with NaN equal to NaN (a summary of a run without e.g. tenants holds NaNs)."""
    if isinstance(x, float) and isinstance(y, float) and x != x and y != y:
        return True
    return x == y


def compare(before: Path, after: Path, canonical: bool = False) -> int:
    names = sorted({p.name for p in before.iterdir() if p.is_dir()} | {p.name for p in after.iterdir() if p.is_dir()})
    changed = 0
    print(f"{'case':45s} result")
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"{name:45s} only in {'after' if not a.exists() else 'before'}")
            changed += 1
            continue
        errs = [(p / "error.txt").read_text().strip() if (p / "error.txt").exists() else None for p in (a, b)]
        if errs[0] or errs[1]:
            same = errs[0] == errs[1]
            print(f"{name:45s} {'identical error' if same else 'ERROR ' + str(errs)}")
            changed += not same
            continue
        tables = sorted({p.stem for p in a.glob("*.parquet")} | {p.stem for p in b.glob("*.parquet")})
        notes = []
        for t in tables:
            pa, pb = a / f"{t}.parquet", b / f"{t}.parquet"
            if not pa.exists() or not pb.exists():
                notes.append(f"{t}: only in {'after' if not pa.exists() else 'before'}")
                continue
            d = (_diff_values if canonical else _diff_frame)(pd.read_parquet(pa), pd.read_parquet(pb))
            if d:
                notes.append(f"{t}: {d}")
        sa, sb = (json.loads((p / "summary.json").read_text()) for p in (a, b))
        keys = sorted(k for k in set(sa) | set(sb) if not _same(sa.get(k), sb.get(k)) and not k.startswith("time_")
                      and not (canonical and k not in sa))  # a key only added is no difference
        if keys:
            notes.append("summary: " + ", ".join(f"{k} {sa.get(k)!r}->{sb.get(k)!r}" for k in keys[:6])
                         + (" ..." if len(keys) > 6 else ""))
        changed += bool(notes)
        print(f"{name:45s} {'identical (' + ', '.join(tables) + ')' if not notes else '; '.join(notes)}")
    print(f"\n{len(names) - changed} identical, {changed} changed, of {len(names)} cases")
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot", help="run every case, save its tables")
    s.add_argument("dest", type=Path)
    s.add_argument("--only", default=None, help="only cases whose name contains this")
    c = sub.add_parser("compare", help="compare two snapshots frame by frame")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    c.add_argument("--canonical", action="store_true",
                   help="compare content, not storage (tuple repr vs JSON, '0,1' vs a list, float vs Int64)")
    sub.add_parser("list", help="print the cases")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for k, v in cases().items():
            print(f"{k:45s} {' '.join(v)}")
        return 0
    if args.cmd == "snapshot":
        return 1 if snapshot(args.dest, args.only) else 0
    return 1 if compare(args.before, args.after, args.canonical) else 0


if __name__ == "__main__":
    sys.exit(main())
