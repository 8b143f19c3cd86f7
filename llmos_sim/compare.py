"""Merge the runs of a sweep into one tidy table, aggregate over seeds, plot, report.

``python -m llmos_sim.compare <sweep dir>`` (or the Hydra callback
:class:`llmos_sim.callbacks.CompareCallback` at the end of a multirun) writes into the sweep
folder:

- ``comparison.parquet`` / ``comparison.csv``: one row per run; the overridden config values as
  columns (from each run's ``.hydra/overrides.yaml``, else by diffing the runs' ``config.yaml``),
  then ``policy`` (the varied settings except the seed, as one label), ``run_dir``, and every
  metric of the run's ``summary.json`` as a column;
- ``comparison_agg.csv``: mean, t-based 95 % confidence half-width, count and distinct count over
  seeds, per policy;
- ``plots/*.png`` and ``report.md`` (the key table with the plots embedded).

A run is any folder below the sweep folder holding ``summary.json``
(:func:`llmos_sim.run.write_results` moves it in after every other result file and removes it
before replacing any, so it always sits beside its own run's files; incomplete runs are ignored,
unreadable ones named and left out). Training runs (``jobs`` table) and serving runs
(``requests`` table) are both understood; missing tables only drop the plots that need them.
Identical replicates count once (``n_distinct``); failures stand beside every latency.

Public API: :func:`find_runs`, :func:`load_runs`, :func:`aggregate`, :func:`compare_sweep`,
:func:`write_run` (``write_results`` + the overrides, for sweeps run from Python) and
:func:`list_experiments`.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import yaml

#: summary metrics shown in the report (those present), for training and for serving runs
KEY_METRICS = (
    "jct_s_avg", "jct_s_p99", "wait_s_avg", "slowdown_avg", "makespan_s", "utilisation", "queue_len_avg",
    "n_failed", "n_unfinished",
)
KEY_METRICS_SERVING = (
    "ttft_s_mean", "ttft_s_p99", "tpot_s_mean", "e2e_s_mean", "e2e_s_p99", "throughput_tok_s", "goodput_req_s",
    "slo_attainment", "kv_util_mean", "n_preemptions", "n_failed",
)
#: metrics that get a bar chart with confidence intervals (those present)
BAR_METRICS = ("jct_s_avg", "jct_s_p99", "utilisation", "makespan_s",
               "ttft_s_mean", "e2e_s_p99", "throughput_tok_s", "goodput_req_s")
#: columns that are bookkeeping, not factors nor metrics
META_COLUMNS = ("run_dir", "run", "policy")
SEED_KEY = "seed"
OUT_FILES = ("comparison.parquet", "comparison.csv", "comparison_agg.csv", "report.md")

#: failure columns every comparison table shows beside the latencies
FAILURE_METRICS = ("n_failed", "failed_frac")
#: metric prefixes computed over completed jobs / finished requests only (labelled so)
COMPLETED_ONLY = ("jct_s_", "wait_s_", "slowdown_", "ttft_s_", "tpot_s_", "e2e_s_", "queue_s_")


class CompareWarning(UserWarning):
    """A run that could not be read (named by its file) and was left out, or replicates that
    are not independent samples."""


def t_quantile_975(dof: float) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (``scipy.stats``).
    NaN for ``dof < 1``."""
    if not dof >= 1:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def ci95(x: Iterable[float]) -> tuple[float, float, int]:
    """``(mean, half-width, n)`` of a t-based 95 % confidence interval of the mean of ``x``
    (NaNs dropped; half-width NaN for fewer than two values)."""
    a = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=float)
    n = int(a.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(a[0]), float("nan"), 1
    return float(a.mean()), float(t_quantile_975(n - 1) * a.std(ddof=1) / math.sqrt(n)), n


def text(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """Values as labels: ``str(v)``, a missing value (None, NaN) as ``–`` (pandas may keep NaN
    as a float through ``astype(str)``), a whole float of an integer column with gaps as an int."""
    def one(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

    return values.map(one)


def join_labels(df: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """One ``a / b`` label per row from the columns ``cols``."""
    return text(df[list(cols)]).agg(" / ".join, axis=1)


def completed_label(metric: str) -> str:
    """A metric's name as the comparison tables show it: latencies over completed jobs (or
    finished requests) say so, e.g. ``jct_s_avg (completed)``."""
    return f"{metric} (completed)" if metric.startswith(COMPLETED_ONLY) else metric


# ----------------------------------------------------------------------------------- loading

def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", str(p))]


def find_runs(sweep_dir: str | Path) -> list[Path]:
    """Complete runs under ``sweep_dir`` (folders holding ``summary.json``), in natural order
    (``2`` before ``10``). Hidden folders (``.hydra``, ``.partial-*``) are skipped."""
    root = Path(sweep_dir)
    runs = [p.parent for p in root.rglob("summary.json")
            if not any(part.startswith(".") for part in p.relative_to(root).parts[:-1])]
    return sorted(runs, key=_natural_key)


def _scalar(text: str) -> Any:
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return v if isinstance(v, (int, float, str, bool)) or v is None else text


def run_overrides(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's command-line overrides ``{key: value}`` from ``.hydra/overrides.yaml`` (leading
    ``+``/``++`` dropped, deletions ``~key`` ignored), or ``None`` when the file is missing."""
    f = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not f.exists():
        return None
    out: dict[str, Any] = {}
    items = _read_yaml(f) or []
    if not isinstance(items, list):
        raise ValueError(f"{f}: not a list of overrides")
    for item in items:
        item = str(item)
        if item.startswith("~") or "=" not in item:
            continue
        k, v = item.split("=", 1)
        k = k.lstrip("+")
        if k.startswith("hydra.") or k.startswith("hydra/"):
            continue
        out[k] = _scalar(v)
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out |= _flatten(v, f"{prefix}{k}.")
    elif isinstance(d, list):
        out[prefix[:-1]] = json.dumps(d)
    else:
        out[prefix[:-1]] = d
    return out


def _config_diff(configs: list[dict[str, Any]], covered: set[str]) -> list[dict[str, Any]]:
    """Per run, the flattened config values that differ between runs and are not explained by
    an override in ``covered`` (``scheduler`` covers ``scheduler.*``). A varying ``_target_``
    becomes a column named after its group holding the class name."""
    keys = sorted(set().union(*[c.keys() for c in configs])) if configs else []
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]
    rows: list[dict[str, Any]] = [{} for _ in configs]

    def is_covered(k: str) -> bool:
        return any(k == c or k.startswith(c + ".") for c in covered)

    target_groups = {k.rsplit(".", 1)[0] for k in varying if k.endswith("._target_")}
    for k in varying:
        if is_covered(k):
            continue
        if k.endswith("._target_"):
            col = k.rsplit(".", 1)[0]
            for r, c in zip(rows, configs):
                r[col] = str(c.get(k, "")).rsplit(".", 1)[-1]
        elif any(k.startswith(g + ".") for g in target_groups) and k.count(".") > 1:
            continue  # parameters of a swapped class: the class column says enough
        else:
            for r, c in zip(rows, configs):
                r[k] = c.get(k)
    return rows


def _summary_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's numeric summary metrics; ``ValueError`` naming the file when it is unreadable."""
    f = run_dir / "summary.json"
    try:
        s = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{f}: cannot read ({e})") from None
    if not isinstance(s, dict):
        raise ValueError(f"{f}: not a JSON object")
    out = {k: v for k, v in _flatten(s).items() if isinstance(v, (int, float)) or v is None}
    total = out.get("n_jobs", out.get("n_requests"))
    if isinstance(out.get("n_failed"), (int, float)) and isinstance(total, (int, float)) and total > 0:
        out.setdefault("failed_frac", out["n_failed"] / total)  # failures never vanish from a comparison
    return out


def _read_yaml(f: Path) -> Any:
    try:
        return yaml.safe_load(f.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{f}: cannot read ({e})") from None


def _readable_runs(runs: Sequence[Path]) -> list[tuple[Path, dict, dict | None, dict]]:
    """``(run, metrics, overrides, flattened config)`` of each run whose files parse; the others
    are left out with a :class:`CompareWarning` naming the file."""
    out = []
    for r in runs:
        try:
            metrics = _summary_metrics(r)
            ov = run_overrides(r)
            f = r / "config.yaml"
            cfg = _read_yaml(f) if f.exists() else {}
            if cfg is not None and not isinstance(cfg, dict):
                raise ValueError(f"{f}: not a mapping")
        except ValueError as e:
            warnings.warn(f"{e}; run left out of the comparison", CompareWarning, stacklevel=3)
            continue
        out.append((r, metrics, ov, _flatten(cfg or {})))
    return out


def load_runs(sweep_dir: str | Path, runs: Sequence[Path] | None = None) -> pd.DataFrame:
    """One row per complete run: factor columns, ``policy``, ``run``, ``run_dir`` and metrics.

    ``df.attrs["factors"]`` lists the config columns (overrides and differing config values),
    ``df.attrs["varied"]`` those that take more than one value, ``df.attrs["metrics"]`` the
    metric columns. ``policy`` joins the varied factors other than ``seed`` ("fifo / ideal").
    """
    root = Path(sweep_dir)
    runs = list(runs) if runs is not None else find_runs(root)
    readable = _readable_runs(runs)
    if not readable:
        return pd.DataFrame(columns=list(META_COLUMNS))
    runs = [r for r, *_ in readable]
    all_metrics = [m for _, m, _, _ in readable]
    ovs = [o for _, _, o, _ in readable]
    configs = [c for *_, c in readable]
    covered = set().union(*[o.keys() for o in ovs if o])
    diffs = _config_diff(configs, covered)
    rows = []
    factor_cols: list[str] = []
    for r, ov, diff, cfg, metrics in zip(runs, ovs, diffs, configs, all_metrics):
        factors = dict(ov or {})
        factors |= diff
        if SEED_KEY not in factors and SEED_KEY in cfg:
            factors[SEED_KEY] = cfg[SEED_KEY]
        for k in factors:
            if k not in factor_cols:
                factor_cols.append(k)
        row = {"run": r.name, "run_dir": str(r.relative_to(root)) if r != root else "."}
        row |= {k: v for k, v in factors.items()}
        row |= {(f"metric.{k}" if k in factors or k in META_COLUMNS else k): v for k, v in metrics.items()}
        rows.append(row)
    df = pd.DataFrame(rows)
    metric_cols = [c for c in df.columns if c not in factor_cols and c not in META_COLUMNS]
    for c in metric_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in factor_cols:  # one type per column, so parquet can store it
        vals = df[c].dropna()
        if not vals.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
            df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    varied = [c for c in factor_cols if text(df[c]).nunique(dropna=False) > 1]
    label_cols = [c for c in varied if c != SEED_KEY]
    if label_cols:
        df["policy"] = join_labels(df, label_cols)
    else:
        df["policy"] = [str(configs[i].get("name", "run")) for i in range(len(df))]
    df = df[["policy", *factor_cols, "run", "run_dir", *metric_cols]]
    df.attrs.update(factors=factor_cols, varied=varied, label_factors=label_cols, metrics=metric_cols)
    return df


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a :func:`load_runs` table (from ``attrs``, else by elimination)."""
    if "metrics" in df.attrs:
        return [c for c in df.attrs["metrics"] if c in df.columns]
    return [c for c in df.columns if c not in META_COLUMNS and c != SEED_KEY and pd.api.types.is_numeric_dtype(df[c])]


def distinct_replicates(g: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The rows of ``g`` (one policy's runs) whose metric values differ: runs with the same
    values for every metric (a trace replayed unchanged under several seeds) count once."""
    if not metrics:
        return g
    return g.loc[~g[list(metrics)].astype(float).round(12).duplicated().to_numpy()]  # NaN equals NaN here


def aggregate(df: pd.DataFrame, metrics: Sequence[str] | None = None, by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, 95 % CI half-width (``<m>_ci95``), ``n`` and ``n_distinct`` over seeds, one row per
    policy.

    Replicates whose metrics are all identical are one sample, not several: means and
    intervals are over the ``n_distinct`` distinct runs, so a policy whose seeds all gave the
    same result has no interval (NaN), never "± 0". ``by`` defaults to the varied factors
    other than the seed (or ``policy``).
    """
    all_metrics = metric_columns(df)
    metrics = [m for m in (metrics or all_metrics) if m in df.columns]
    metrics += [m for m in FAILURE_METRICS if m in df.columns and m not in metrics]  # failures always travel along
    by = list(by) if by else (["policy", *df.attrs.get("label_factors", [])])
    by = list(dict.fromkeys(c for c in by if c in df.columns))
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        distinct = distinct_replicates(g, [m for m in all_metrics if m in g.columns])
        row["n"] = int(len(g))
        row["n_distinct"] = int(len(distinct))
        for m in metrics:
            mean, half, _ = ci95(distinct[m].to_numpy(dtype=float))
            row[m] = mean
            row[f"{m}_ci95"] = half
        rows.append(row)
    return pd.DataFrame(rows)


def replicate_warnings(agg: pd.DataFrame) -> list[str]:
    """One line per policy whose seeds are not all distinct runs."""
    out = []
    for _, r in agg.iterrows():
        if "n_distinct" in r and r["n_distinct"] < r["n"]:
            out.append(f"warning: {r.get('policy', '?')}: {int(r['n'])} runs but only {int(r['n_distinct'])} distinct "
                       f"result(s) — the seed changes nothing here (e.g. a trace replayed as is), so they are not "
                       f"independent samples; mean over distinct runs"
                       + (", no confidence interval" if r["n_distinct"] < 2 else ""))
    return out


def key_metrics(df: pd.DataFrame, limit: int = 8) -> list[str]:
    """The report's metrics: those of :data:`KEY_METRICS` (then :data:`KEY_METRICS_SERVING`)
    present with some finite value; serving first when the sweep has no training runs."""
    order = (KEY_METRICS + KEY_METRICS_SERVING if "jct_s_avg" in df.columns and df["jct_s_avg"].notna().any()
             else KEY_METRICS_SERVING + KEY_METRICS)
    present = list(dict.fromkeys(m for m in order if m in df.columns and df[m].notna().any()))
    return present[:limit] if present else metric_columns(df)[:limit]


# ----------------------------------------------------------------------------------- tables

def _read_table(run_dir: Path, name: str) -> pd.DataFrame | None:
    f = run_dir / f"{name}.parquet"
    if not f.exists():
        return None
    try:
        return pd.read_parquet(f)
    except Exception:  # a damaged table only costs its plot
        return None


def latency_samples(df: pd.DataFrame, root: Path) -> tuple[dict[str, pd.Series], str]:
    """Per policy, the pooled (over distinct seeds: identical replicates count once) job
    completion times of completed jobs, or request e2e latencies of finished requests for
    serving runs; and the axis label. Keys are ``"<policy> (k of n failed)"`` when any job or
    request of the policy failed or did not finish, so a CDF never hides them."""
    pooled: dict[str, list[pd.Series]] = {}
    lost: dict[str, list[int]] = {}
    label = "job completion time (s), completed jobs"
    metrics = [m for m in metric_columns(df) if m in df.columns]
    keep = set()
    for _, g in df.groupby("policy", sort=False):
        keep |= set(distinct_replicates(g, metrics)["run_dir"])
    for policy, rd in zip(df["policy"], df["run_dir"]):
        if rd not in keep:
            continue
        run = root / rd
        jobs = _read_table(run, "jobs")
        if jobs is not None and "jct_s" in jobs:
            done = jobs[jobs["status"] == "completed"] if "status" in jobs else jobs
            pooled.setdefault(policy, []).append(done["jct_s"])
            counts = lost.setdefault(policy, [0, 0])
            counts[0] += len(jobs) - len(done)
            counts[1] += len(jobs)
            continue
        req = _read_table(run, "requests")
        if req is not None and "e2e_s" in req:
            pooled.setdefault(policy, []).append(req["e2e_s"].dropna())
            counts = lost.setdefault(policy, [0, 0])
            counts[0] += int(req["e2e_s"].isna().sum())
            counts[1] += len(req)
            label = "request end-to-end latency (s), finished requests"

    def name(p: str) -> str:
        k, n = lost.get(p, (0, 0))
        return f"{p} ({k} of {n} not completed)" if k else p

    return {name(p): pd.concat(v, ignore_index=True) for p, v in pooled.items() if v}, label


def first_seed_runs(df: pd.DataFrame) -> dict[str, str]:
    """Per policy, the run folder of its lowest seed (timelines show one representative run)."""
    d = df.sort_values(SEED_KEY, kind="stable") if SEED_KEY in df.columns else df
    return {p: g["run_dir"].iloc[0] for p, g in d.groupby("policy", sort=False)}


# ----------------------------------------------------------------------------------- report

def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        a = abs(v)
        if a != 0 and (a >= 1e5 or a < 1e-3):
            return f"{v:.3g}"
        return f"{v:,.4g}" if a < 1000 else f"{v:,.0f}"
    return str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r.to_list()) + " |")
    return "\n".join(lines)


def key_table(agg: pd.DataFrame, metrics: Sequence[str], factors: Sequence[str]) -> pd.DataFrame:
    """The report's table: factor columns, ``n`` (and ``n_distinct`` when some replicates are
    identical), the failures (``n_failed``, ``failed_frac``: always, beside the latencies) and
    ``mean ± ci`` per key metric; latencies over completed jobs are labelled ``(completed)``."""
    cols = [c for c in factors if c in agg.columns] or ["policy"]
    extra = ["n_distinct"] if "n_distinct" in agg and (agg["n_distinct"] < agg["n"]).any() else []
    out = agg[cols + ["n", *extra]].copy()
    shown = ([m for m in FAILURE_METRICS if f"{m}_ci95" in agg.columns]
             + [m for m in metrics if m not in FAILURE_METRICS])
    for m in shown:
        mean, half = agg[m], agg[f"{m}_ci95"]
        out[completed_label(m)] = [f"{_fmt(a)} ± {_fmt(b)}" if np.isfinite(b) else _fmt(a) for a, b in zip(mean, half)]
    return out


@dataclass
class Comparison:
    """What :func:`compare_sweep` produced."""

    table: pd.DataFrame
    agg: pd.DataFrame
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)


def compare_sweep(sweep_dir: str | Path, out_dir: str | Path | None = None, plots: bool = True,
                  metrics: Sequence[str] | None = None, gantt_run: str | None = None) -> Comparison:
    """Load every complete run under ``sweep_dir``, write the comparison tables, plots and
    ``report.md`` into ``out_dir`` (default: the sweep folder) and return them."""
    from llmos_sim.outputs import replace_file

    root = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    df = load_runs(root)
    if df.empty:
        raise FileNotFoundError(f"no complete runs (summary.json) under {root}")
    agg = aggregate(df)
    files = {"parquet": out / "comparison.parquet", "csv": out / "comparison.csv",
             "agg": out / "comparison_agg.csv", "report": out / "report.md"}
    # every file is written beside its name and renamed over it: a symlink of that name is
    # replaced, never followed
    replace_file(files["parquet"], lambda p: df.to_parquet(p, index=False))
    replace_file(files["csv"], lambda p: df.to_csv(p, index=False))
    replace_file(files["agg"], lambda p: agg.to_csv(p, index=False))
    shown = [m for m in (metrics or key_metrics(df)) if m in df.columns]
    made: dict[str, Path] = {}
    if plots:
        folder = out / "plots"
        if folder.is_symlink():
            folder.unlink()
        made = _comparison_plots(df, agg, root, folder, gantt_run=gantt_run, metrics=metrics)
    text = _report(df, agg, shown, made, root, out)
    replace_file(files["report"], lambda p: p.write_text(text))
    return Comparison(df, agg, out, files, made)


def _comparison_plots(df: pd.DataFrame, agg: pd.DataFrame, root: Path, folder: Path,
                      gantt_run: str | None = None, metrics: Sequence[str] | None = None) -> dict[str, Path]:
    from llmos_sim.metrics import compare_plots as cp
    from llmos_sim.metrics import plots as rp

    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    factors = df.attrs.get("label_factors", [])
    wanted = metrics or BAR_METRICS  # the user's metrics, else the key ones
    bar_metrics = [m for m in wanted if m in agg.columns and agg[m].notna().any() and m not in FAILURE_METRICS][:4]
    if bar_metrics and "failed_frac" in agg.columns:  # failures beside the latencies, always
        first_latency = next((i for i, m in enumerate(bar_metrics) if m.startswith(COMPLETED_ONLY)), -1)
        bar_metrics.insert(first_latency + 1, "failed_frac")
    if bar_metrics:
        made["bars"] = cp.metric_bars(df, agg, bar_metrics, factors, folder / "bars.png")
    samples, xlabel = latency_samples(df, root)
    if samples:
        name = "jct_cdf" if xlabel.startswith("job") else "latency_cdf"
        logx = all((s.dropna() > 0).all() for s in samples.values())
        made[name] = rp.cdf_plot(samples, folder / f"{name}.png", xlabel,
                                 f"{xlabel.split(' (')[0]} CDF, {xlabel.split(', ')[-1]} (distinct seeds pooled)",
                                 logx=logx, ylabel="fraction ≤ x")
    reps = first_seed_runs(df)
    timelines = {p: t for p, rd in reps.items() if (t := _read_table(root / rd, "timeline")) is not None and len(t)}
    if timelines:
        made["timeline"] = cp.timelines(timelines, folder / "timeline.png")
    kv = {p: t for p, rd in reps.items() if (t := _read_table(root / rd, "kv")) is not None and len(t)}
    if kv:
        made["kv"] = cp.kv_timelines(kv, folder / "kv.png")
    mem = {p: rp.memory_totals(t) for p, rd in reps.items()
           if (t := _read_table(root / rd, "memory")) is not None and len(t)}
    if mem:
        made["memory"] = rp.memory_plot(mem, folder / "memory.png")
    run = gantt_run or next(iter(reps.values()), None)
    if run is not None:
        from llmos_sim.trace_export import device_segments

        seg = device_segments(_read_table(root / run, "events"), _read_table(root / run, "jobs"))
        if seg is not None and len(seg):
            made["gantt"] = rp.gantt_plot(seg, folder / "gantt.png", title=f"device allocation — run {run}")
    return made


def _report(df: pd.DataFrame, agg: pd.DataFrame, metrics: Sequence[str], made: dict[str, Path],
            root: Path, out: Path) -> str:
    factors = df.attrs.get("label_factors", []) or ["policy"]
    varied = df.attrs.get("varied", [])
    fixed = {c: df[c].iloc[0] for c in df.attrs.get("factors", []) if c not in varied}
    n_seeds = int(df[SEED_KEY].nunique()) if SEED_KEY in df.columns else 1
    lines = [f"# Sweep comparison: `{root}`", "",
             f"{len(df)} runs · {df['policy'].nunique()} policies × {n_seeds} seed(s).",
             f"Varied: {', '.join(f'`{c}`' for c in varied) or '–'}.",
             f"Fixed overrides: {', '.join(f'`{k}={v}`' for k, v in fixed.items()) or '–'}.", "",
             "Mean ± t-based 95 % confidence half-width over seeds (– = one seed or undefined). "
             "`(completed)`: over completed jobs (finished requests) only; `n_failed` / `failed_frac` "
             "count the jobs (requests) that failed.", "",
             *[f"> {w}" for w in replicate_warnings(agg)], "",
             markdown_table(key_table(agg, metrics, factors)), "",
             "Per-run values: `comparison.csv` / `comparison.parquet`; aggregates: `comparison_agg.csv`.", ""]
    captions = {"bars": "Key metrics per policy (bars: mean over seeds; whiskers: 95 % CI; dots: seeds)",
                "jct_cdf": "Job completion time CDF of completed jobs per policy, distinct seeds pooled",
                "latency_cdf": "Request end-to-end latency CDF of finished requests per policy, distinct seeds pooled",
                "timeline": "Utilisation and queue length over time (lowest seed per policy)",
                "kv": "KV-cache utilisation over time (lowest seed per policy)",
                "memory": "Device memory allocated (solid) and reserved (dashed), summed over devices (lowest seed)",
                "gantt": "Device allocation of one run (each bar a job on a device; hatched: ended by preemption)"}
    for key, path in made.items():
        rel = path.relative_to(out) if path.is_relative_to(out) else path
        lines += [f"## {captions.get(key, key)}", "", f"![{key}]({rel.as_posix()})", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- helpers

def write_run(result, out_dir: str | Path, overrides: Sequence[str] = (), plots: bool = False) -> Path:
    """:func:`llmos_sim.run.write_results` plus ``.hydra/overrides.yaml`` (as Hydra writes it),
    so a sweep driven from Python compares with the same factor columns as a Hydra multirun."""
    from llmos_sim.run import write_results

    return write_results(result, out_dir, plots=plots, hydra={"overrides.yaml": list(overrides)})


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every ``configs/experiment/*.yaml`` (description: the file's
    first comment line that is not a ``# @package`` directive)."""
    import llmos_sim.configs as configs_pkg

    folder = Path(configs_pkg.__file__).parent / "experiment"
    out = []
    for f in sorted(folder.glob("*.yaml")):
        desc = ""
        for line in f.read_text().splitlines():
            if line.startswith("#") and "@package" not in line:
                desc = line.lstrip("# ").strip()
                break
        out.append((f.stem, desc))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m llmos_sim.compare <sweep dir> [options]``."""
    p = argparse.ArgumentParser(prog="python -m llmos_sim.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", nargs="?", help="a multirun folder (or any folder holding runs)")
    p.add_argument("--out", help="where to write (default: the sweep folder)")
    p.add_argument("--no-plots", action="store_true", help="tables and report only")
    p.add_argument("--metrics", nargs="+", help="metrics of the report's table (default: the key ones present)")
    p.add_argument("--gantt-run", help="run folder (relative to the sweep) for the Gantt chart")
    p.add_argument("--list-experiments", action="store_true", help="list the experiment configs and exit")
    a = p.parse_args(argv)
    if a.list_experiments:
        exps = list_experiments()
        width = max((len(n) for n, _ in exps), default=0)
        for name, desc in exps:
            print(f"{name:<{width}}  {desc}")
        print("\nrun one with: python -m llmos_sim experiment=<name>")
        return 0
    if not a.sweep_dir:
        p.error("sweep_dir is required (or --list-experiments)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CompareWarning)
        try:
            res = compare_sweep(a.sweep_dir, a.out, plots=not a.no_plots, metrics=a.metrics, gantt_run=a.gantt_run)
        except FileNotFoundError as e:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            print(f"error: {e}", file=sys.stderr)
            return 1
    for w in caught:
        if issubclass(w.category, CompareWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    for line in replicate_warnings(res.agg):
        print(line, file=sys.stderr)
    shown = [m for m in (a.metrics or key_metrics(res.table)) if m in res.table.columns]
    factors = res.table.attrs.get("label_factors", []) or ["policy"]
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(key_table(res.agg, shown, factors).to_string(index=False))
    print(f"\n{len(res.table)} runs → {res.files['parquet']}, {res.files['csv'].name}, {res.files['report'].name}"
          + (f", {len(res.plots)} plots in {res.out_dir / 'plots'}" if res.plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
