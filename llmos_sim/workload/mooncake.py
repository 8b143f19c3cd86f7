"""Mooncake traces (Qin et al., "Mooncake: Trading More Storage for Less Computation", FAST'25;
Apache-2.0): request streams with prefix block hashes.

Each line of the (gzipped) JSONL file is one request::

    {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, ...]}

``timestamp`` is the arrival in milliseconds (replayed relative to the first line),
``hash_ids[j]`` names the KV of prompt tokens ``[0, 512 · (j + 1))`` (remapped prefix block
hashes; equal ids = reusable KV), so a prompt of ``n`` tokens has ``ceil(n / 512)`` of them (the
last may cover a partial block). The loader keeps them as :attr:`Request.prefix_hashes` with
``prefix_block_tokens = 512``; prefix caching (:mod:`llmos_sim.serving.kv`) and prefix-aware
routing read them.

Shipped copies: ``mooncake_fast25/conversation_trace.jsonl.gz`` (one hour of a production
conversation service, 12,031 requests) and ``mooncake_fast25/synthetic_trace.jsonl.gz`` (3,993
requests built from public datasets, Poisson arrivals). A malformed line raises
:class:`~llmos_sim.workload.requests.WorkloadError` naming the file and the line.
"""
from __future__ import annotations

import gzip
import json
import math

import numpy as np

from llmos_sim.validate import choice, count, optional_count, positive
from llmos_sim.workload.requests import Request, WorkloadError, _resolve

HASH_BLOCK_TOKENS = 512  #: prompt tokens one Mooncake hash id covers


def read_mooncake(path, block_tokens: int = HASH_BLOCK_TOKENS) -> list[tuple[float, int, int, tuple[int, ...]]]:
    """The file's rows ``(timestamp_ms, input_length, output_length, hash_ids)``, in file order,
    each checked: a JSON object with the four keys, integer lengths >= 1, a finite timestamp
    >= 0, and ``ceil(input_length / block_tokens)`` integer hash ids."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                rows.append(_row(path, ln, line, block_tokens))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{path}: cannot read: {e}") from e
    if not rows:
        raise WorkloadError(f"{path}: no requests")
    return rows


def _row(path, ln: int, line: str, block_tokens: int):
    try:
        r = json.loads(line.rstrip())  # (so that a column past the line's end is on this line)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{path}:{ln}:{e.colno}: not valid JSON: {e.msg}") from e
    if not isinstance(r, dict):
        raise WorkloadError(f"{path}:{ln}: expected a JSON object, got {type(r).__name__}")
    for k in ("timestamp", "input_length", "output_length", "hash_ids"):
        if k not in r:
            raise WorkloadError(f"{path}:{ln}: missing key {k!r}")
    for k in ("input_length", "output_length"):
        v = r[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise WorkloadError(f"{path}:{ln}: {k!r} must be an integer >= 1, got {v!r}")
    ts = r["timestamp"]
    if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0:
        raise WorkloadError(f"{path}:{ln}: 'timestamp' must be a finite number >= 0 (ms), got {ts!r}")
    h = r["hash_ids"]
    if not isinstance(h, list) or any(not isinstance(x, int) or isinstance(x, bool) for x in h):
        raise WorkloadError(f"{path}:{ln}: 'hash_ids' must be a list of integers")
    want = -(-r["input_length"] // block_tokens)
    if len(h) != want:
        raise WorkloadError(f"{path}:{ln}: 'hash_ids' has {len(h)} ids, but input_length {r['input_length']} "
                            f"needs ceil({r['input_length']} / {block_tokens}) = {want}")
    return float(ts), r["input_length"], r["output_length"], tuple(h)


class MooncakeTrace:
    """A Mooncake trace as requests with prefix hashes.

    - ``kind``: ``conversation`` or ``synthetic`` (the shipped copies), or ``path`` to another file
    - ``rate_scale``: arrivals divided by it (2.0 = twice the request rate)
    - ``max_requests``: the first ``n`` requests by arrival (null = all)
    - ``block_tokens``: prompt tokens one hash id covers (512 in the released traces)
    """

    FILES = {"conversation": "mooncake_fast25/conversation_trace.jsonl.gz",
             "synthetic": "mooncake_fast25/synthetic_trace.jsonl.gz"}
    SEED_VARIES = "nothing"  #: the trace is replayed as is, whatever the seed

    def __init__(self, kind: str = "conversation", path: str | None = None, rate_scale: float = 1.0,
                 max_requests: int | None = None, block_tokens: int = HASH_BLOCK_TOKENS,
                 service: str = "default") -> None:
        choice("workload.kind", kind, sorted(self.FILES))
        self.path = _resolve(path, self.FILES[kind])
        self.rate_scale = positive("workload.rate_scale", rate_scale)
        self.max_requests = optional_count("workload.max_requests", max_requests)
        self.block_tokens, self.service = count("workload.block_tokens", block_tokens, 1), service

    def requests(self, rng: np.random.Generator | None = None) -> list[Request]:
        rows = read_mooncake(self.path, self.block_tokens)
        ts = np.array([r[0] for r in rows])
        order = np.argsort(ts, kind="stable")
        if self.max_requests is not None:
            order = order[: int(self.max_requests)]
        t0 = float(ts.min())
        bt, svc, scale = self.block_tokens, self.service, self.rate_scale
        out = []
        for i, j in enumerate(order.tolist()):
            t, p, o, h = rows[j]
            out.append(Request(i, (t - t0) * 1e-3 / scale, p, o, svc, prefix_hashes=h, prefix_block_tokens=bt))
        return out
