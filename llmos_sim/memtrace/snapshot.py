"""Read a PyTorch memory snapshot into the trace format.

``torch.cuda.memory._record_memory_history()`` followed by ``torch.cuda.memory._snapshot()``
(or ``_dump_snapshot(path)``, which pickles the same dict) gives::

    {"segments": [{"address", "total_size", "blocks": [{"address", "size", "state"}, ...]}, ...],
     "device_traces": [[{"action", "addr", "size", "time_us"?, "stream", "frames"}, ...], ...]}

Trace actions used here: ``alloc`` → alloc; ``free_completed`` → free (``free_requested`` is
used instead only when a trace has no ``free_completed`` at all). Segment actions
(``segment_alloc``/``segment_free``/``segment_map``/...) and ``oom``/``snapshot`` are the
allocator's own doing, not the program's requests, and are skipped.

The history is a ring buffer, so some blocks predate it. They are recovered as allocations
at the first trace time: frees without a matching earlier alloc (size from the free entry),
and ``active_allocated`` blocks in ``segments`` that the replayed history does not leave
live. Ids are assigned in order of allocation (addresses are reused, ids are not).

Pickles are read with :class:`SafeUnpickler`, which builds only plain data (dicts, lists,
tuples, sets, strings, bytes, numbers, booleans, ``None``) — what ``_dump_snapshot`` writes —
and refuses any other class or callable, so a crafted file cannot run code.
"""
from __future__ import annotations

import io
import json
import math
import pickle
from pathlib import Path
from typing import Any

import pandas as pd

from llmos_sim.memtrace.trace import TraceFormatError, validate_trace


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that admits plain data only: any global (a class, a function such as
    ``os.system``) other than the few builtin containers raises ``pickle.UnpicklingError``."""

    ALLOWED = frozenset({("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"),
                         ("builtins", "complex"), ("collections", "OrderedDict")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: snapshots hold plain data only")


def safe_loads(raw: bytes) -> Any:
    """``pickle.loads`` restricted to plain data (:class:`SafeUnpickler`)."""
    return SafeUnpickler(io.BytesIO(raw)).load()


def load_snapshot(source: str | Path | dict) -> dict:
    """Load a snapshot dict from a pickle (``_dump_snapshot``) or JSON file, or pass one through."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    raw = path.read_bytes()
    try:
        snap = json.loads(raw.decode("utf-8")) if raw[:1] in (b"{", b"[") else safe_loads(raw)
    except Exception as exc:  # noqa: BLE001 - report which file could not be parsed
        raise TraceFormatError(f"{path}: not a JSON or pickle memory snapshot ({' '.join(str(exc).split())})") from exc
    if not isinstance(snap, dict) or ("device_traces" not in snap and "segments" not in snap):
        raise TraceFormatError(f"{path}: no 'device_traces' or 'segments' in snapshot")
    return snap


def _int_field(where: str, entry: dict, key: str, default: int | None = None, bits: int = 64) -> int:
    """``entry[key]`` as an integer in [0, 2**bits) (an address: 64, a size: 63), else a named error."""
    v = entry.get(key, default)
    if v is None:
        raise TraceFormatError(f"{where}: missing {key!r}")
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**bits:
        raise TraceFormatError(f"{where}: {key!r} must be an integer in [0, 2**{bits}), got {v!r}")
    return v


def read_snapshot(source: str | Path | dict, device: int | None = None) -> pd.DataFrame:
    """Convert one device's history in a memory snapshot to a trace table.

    ``device``: index into ``device_traces`` (default: the first device with entries);
    ``segments`` are filtered by their ``device`` field when it is present. A malformed entry
    raises :class:`TraceFormatError` naming the source and the entry
    (``device_traces[0][12]: 'size' must be ...``).
    """
    snap = load_snapshot(source)
    name = "snapshot" if isinstance(source, dict) else str(source)
    traces = snap.get("device_traces") or []
    if not isinstance(traces, list) or not all(isinstance(t, list) for t in traces):
        raise TraceFormatError(f"{name}: 'device_traces' must be a list of lists of entries")
    segments = snap.get("segments") or []
    if not isinstance(segments, list):
        raise TraceFormatError(f"{name}: 'segments' must be a list")
    if device is None:
        device = next((i for i, t in enumerate(traces) if t), 0)
    entries = traces[device] if device < len(traces) else []
    has_completed = any(isinstance(e, dict) and e.get("action") == "free_completed" for e in entries)
    free_action = "free_completed" if has_completed else "free_requested"

    rows: list[tuple[float, str, int, int]] = []
    initial: list[int] = []  # sizes of blocks that predate the history
    live: dict[int, tuple[int, int]] = {}  # addr -> (id, size)
    next_id = 0
    t0 = None
    last_t = -math.inf
    for k, e in enumerate(entries):
        where = f"{name}: device_traces[{device}][{k}]"
        if not isinstance(e, dict):
            raise TraceFormatError(f"{where}: expected an object, got {type(e).__name__}")
        action = e.get("action")
        if action not in ("alloc", free_action):
            continue
        t = e.get("time_us", None)
        if t is None:
            t = float(k)
        elif isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise TraceFormatError(f"{where}: 'time_us' must be a finite number, got {t!r}")
        else:
            t = t / 1e6
        if t < last_t:
            raise TraceFormatError(f"{where}: 'time_us' goes back in time")
        last_t = t
        t0 = t if t0 is None else t0
        addr, size = _int_field(where, e, "addr"), _int_field(where, e, "size", 0, bits=63)
        if action == "alloc":
            live[addr] = (next_id, size)
            rows.append((t, "alloc", next_id, size))
            next_id += 1
        else:
            hit = live.pop(addr, None)
            if hit is None:  # allocated before the history began
                initial.append(size)
                rows.append((t, "free", -len(initial), size))  # provisional id, fixed below
            else:
                rows.append((t, "free", hit[0], hit[1]))
    for j, seg in enumerate(segments):
        if not isinstance(seg, dict):
            raise TraceFormatError(f"{name}: segments[{j}]: expected an object, got {type(seg).__name__}")
        if "device" in seg and seg["device"] != device:
            continue
        blocks = seg.get("blocks", [])
        if not isinstance(blocks, list):
            raise TraceFormatError(f"{name}: segments[{j}]: 'blocks' must be a list")
        for m, b in enumerate(blocks):
            where = f"{name}: segments[{j}].blocks[{m}]"
            if isinstance(b, dict) and b.get("state") == "active_allocated":
                addr, size = _int_field(where, b, "address"), _int_field(where, b, "size", bits=63)
                if addr not in live:
                    initial.append(size)  # live at the end, never seen allocated
    t0 = 0.0 if t0 is None else t0
    # blocks that predate the history get ids after the others, allocated at t0
    pre = [(t0, "alloc", next_id + j, n) for j, n in enumerate(initial)]
    fixed = [(t, op, next_id - i - 1 if i < 0 else i, n) for t, op, i, n in rows]
    df = pd.DataFrame(pre + fixed, columns=["time_s", "op", "id", "nbytes"])
    return validate_trace(df)
