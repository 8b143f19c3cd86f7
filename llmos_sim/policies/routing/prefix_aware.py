"""Prefix-aware routing: send a request where the longest prefix of its prompt is cached,
balanced against load (in the spirit of the KV-aware routers of NVIDIA Dynamo, llm-d and
SGLang's cache-aware router).

Score of replica ``r`` for a request of ``P`` prompt tokens, lower is better, in prompt tokens
of work::

    cost_r = (P - cached_r) + load_tokens · outstanding_r

``P - cached_r`` is the prefill the replica still has to compute for this request (its cached
prefix is skipped), ``outstanding_r`` the requests routed there and not done (running +
waiting), each counted as ``load_tokens`` tokens of work ahead of this one. ``load_tokens = 0``
is pure cache affinity (ties: fewer outstanding, then lowest index); a large value is
least-outstanding routing with cache affinity as the tie-break. Requests without prefix
hashes have ``cached_r = 0`` everywhere and go to the least loaded replica.
"""
from __future__ import annotations

from typing import Sequence

from llmos_sim.policies.routing.base import ReplicaLoad, Router


class PrefixAware(Router):
    """Longest cached prefix, balanced against outstanding requests (``load_tokens`` each)."""

    uses_kv = False

    uses_prefix = True

    def __init__(self, load_tokens: float = 2048.0) -> None:
        if not load_tokens >= 0:
            raise ValueError(f"PrefixAware: load_tokens must be >= 0, got {load_tokens}")
        self.load_tokens = float(load_tokens)

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:
        p, w = request.prompt_tokens, self.load_tokens
        return min(loads, key=lambda l: (p - l.cached_tokens + w * l.outstanding, l.outstanding, l.index)).index
