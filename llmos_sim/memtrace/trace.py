"""The allocation-trace format: rows of ``(time_s, op, id, nbytes)``.

- ``time_s`` (float, seconds, non-decreasing): when the operation happens
- ``op``: ``"alloc"`` or ``"free"``
- ``id`` (int): names one allocation; a ``free`` refers to the latest ``alloc`` of that id
- ``nbytes`` (int, bytes >= 0): requested size; informational on ``free`` rows (may be 0)

In memory a trace is a :class:`pandas.DataFrame` with exactly these columns; on disk a CSV
with a header line naming them.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from llmos_sim.validate import INT64_MAX, InputError
from llmos_sim.workload.base import read_text

TRACE_COLUMNS: tuple[str, ...] = ("time_s", "op", "id", "nbytes")
OPS = ("alloc", "free")


class TraceFormatError(InputError):
    """A trace file or table is malformed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class TraceOp:
    """One trace row: at ``time_s`` seconds, ``op`` ('alloc'|'free') allocation ``id`` of ``nbytes``."""

    time_s: float
    op: str
    id: int
    nbytes: int


def make_trace(rows: Iterable[TraceOp | tuple]) -> pd.DataFrame:
    """Build a validated trace table from :class:`TraceOp` s or ``(time_s, op, id, nbytes)`` tuples."""
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(TRACE_COLUMNS))
    return validate_trace(df)


def validate_trace(df: pd.DataFrame) -> pd.DataFrame:
    """Check columns, ops, sizes and time order; return the table with canonical dtypes."""
    missing = [c for c in TRACE_COLUMNS if c not in df.columns]
    if missing:
        raise TraceFormatError(f"trace is missing columns {missing}; need {list(TRACE_COLUMNS)}")
    df = df.loc[:, list(TRACE_COLUMNS)].astype({"time_s": "float64", "op": "object", "id": "int64", "nbytes": "int64"})
    bad_op = ~df["op"].isin(OPS)
    if bad_op.any():
        i = int(bad_op.to_numpy().argmax())
        raise TraceFormatError(f"trace row {i}: op must be one of {OPS}, got {df['op'].iloc[i]!r}")
    if (df["nbytes"] < 0).any():
        raise TraceFormatError(f"trace row {int((df['nbytes'] < 0).to_numpy().argmax())}: nbytes < 0")
    if len(df) > 1 and (df["time_s"].diff().iloc[1:] < 0).any():
        raise TraceFormatError("trace time_s must be non-decreasing")
    return df.reset_index(drop=True)


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a trace CSV (header ``time_s,op,id,nbytes``). Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise TraceFormatError(f"{path}: no such trace file")
    text = read_text(path, TraceFormatError)
    times: list[float] = []
    ops: list[str] = []
    ids: list[int] = []
    sizes: list[int] = []
    with io.StringIO(text, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(TRACE_COLUMNS):
            raise TraceFormatError(f"{path}:1: header must be {','.join(TRACE_COLUMNS)}, got {header!r}")
        last_t = float("-inf")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 4:
                raise TraceFormatError(f"{path}:{line}: expected 4 fields, got {len(row)}: {row!r}")
            t_s, op, id_s, n_s = (c.strip() for c in row)
            try:
                t = float(t_s)
            except ValueError:
                raise TraceFormatError(f"{path}:{line}: time_s is not a number: {t_s!r}") from None
            if not math.isfinite(t):
                raise TraceFormatError(f"{path}:{line}: time_s must be finite, got {t_s!r}")
            if t < last_t:
                raise TraceFormatError(f"{path}:{line}: time_s {t} goes back in time (previous {last_t})")
            if op not in OPS:
                raise TraceFormatError(f"{path}:{line}: op must be 'alloc' or 'free', got {op!r}")
            try:
                i = int(id_s)
            except ValueError:
                raise TraceFormatError(f"{path}:{line}: id is not an integer: {id_s!r}") from None
            if abs(i) > INT64_MAX:
                raise TraceFormatError(f"{path}:{line}: id must be below 2**63 in magnitude, got {id_s}")
            if n_s == "" and op == "free":
                n = 0
            else:
                try:
                    n = int(n_s)
                except ValueError:
                    raise TraceFormatError(f"{path}:{line}: nbytes is not an integer: {n_s!r}") from None
                if not 0 <= n <= INT64_MAX:
                    raise TraceFormatError(f"{path}:{line}: nbytes must be >= 0 and below 2**63, got {n}")
            last_t = t
            times.append(t)
            ops.append(op)
            ids.append(i)
            sizes.append(n)
    return validate_trace(pd.DataFrame({"time_s": times, "op": ops, "id": ids, "nbytes": sizes}))


def write_csv(trace: pd.DataFrame, path: str | Path) -> None:
    """Write a trace table as CSV with the standard header."""
    validate_trace(trace).to_csv(path, index=False)
