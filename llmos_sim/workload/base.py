"""The workload seam and shared trace-reading helpers.

A workload turns a seeded ``numpy.random.Generator`` into jobs (``jobs(rng)``); a request
workload (LLM serving) into requests (``requests(rng)``). Adapters for real traces read the
copies shipped in ``llmos_sim/workload/data/`` (or any path a user gives) and fail with a
:class:`TraceError` that names the file, the line and the column.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from llmos_sim.types import Job

DATA_DIR = Path(__file__).resolve().parent / "data"


class TraceError(ValueError):
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


def read_csv_checked(path: str | Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """Read a CSV and check its columns.

    ``columns`` maps a required column to its kind: ``"float"``, ``"int"``, ``"str"`` or
    ``"datetime"``. A missing file, a missing column or a value that does not parse raises
    :class:`TraceError` naming the file, the line and the column.
    """
    p = data_path(path)
    if not p.exists():
        raise TraceError(f"{p}: no such trace file")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
        raise TraceError(f"{p}: cannot parse as CSV: {e}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TraceError(f"{p}: line 1: missing column(s) {missing}; found {list(df.columns)}")
    out = {}
    for col, kind in columns.items():
        raw = df[col].str.strip()
        if kind == "str":
            out[col] = raw
            continue
        if kind == "datetime":
            val = pd.to_datetime(raw, errors="coerce", format="mixed")
        else:
            val = pd.to_numeric(raw, errors="coerce")
        bad = val.isna() | (raw == "")
        if kind in ("float", "int") and not bad.any():
            bad = ~np.isfinite(val.to_numpy(dtype=float))
        if kind == "int" and not bad.any():
            bad = pd.Series(val.to_numpy(dtype=float) % 1 != 0, index=val.index)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise TraceError(f"{p}: line {i + 2}: column {col!r}: cannot read {df[col].iloc[i]!r} as {kind}")
        out[col] = val.astype("int64") if kind == "int" else val
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
