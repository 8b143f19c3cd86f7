"""The workload seam and shared trace-reading helpers.

A workload turns a seeded ``numpy.random.Generator`` into jobs (``jobs(rng)``); a request
workload (LLM serving) into requests (``requests(rng)``). Adapters for real traces read the
copies shipped in ``llmos_sim/workload/data/`` (or any path a user gives) and fail with a
:class:`TraceError` that names the file, the line and the column.
"""
from __future__ import annotations

import csv
import gzip
import io
import zlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from llmos_sim.types import Job, JobTable
from llmos_sim.validate import InputError

DATA_DIR = Path(__file__).resolve().parent / "data"


class TraceError(InputError):
    """A malformed trace: the message names the file and the line (1-based, header = 1)."""


def data_path(path: str | Path) -> Path:
    """Resolve a trace path: ``data:pollux/philly.csv.gz`` (or a bare relative path that exists
    under the shipped data folder) means the shipped copy; anything else is a user's path."""
    s = str(path)
    if s.startswith("data:"):
        return DATA_DIR / s[5:]
    p = Path(s).expanduser()
    if not p.exists() and (DATA_DIR / s).exists():
        return DATA_DIR / s
    return p


def read_text(path: Path, error: type[ValueError] = None) -> str:
    """The text of a (gzipped) UTF-8 file; undecodable bytes raise ``error`` (default
    :class:`TraceError`) naming ``file:line:column`` of the first bad byte."""
    error = error or TraceError
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise error(f"{path}: cannot read: {e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{path}:{line}:{col}: not UTF-8 text (byte {raw[e.start]:#04x})") from None


def check_fields(path: Path, text: str, error: type[ValueError] = None) -> None:
    """An empty CSV, or a row with more or fewer fields than the header, raises ``error``
    (default :class:`TraceError`) naming the line (pandas would fill missing fields or drop
    extra ones silently)."""
    error = error or TraceError
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise error(f"{path}:1: empty file (a CSV needs a header line)")
    for row in reader:
        if row and len(row) != len(header):
            raise error(f"{path}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}")


def read_csv_text(path: Path, text: str, error: type[ValueError] = None) -> pd.DataFrame:
    """Parse CSV ``text`` (header + rows) as strings; an empty file or a row with more or
    fewer fields than the header raises ``error`` (default :class:`TraceError`) naming the line."""
    error = error or TraceError
    check_fields(path, text, error)
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise error(f"{path}: {str(e).strip()}") from None


def read_csv_checked(path: str | Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """Read a CSV and check its columns.

    ``columns`` maps a required column to its kind: ``"float"`` (finite), ``"int"`` (whole,
    magnitude at most 2**53 so it is exact as a float too), ``"str"`` or ``"datetime"``. A
    missing or empty file, text that is not UTF-8, a missing column, a row of the wrong length,
    no data rows or a value that does not parse raise :class:`TraceError` naming the file, the
    line and the column.
    """
    p = data_path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such trace file")
    df = read_csv_text(p, read_text(p))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TraceError(f"{p}: line 1: missing column(s) {missing}; found {list(df.columns)}")
    if len(df) == 0:
        raise TraceError(f"{p}: no data rows")
    out = {}
    for col, kind in columns.items():
        raw = df[col].str.strip()
        if kind == "str":
            out[col] = raw
            continue
        if kind == "datetime":
            val = pd.to_datetime(raw, errors="coerce", format="mixed")
            bad = (val.isna() | (raw == "")).to_numpy()
        else:
            val = pd.to_numeric(raw, errors="coerce")
            num = val.to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                bad = np.isnan(num) | ~np.isfinite(num) | (raw == "").to_numpy()
                if kind == "int":
                    bad |= (np.nan_to_num(num) % 1 != 0) | (np.abs(np.nan_to_num(num)) > 2**53)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "an integer of magnitude <= 2**53" if kind == "int" else "a finite number" if kind == "float" else kind
            raise TraceError(f"{p}: line {i + 2}: column {col!r}: cannot read {df[col].iloc[i]!r} as {what}")
        out[col] = val.astype("float64").astype("int64") if kind == "int" else val
    return pd.DataFrame(out)


def fail_row(path: str | Path, row: int, col: str, msg: str) -> TraceError:
    """A :class:`TraceError` for data row ``row`` (0-based) of a CSV with a header."""
    return TraceError(f"{data_path(path)}: line {row + 2}: column {col!r}: {msg}")


class Workload(ABC):
    """Produces the jobs of a run from the run's generator (same generator state, same jobs).

    ``SEED_VARIES`` says in words what the run's seed changes in the jobs (``"nothing"`` for a
    trace replayed as is): every workload class, request workloads too, declares it, and a test
    checks the declaration against two seeds."""

    SEED_VARIES: str = "nothing"

    @abstractmethod
    def jobs(self, rng: np.random.Generator) -> list[Job]:
        """The jobs, any order (the engine serves them by arrival)."""

    def table(self, rng: np.random.Generator) -> JobTable:
        """The same jobs as a :class:`~llmos_sim.types.JobTable` (columns; what a run reads).
        Generators that draw columns make it without building a job each; this default
        converts :meth:`jobs`."""
        return JobTable.from_jobs(self.jobs(rng))
