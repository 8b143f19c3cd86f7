"""Inference request workloads: the :class:`Request` type and loaders for shipped traces.

Every workload class has ``requests(rng) -> list[Request]`` (sorted by arrival, ids 0..n-1
in that order); the run builder recognises request workloads by that method. Shipped data is
read from ``llmos_sim/workload/data`` (a path relative to this package), so a fresh clone runs
offline. Malformed input raises :class:`WorkloadError` naming the file and line.

- :class:`AzureLLMTrace`: Azure LLM inference trace 2023 (conv / code), replayed from
  ``TIMESTAMP`` relative to the first, with rate rescaling and a request cap.
- :class:`ArxivSummarization`: Splitwise/Vidur arXiv summarisation lengths with seeded
  Poisson arrivals.
- :class:`VllmBenchmarkRequests`: the 300 requests of the real vLLM run on an RTX 4090
  (``arrival_time`` relative to the first).
- :class:`SyntheticRequests`: Poisson arrivals with uniform or fixed lengths.
- :class:`ExplicitRequests`: a literal list (tests, small configs).
"""
from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from llmos_sim.validate import count, non_negative, optional_count, positive
from llmos_sim.workload.base import TraceError, check_fields, read_csv_text, read_text

DATA_DIR = Path(__file__).resolve().parent / "data"


#: malformed request-workload input: the same error as a malformed job trace (one type for every
#: trace reader; the message names the file and the line); the name is kept for callers
WorkloadError = TraceError


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request. ``arrival_s`` from the start of the run; ``output_tokens`` >= 1
    (the first comes from the prefill); SLOs optional (seconds)."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    service: str = "default"
    priority: int = 0  #: lower is more important
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    predicted_output_tokens: int | None = None
    #: prefix block hashes: ``prefix_hashes[j]`` names the content of prompt tokens
    #: ``[0, (j + 1) · prefix_block_tokens)``, so equal ids mean reusable KV (Mooncake's
    #: ``hash_ids``); empty = nothing shareable. Used by prefix caching and prefix-aware routing.
    prefix_hashes: tuple[int, ...] = ()
    prefix_block_tokens: int = 0  #: prompt tokens one hash covers (512 in the Mooncake traces)
    slo_e2e_s: float | None = None  #: end-to-end latency SLO (s), optional like the other two

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.id}: prompt_tokens must be >= 1, got {self.prompt_tokens}")
        if self.output_tokens < 1:
            raise ValueError(f"request {self.id}: output_tokens must be >= 1, got {self.output_tokens}")
        if not (self.arrival_s >= 0 and math.isfinite(self.arrival_s)):
            raise ValueError(f"request {self.id}: arrival_s must be finite and >= 0, got {self.arrival_s}")
        if self.prefix_hashes and self.prefix_block_tokens < 1:
            raise ValueError(f"request {self.id}: prefix_hashes need prefix_block_tokens >= 1")


def _resolve(path: str | Path | None, default: str) -> Path:
    p = Path(path) if path is not None else DATA_DIR / default
    if not p.is_absolute() and not p.exists():
        p = DATA_DIR / p
    if not p.exists():
        raise WorkloadError(f"{p}: no such file")
    return p


def _read_csv(path: Path, columns: Sequence[str], ints: Sequence[str] = ()) -> pd.DataFrame:
    """Read a (gzipped) CSV with the given columns, kept as strings for validation; the
    ``ints`` columns as int64 when the C parser reads every value of them as one (else they
    stay strings too, and :func:`_ints` parses and checks them)."""
    text = read_text(path, WorkloadError)
    check_fields(path, text, WorkloadError)
    df = None
    if ints:
        try:
            df = pd.read_csv(io.StringIO(text), dtype=defaultdict(lambda: str, {c: np.int64 for c in ints}),
                             keep_default_na=False, index_col=False)
        except (ValueError, OverflowError, TypeError):  # not all plain integers: as strings below
            df = None
    if df is None:
        df = read_csv_text(path, text, WorkloadError)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WorkloadError(f"{path}: line 1: missing column(s) {missing}; header has {list(df.columns)}")
    if len(df) == 0:
        raise WorkloadError(f"{path}: no data rows")
    return df


def _ints(df: pd.DataFrame, col: str, path: Path, minimum: int) -> np.ndarray:
    if df[col].dtype == np.int64:  # read as integers (see _read_csv)
        v = df[col].to_numpy()
        if not len(v) or ((v >= minimum).all() and v.max() <= 2**53):  # (larger: as floats below, as always)
            return v
        df = _read_csv(path, (col,))  # the text, for the message
    v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(v) | (v < minimum) | (v != np.floor(v)) | (v > 2**53)
    if bad.any():
        i = int(np.argmax(bad))
        raise WorkloadError(f"{path}: line {i + 2}: column {col!r} must be an integer in [{minimum}, 2**53], "
                            f"got {df[col].iloc[i]!r}")
    return v.astype(np.int64)


def _build(arrival_s: np.ndarray, prompt: np.ndarray, output: np.ndarray, max_requests: int | None,
           service: str) -> list[Request]:
    order = np.argsort(arrival_s, kind="stable")
    if max_requests is not None:
        order = order[: int(max_requests)]
    a, p, o = arrival_s[order].tolist(), prompt[order].tolist(), output[order].tolist()
    return [Request(i, a[i], p[i], o[i], service) for i in range(len(a))]


class AzureLLMTrace:
    """Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA'24; CC-BY 4.0).

    ``kind``: ``conv`` (19,366 requests) or ``code`` (8,819). Arrivals replay ``TIMESTAMP``
    relative to the first row, divided by ``rate_scale`` (2.0 = twice the request rate).
    Rows with 0 generated tokens (none in the shipped files) would be rejected.
    """

    SEED_VARIES = "nothing"  #: the trace is replayed as is, whatever the seed

    FILES = {"conv": "azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz",
             "code": "azure_llm_2023/AzureLLMInferenceTrace_code.csv.gz"}

    def __init__(self, kind: Literal["conv", "code"] = "conv", path: str | None = None, rate_scale: float = 1.0,
                 max_requests: int | None = None, service: str = "default") -> None:
        if kind not in self.FILES:
            raise ValueError(f"AzureLLMTrace: kind must be one of {sorted(self.FILES)}, got {kind!r}")
        self.path = _resolve(path, self.FILES[kind])
        self.rate_scale = positive("workload.rate_scale", rate_scale)
        self.max_requests = optional_count("workload.max_requests", max_requests)
        self.service = service

    def requests(self, rng: np.random.Generator | None = None) -> list[Request]:
        df = _read_csv(self.path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), ints=("ContextTokens", "GeneratedTokens"))
        ts = pd.to_datetime(df["TIMESTAMP"], format="ISO8601", errors="coerce")
        if ts.isna().any():
            i = int(np.argmax(ts.isna().to_numpy()))
            raise WorkloadError(f"{self.path}: line {i + 2}: bad TIMESTAMP {df['TIMESTAMP'].iloc[i]!r}")
        t = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
        arrival = (t - t.min()).astype(np.float64) * 1e-9 / self.rate_scale
        prompt = _ints(df, "ContextTokens", self.path, 1)
        output = _ints(df, "GeneratedTokens", self.path, 1)
        return _build(arrival, prompt, output, self.max_requests, self.service)


class ArxivSummarization:
    """arXiv summarisation prompt/output lengths (Splitwise via Vidur, MIT; 28,257 rows) with
    Poisson arrivals at ``rate_per_s`` drawn from the run's generator. Rows keep file order."""

    SEED_VARIES = "arrival times (Poisson); lengths keep file order"

    FILE = "splitwise/arxiv_summarization_lengths.csv.gz"

    def __init__(self, rate_per_s: float = 1.0, max_requests: int | None = None, path: str | None = None,
                 service: str = "default") -> None:
        self.path = _resolve(path, self.FILE)
        self.rate_per_s = positive("workload.rate_per_s", rate_per_s)
        self.max_requests = optional_count("workload.max_requests", max_requests)
        self.service = service

    def requests(self, rng: np.random.Generator) -> list[Request]:
        df = _read_csv(self.path, ("num_prefill_tokens", "num_decode_tokens"), ints=("num_prefill_tokens", "num_decode_tokens"))
        if self.max_requests is not None:
            df = df.iloc[: int(self.max_requests)]
        prompt = _ints(df, "num_prefill_tokens", self.path, 1)
        output = _ints(df, "num_decode_tokens", self.path, 1)
        arrival = np.cumsum(rng.exponential(1.0 / self.rate_per_s, size=len(df)))
        arrival -= arrival[0]
        return _build(arrival, prompt, output, None, self.service)


class VllmBenchmarkRequests:
    """The requests of a real vLLM 0.19 run (Llama-3.1-8B, one RTX 4090; from LLMServingSim,
    MIT). ``arrival_field``: ``arrival_time`` (client send time, the default) or ``queued_ts``
    (engine enqueue time); either is taken relative to its first value. The measured
    timestamps stay available through :meth:`measured`."""

    SEED_VARIES = "nothing"  #: the trace is replayed as is, whatever the seed

    FILE = "vllm_rtx4090_llama31_8b/requests.jsonl"
    KEYS = ("request_id", "input_toks", "output_toks", "arrival_time")

    def __init__(self, path: str | None = None, arrival_field: Literal["arrival_time", "queued_ts"] = "arrival_time",
                 max_requests: int | None = None,
                 service: str = "default") -> None:
        if arrival_field not in ("arrival_time", "queued_ts"):
            raise ValueError(f"VllmBenchmarkRequests: arrival_field must be arrival_time or queued_ts, got {arrival_field!r}")
        self.path = _resolve(path, self.FILE)
        self.arrival_field, self.service = arrival_field, service
        self.max_requests = optional_count("workload.max_requests", max_requests)

    def measured(self) -> pd.DataFrame:
        """The file as a table, one row per line, validated."""
        rows = []
        for ln, line in enumerate(read_text(self.path, WorkloadError).splitlines(), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{self.path}: line {ln}: not valid JSON: {e.msg}") from e
            if not isinstance(r, dict):
                raise WorkloadError(f"{self.path}: line {ln}: expected a JSON object")
            for k in (*self.KEYS, self.arrival_field):
                if k not in r:
                    raise WorkloadError(f"{self.path}: line {ln}: missing key {k!r}")
            for k in ("input_toks", "output_toks"):
                if not isinstance(r[k], int) or isinstance(r[k], bool) or not 1 <= r[k] <= 2**53:
                    raise WorkloadError(f"{self.path}: line {ln}: {k!r} must be an integer in [1, 2**53], got {r[k]!r}")
            t = r[self.arrival_field]
            if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or abs(t) > 2**53:
                raise WorkloadError(f"{self.path}: line {ln}: {self.arrival_field!r} must be a finite number, got {t!r}")
            rows.append(r)
        if not rows:
            raise WorkloadError(f"{self.path}: no requests")
        return pd.DataFrame(rows)

    def requests(self, rng: np.random.Generator | None = None) -> list[Request]:
        df = self.measured()
        t = df[self.arrival_field].to_numpy(dtype=float)
        return _build(t - t.min(), df["input_toks"].to_numpy(np.int64), df["output_toks"].to_numpy(np.int64),
                      self.max_requests, self.service)


class SyntheticRequests:
    """``n`` requests with Poisson arrivals (``rate_per_s``; 0 = all at time 0) and lengths
    uniform in ``[min, max]`` (equal bounds = fixed), drawn from the run's generator.
    ``max_requests`` keeps the first N (as for every request workload; the draws, and so the
    kept requests, are those of the full ``n``)."""

    SEED_VARIES = "arrival times (Poisson), prompt and output lengths"

    def __init__(self, n: int = 100, rate_per_s: float = 1.0, prompt_min: int = 128, prompt_max: int = 1024,
                 output_min: int = 16, output_max: int = 256, service: str = "default",
                 max_requests: int | None = None) -> None:
        count("workload.n", n)
        non_negative("workload.rate_per_s", rate_per_s)
        if not (1 <= prompt_min <= prompt_max) or not (1 <= output_min <= output_max):
            raise ValueError("SyntheticRequests: need n >= 0, rate >= 0, 1 <= min <= max for both lengths")
        self.max_requests = optional_count("workload.max_requests", max_requests)
        self.n, self.rate_per_s = int(n), float(rate_per_s)
        self.prompt = (int(prompt_min), int(prompt_max))
        self.output = (int(output_min), int(output_max))
        self.service = service

    def requests(self, rng: np.random.Generator) -> list[Request]:
        if self.rate_per_s > 0:
            arrival = np.cumsum(rng.exponential(1.0 / self.rate_per_s, size=self.n))
        else:
            arrival = np.zeros(self.n)
        prompt = rng.integers(self.prompt[0], self.prompt[1] + 1, size=self.n)
        output = rng.integers(self.output[0], self.output[1] + 1, size=self.n)
        return _build(arrival, prompt, output, self.max_requests, self.service)


class ExplicitRequests:
    """A literal list of ``[arrival_s, prompt_tokens, output_tokens]`` (optionally a 4th
    ``priority``), ids in list order."""

    SEED_VARIES = "nothing"  #: the trace is replayed as is, whatever the seed

    def __init__(self, rows: Sequence[Sequence[float]], service: str = "default") -> None:
        self.rows = [tuple(r) for r in rows]
        self.service = service

    def requests(self, rng: np.random.Generator | None = None) -> list[Request]:
        return [Request(i, float(r[0]), int(r[1]), int(r[2]), self.service, int(r[3]) if len(r) > 3 else 0)
                for i, r in enumerate(self.rows)]
