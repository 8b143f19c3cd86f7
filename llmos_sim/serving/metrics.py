"""Serving tables and summary metrics: pure functions of the event log.

- ``requests``: one row per request — arrival, replica, schedule / first-token / finish times,
  TTFT (first token − arrival), TPOT ((finish − first token) / (output − 1); NaN for a single
  output token), e2e (finish − arrival), queueing delay (first schedule − arrival),
  preemptions, failure reason.
- ``batches``: one row per iteration (``n_iters`` = 1) or fast-forwarded span of decode
  iterations (``n_iters`` > 1; tokens and duration are span totals).
- ``kv``: the KV timeline per replica: bytes held (from the pool), bytes of cached tokens,
  capacity, utilisation and waste (held − tokens).
- ``summary``: throughput (tokens/s), goodput under TTFT/TPOT SLOs, TTFT/TPOT/e2e statistics,
  time-weighted KV utilisation, preemptions; and the same named as vLLM's serving benchmark
  names them (:func:`vllm_summary`): ``mean_/median_/std_/p50_/p90_/p95_/p99_`` ``ttft``,
  ``tpot``, ``itl`` and ``e2el`` in ms, ``request_throughput``, ``output_throughput``,
  ``total_token_throughput``, ``request_goodput`` (requests/s meeting their SLOs: the
  ``slo_met`` column).

Inter-token latency (ITL): the gaps between consecutive output tokens of a request, over all
tokens of all requests (vLLM's ``itl``). A decode token's gap is its iteration's duration (for a
fast-forwarded span of ``k`` iterations: ``duration / k`` each), except for the tokens the
replica logged an ``itl_adjust`` record for (naming the batch record): sequences that sat out iterations (a prefill-only
iteration of vLLM v0's scheduler, a token budget spent on prefills) or were preempted, whose
gap is longer by the wait; and static batching's padding, which is no token. Per request the
gaps add up to ``finish - first token`` exactly, so the token-weighted mean ITL is
``Σ (finish − first token) / Σ (output − 1)``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from llmos_sim import events as E


SERVING_KINDS = (E.REQ_ARRIVE, E.REQ_SCHEDULE, E.REQ_FIRST_TOKEN, E.REQ_FINISH, E.REQ_PREEMPT, E.REQ_FAIL, E.REQ_CACHE,
                 E.BATCH, E.BATCH_SPAN, E.KV_SAMPLE)


class Frames:
    """Typed tables of the serving kinds from one log, built from the log grouped by kind
    (:class:`~llmos_sim.events.ByKind`, shared with the events table) rather than by a Python
    pass over the whole log per kind, as :meth:`EventLog.frame` does."""

    def __init__(self, log: E.EventLog, by_kind: "E.ByKind | None" = None) -> None:
        self._groups = (by_kind if by_kind is not None else E.ByKind(log.records)).groups

    def rows(self, kind: str) -> list[tuple]:
        """One kind's records as ``(seq, time_s, subject, *data)`` tuples, in log order."""
        g = self._groups.get(kind)
        if g is None:
            return []
        return [(i, t, s, *d) for i, t, s, d in zip(g.seq.tolist(), g.time_s, g.subject, g.data)]

    def columns(self, kind: str) -> "dict[str, np.ndarray] | None":
        """One kind's records as numpy columns, when every column is plain int64 or float64
        (what :meth:`frame` would infer for them); ``None`` otherwise (no records, uneven
        rows, strings, missing values, ...)."""
        return self._columns(kind, False)

    def _columns(self, kind: str, strings: bool) -> "dict[str, np.ndarray | list] | None":
        """:meth:`columns`, with ``strings``: also columns of exact ``str`` values (as lists,
        for a table to infer their dtype as it would from the records)."""
        g = self._groups.get(kind)
        fields = E.FIELDS[kind]
        data = g.data_columns() if g is not None else None
        if data is None or len(data) != len(fields):
            return None
        out = {"seq": g.seq}
        for j, (name, col) in enumerate(zip(("time_s", "subject", *fields), (g.time_s, g.subject, *data))):
            a = np.array(col) if j < 2 else g.data_array(j - 2)
            if a.dtype == np.int64 or (a.dtype == np.float64 and not np.isnan(a).any()):
                out[name] = a
            elif strings and a.dtype.kind == "U" and set(map(type, col)) == {str}:
                out[name] = list(col)
            else:
                return None
        return out

    def frame(self, kind: str) -> pd.DataFrame:
        """One kind's records as a table, as :meth:`EventLog.frame` would build it."""
        cols = self._columns(kind, True)
        if cols is not None:
            return pd.DataFrame(cols)
        return pd.DataFrame.from_records(self.rows(kind), columns=["seq", "time_s", "subject", *E.FIELDS[kind]])


def request_table(log) -> pd.DataFrame:
    """One row per request, from REQ_* records (``log``: an EventLog or :class:`Frames`)."""
    arr = log.frame(E.REQ_ARRIVE)
    df = pd.DataFrame({
        "request": arr["subject"].to_numpy(),
        "service": arr["service"].to_numpy() if len(arr) else [],
        "arrival_s": arr["time_s"].to_numpy(dtype=float),
        "prompt_tokens": arr["prompt_tokens"].to_numpy(dtype=np.int64) if len(arr) else np.zeros(0, np.int64),
        "output_tokens": arr["output_tokens"].to_numpy(dtype=np.int64) if len(arr) else np.zeros(0, np.int64),
    }).set_index("request")

    def first(kind: str) -> pd.DataFrame:
        f = log.frame(kind)
        return f.drop_duplicates("subject", keep="first").set_index("subject")

    sch, ft, fin = first(E.REQ_SCHEDULE), first(E.REQ_FIRST_TOKEN), first(E.REQ_FINISH)
    df["replica"] = pd.array(sch["replica"].reindex(df.index), dtype="Int64")  # <NA>: never scheduled
    df["schedule_s"] = sch["time_s"].reindex(df.index).to_numpy(dtype=float)
    df["first_token_s"] = ft["time_s"].reindex(df.index).to_numpy(dtype=float)
    df["finish_s"] = fin["time_s"].reindex(df.index).to_numpy(dtype=float)
    pre = log.frame(E.REQ_PREEMPT)
    df["preemptions"] = (pre.groupby("subject").size().reindex(df.index).fillna(0).astype(np.int64).to_numpy()
                         if len(pre) else 0)
    fail = first(E.REQ_FAIL)
    df["fail_reason"] = fail["reason"].reindex(df.index).to_numpy() if len(fail) else None
    cache = first(E.REQ_CACHE)  # prefix caching: what the first admission found cached
    for c in ("cached_tokens", "hit_blocks", "hash_blocks", "host_blocks"):
        df[c] = (cache[c].reindex(df.index).fillna(0).astype(np.int64).to_numpy() if len(cache)
                 else np.zeros(len(df), np.int64))
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["e2e_s"] = df["finish_s"] - df["arrival_s"]
    df["queue_s"] = df["schedule_s"] - df["arrival_s"]
    denom = (df["output_tokens"] - 1).where(df["output_tokens"] > 1)
    df["tpot_s"] = (df["finish_s"] - df["first_token_s"]) / denom
    return df.reset_index()


def batch_table(log) -> pd.DataFrame:
    """Iterations and fast-forwarded spans, in log order, with ``n_iters``."""
    if isinstance(log, Frames):  # numeric columns of both kinds: merged in log order directly
        b, s = log.columns(E.BATCH), log.columns(E.BATCH_SPAN)
        if b is not None and s is not None:
            b["n_iters"] = np.ones(len(b["seq"]), dtype=np.int64)
            seq = np.concatenate([b["seq"], s["seq"]])
            order = np.argsort(seq, kind="stable")
            out = {"seq": seq[order], "time_s": None, "replica": None, "n_iters": None}
            for c in ("time_s", "subject", "n_iters", "n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s",
                      "kv_used_bytes"):
                out["replica" if c == "subject" else c] = np.concatenate([b[c], s[c]])[order]
            return pd.DataFrame(out)
    b = log.frame(E.BATCH).rename(columns={"subject": "replica"})
    b.insert(3, "n_iters", 1)
    s = log.frame(E.BATCH_SPAN).rename(columns={"subject": "replica"})
    cols = ["seq", "time_s", "replica", "n_iters", "n_prefill_tokens", "n_decode_tokens", "n_seqs", "duration_s",
            "kv_used_bytes"]
    # an empty kind is left out: concatenated, its all-NaN object columns would make every column object
    parts = [f.reindex(columns=cols) for f in (b, s) if len(f)] or [b.reindex(columns=cols)]
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return out.sort_values("seq", kind="stable").reset_index(drop=True)


def kv_table(log) -> pd.DataFrame:
    """KV timeline: one sample per iteration or span start, per replica."""
    k = log.frame(E.KV_SAMPLE).rename(columns={"subject": "replica"})
    if len(k):
        k["utilisation"] = k["used_bytes"] / k["capacity_bytes"]
        k["waste_bytes"] = k["used_bytes"] - k["token_bytes"]
    else:
        k = k.reindex(columns=["seq", "time_s", "replica", "used_bytes", "token_bytes", "capacity_bytes",
                               "free_blocks", "utilisation", "waste_bytes"])
    return k


def add_slo_columns(req: pd.DataFrame, log, slo_ttft_s: float = math.inf, slo_tpot_s: float = math.inf,
                    slo_e2e_s: float = math.inf) -> pd.DataFrame:
    """Per-request SLOs (the request's own from its ``req_slo`` record, else the run's) and
    ``slo_met``: finished within all three (TPOT only where defined). In place; returns ``req``."""
    own = log.frame(E.REQ_SLO)
    own = own.drop_duplicates("subject").set_index("subject") if len(own) else None
    for c, default in (("slo_ttft_s", slo_ttft_s), ("slo_tpot_s", slo_tpot_s), ("slo_e2e_s", slo_e2e_s)):
        v = np.full(len(req), float(default))
        if own is not None:
            mine = own[c].reindex(req["request"]).to_numpy(dtype=float)
            v = np.where(np.isnan(mine), v, mine)
        req[c] = v
    req["slo_met"] = (req["finish_s"].notna() & (req["ttft_s"] <= req["slo_ttft_s"])
                      & (req["tpot_s"].fillna(0.0) <= req["slo_tpot_s"]) & (req["e2e_s"] <= req["slo_e2e_s"]))
    return req


def itl_samples(log, batches: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token latencies as ``(gap_s, count)`` pairs (see the module docstring): one pair per
    batch record (its regular decode tokens) and one per ``itl_adjust`` record (its late tokens).
    ``batches``: the batch table (rows in log order, as :func:`batch_table` builds it)."""
    if not len(batches):
        return np.zeros(0), np.zeros(0, np.int64)
    b = batches[["seq", "replica", "n_iters", "n_decode_tokens", "duration_s"]]
    d = b["duration_s"].to_numpy(float) / b["n_iters"].to_numpy(float)
    reg = b["n_decode_tokens"].to_numpy(np.int64).copy()
    adj = log.frame(E.ITL_ADJUST)
    if not len(adj):
        return d, reg
    row = np.searchsorted(b["seq"].to_numpy(np.int64), adj["batch_seq"].to_numpy(np.int64))  # its batch record
    m = adj
    n = m["n_tokens"].to_numpy(np.int64)
    taken = np.where(n < 0, -n, np.where(m["in_decode"].to_numpy(np.int64) > 0, n, 0))
    np.subtract.at(reg, row, taken)
    late = n > 0
    return (np.concatenate([d, d[row[late]] + m["wait_s"].to_numpy(float)[late]]),
            np.concatenate([reg, n[late]]))


def weighted_percentiles(values: np.ndarray, counts: np.ndarray, qs) -> list[float]:
    """``np.percentile(np.repeat(values, counts), qs)`` (linear interpolation) without the repeat."""
    keep = counts > 0
    v, w = np.asarray(values, float)[keep], np.asarray(counts, np.int64)[keep]
    if not len(v):
        return [math.nan for _ in qs]
    o = np.argsort(v, kind="stable")
    v, cw = v[o], np.cumsum(w[o])
    out = []
    for q in qs:
        pos = q / 100.0 * (cw[-1] - 1)
        lo = math.floor(pos)
        i = int(np.searchsorted(cw, lo, side="right"))
        j = int(np.searchsorted(cw, lo + 1, side="right")) if pos > lo else i
        out.append(float(v[i] + (pos - lo) * (v[min(j, len(v) - 1)] - v[i])))
    return out


PERCENTILES = (50, 90, 95, 99)


def _stats_ms(name: str, values: np.ndarray, counts: np.ndarray | None = None) -> dict[str, float]:
    """vLLM's names: ``mean_``, ``median_``, ``std_``, ``p50_`` … ``p99_`` + ``name`` + ``_ms``."""
    v = np.asarray(values, float) * 1e3
    w = np.ones(len(v), np.int64) if counts is None else np.asarray(counts, np.int64)
    ok = ~np.isnan(v) & (w > 0)
    v, w = v[ok], w[ok]
    if not w.sum():
        return {f"{k}_{name}_ms": math.nan for k in ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES))}
    mean = float(np.average(v, weights=w))
    ps = weighted_percentiles(v, w, (50, *PERCENTILES))
    out = {f"mean_{name}_ms": mean, f"median_{name}_ms": ps[0],
           f"std_{name}_ms": float(math.sqrt(np.average((v - mean) ** 2, weights=w)))}
    out.update({f"p{p}_{name}_ms": x for p, x in zip(PERCENTILES, ps[1:])})
    return out


def vllm_summary(req: pd.DataFrame, itl: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """The run's metrics named as vLLM's ``benchmark_serving`` names them (latencies in ms over
    completed requests; throughputs over first arrival → last finish; ``request_goodput`` counts
    requests meeting their own SLOs, the ``slo_met`` column)."""
    done = req[req["finish_s"].notna()]
    start = float(req["arrival_s"].min()) if len(req) else 0.0
    span = max((float(done["finish_s"].max()) if len(done) else start) - start, 1e-12)
    out = {"completed": float(len(done)), "request_throughput": len(done) / span,
           "output_throughput": float(done["output_tokens"].sum()) / span,
           "total_token_throughput": float((done["output_tokens"] + done["prompt_tokens"]).sum()) / span,
           "request_goodput": float(req["slo_met"].sum()) / span if "slo_met" in req else math.nan}
    out.update(_stats_ms("ttft", done["ttft_s"].to_numpy(float)))
    out.update(_stats_ms("tpot", done["tpot_s"].to_numpy(float)))
    out.update(_stats_ms("itl", *itl))
    out.update(_stats_ms("e2el", done["e2e_s"].to_numpy(float)))
    return out


def _time_weighted(k: pd.DataFrame, col: str, end_s: float) -> float:
    """Mean of ``col`` over time per replica (step function), averaged over replicas."""
    vals = []
    for _, g in k.groupby("replica"):
        t = np.append(g["time_s"].to_numpy(float), end_s)
        w = np.diff(t)
        if w.sum() > 0:
            vals.append(float((g[col].to_numpy(float) * w).sum() / w.sum()))
    return float(np.mean(vals)) if vals else 0.0


def prefix_summary(req: pd.DataFrame) -> dict[str, float]:
    """Prefix-cache hit rates over the requests that carried prefix hashes and were admitted
    with caching on (NaN when none): tokens (cached prompt tokens / their prompt tokens) and
    hash blocks (hit / all of theirs)."""
    if "hash_blocks" not in req:
        return {}
    h = req[req["hash_blocks"] > 0]
    if not len(h):
        return {"prefix_hit_rate_tokens": math.nan, "prefix_hit_rate_blocks": math.nan, "prefix_cached_tokens": 0.0,
                "prefix_host_hit_rate_blocks": math.nan}
    return {"prefix_hit_rate_tokens": float(h["cached_tokens"].sum() / h["prompt_tokens"].sum()),
            "prefix_hit_rate_blocks": float(h["hit_blocks"].sum() / h["hash_blocks"].sum()),
            "prefix_cached_tokens": float(h["cached_tokens"].sum()),
            "prefix_host_hit_rate_blocks": float(h["host_blocks"].sum() / h["hash_blocks"].sum())}


def summary(req: pd.DataFrame, batches: pd.DataFrame, kv: pd.DataFrame, slo_ttft_s: float = math.inf,
            slo_tpot_s: float = math.inf) -> dict[str, float]:
    """Run-level metrics. Throughput counts output tokens of finished requests over the time
    from the first arrival to the last finish; goodput counts requests meeting both SLOs."""
    done = req[req["finish_s"].notna()]
    start = float(req["arrival_s"].min()) if len(req) else 0.0
    end = float(done["finish_s"].max()) if len(done) else start
    span = max(end - start, 1e-12)
    tpot_ok = done["tpot_s"].fillna(0.0) <= slo_tpot_s
    good = done[(done["ttft_s"] <= slo_ttft_s) & tpot_ok]

    def stats(name: str, s: pd.Series) -> dict[str, float]:
        s = s.dropna()
        if not len(s):
            return {f"{name}_mean": math.nan, f"{name}_p50": math.nan, f"{name}_p99": math.nan}
        return {f"{name}_mean": float(s.mean()), f"{name}_p50": float(s.quantile(0.5)),
                f"{name}_p99": float(s.quantile(0.99))}

    out = {
        "n_requests": float(len(req)),
        "n_finished": float(len(done)),
        "n_failed": float(req["fail_reason"].notna().sum()),
        "makespan_s": span,
        "throughput_tok_s": float(done["output_tokens"].sum()) / span,
        "total_tok_s": float((done["output_tokens"] + done["prompt_tokens"]).sum()) / span,
        "throughput_req_s": len(done) / span,
        "goodput_req_s": len(good) / span,
        "slo_attainment": len(good) / len(req) if len(req) else math.nan,
        **stats("ttft_s", done["ttft_s"]),
        **stats("tpot_s", done["tpot_s"]),
        **stats("e2e_s", done["e2e_s"]),
        **stats("queue_s", done["queue_s"]),
        "n_preemptions": float(req["preemptions"].sum()),
        **prefix_summary(req),
        "n_iterations": float(batches["n_iters"].sum()) if len(batches) else 0.0,
        "n_batch_records": float(len(batches)),
        "kv_util_mean": _time_weighted(kv, "utilisation", end) if len(kv) else 0.0,
        "kv_util_max": float(kv["utilisation"].max()) if len(kv) else 0.0,
        "kv_waste_frac_mean": (float((kv["waste_bytes"] / kv["used_bytes"].where(kv["used_bytes"] > 0)).mean())
                               if len(kv) else 0.0),
    }
    return out
