"""The serving settings of one run as a typed, checked object: the Hydra target of the
``serving`` group.

``configs/serving/default.yaml`` is the one place their defaults are written; this class has
none, so a key missing from the config is an error, not a silent second default. Building
one checks every value (the same checks :func:`llmos_sim.validate.check_config` applies to
``serving.*``), so a bad value fails here with the config key in the message, whoever builds
it. The cost model (``cost`` group) and the KV cache's pool (``kv_memory`` group, else
``memory``) are not serving keys: they are their own groups, built beside this spec by
:mod:`llmos_sim.run`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from llmos_sim.validate import SCHEMA, ConfigError


@dataclass(frozen=True)
class ServingSpec:
    """What ``mode: serving`` (and a service's replicas in ``mode: mixed``) read from ``serving.*``.

    - ``replicas``, ``tp``: replicas and tensor-parallel degree per replica
    - ``num_kv_blocks``: KV blocks per replica; None: the KV bytes are
      ``gpu_memory_utilization · mem_bytes · tp − weights − activation_reserve_bytes`` (vLLM's rule)
    - ``block_tokens``: tokens per KV block; ``kv_mode``: ``grow`` (paged), ``reserve``
      (contiguous max-length reservation, ``reserve_tokens`` each, 0 = own prompt+output) or
      ``auto`` (reserve when the pool declares it reserves the maximum length, else grow)
    - ``slo_ttft_s``, ``slo_tpot_s``, ``slo_e2e_s``: SLOs for goodput (None in the config:
      none, stored as ``inf``; a request's own replace them for it)
    - ``max_time_s``: stop time (None: run until every request finished or failed)
    - ``fast_forward``, ``per_iteration_records``, ``async_scheduling``: see
      :class:`~llmos_sim.serving.replica.Replica`
    - ``span_cut``: what ends a fast-forwarded decode span early: ``own`` (an arrival at its
      replica) or ``any`` (an arrival anywhere, the rule before spans were independent of other
      replicas' traffic); see :attr:`~llmos_sim.serving.replica.Replica.own_cuts`
    - ``prefix_caching``: vLLM's automatic prefix caching (see :mod:`llmos_sim.serving.kv`)
    - ``host_kv_bytes``: a host-memory KV tier of this many bytes per replica (None: unlimited
      swap space, evicted prefix units dropped; see :class:`~llmos_sim.serving.kv.HostTier`)
    """

    replicas: int
    tp: int
    gpu_memory_utilization: float
    activation_reserve_bytes: int
    num_kv_blocks: int | None
    block_tokens: int
    kv_mode: str
    reserve_tokens: int
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    slo_e2e_s: float | None
    max_time_s: float | None
    fast_forward: bool
    per_iteration_records: bool
    prefix_caching: bool
    host_kv_bytes: float | None
    async_scheduling: bool
    span_cut: str

    def __post_init__(self) -> None:
        for f in fields(self):
            key = f"serving.{f.name}"
            value = getattr(self, f.name)
            if f.name.startswith("slo_"):  # None or inf: no SLO, stored as inf
                none = value is None or (isinstance(value, float) and value == math.inf)
                checked = math.inf if none else float(SCHEMA[key](key, value))
            else:
                checked = SCHEMA[key](key, value)
            object.__setattr__(self, f.name, checked)

    @classmethod
    def check_keys(cls, node: Any) -> None:
        """Raise a :class:`~llmos_sim.validate.ConfigError` naming the first ``serving.*`` key
        that is missing (the yaml sets every key) or unknown (the cost model and the KV pool
        are their own groups now, not ``serving.cost`` / ``serving.kv_memory``)."""
        keys = [str(k) for k in node if not str(k).startswith("_")]
        names = [f.name for f in fields(cls)]
        for k in keys:
            if k not in names:
                hint = {"cost": "; the cost model is the 'cost' group (cost=roofline|profiled|fitted, cost.<key>=...)",
                        "kv_memory": "; the KV cache's pool is the 'kv_memory' group (memory@kv_memory=paged, ...)"}
                raise ConfigError(f"serving.{k}", f"unknown key{hint.get(k, '')} (known: {', '.join(names)})")
        for n in names:
            if n not in keys:
                raise ConfigError(f"serving.{n}", "is missing (configs/serving/default.yaml sets every key)")

    @property
    def max_time(self) -> float:
        """The stop time, ``inf`` when none."""
        return math.inf if self.max_time_s is None else float(self.max_time_s)
