"""LLM inference serving on SimPy: replicas with iteration-level batching, a KV cache through
the memory-pool seam, a roofline cost model, routers and serving metrics from the event log.

Entry point: :func:`simulate` (``cfg``, ``seed``) → :class:`ServingResult`.

The names below load on first use: importing a leaf module of this package (the serving view
:mod:`llmos_sim.serving.view`, which batching policies import) loads neither the serving
system nor the training engine, pandas or pyarrow.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"simulate": "system", "ServingResult": "system", "ServingSystem": "system", "build_result": "system",
         "ModelSpec": "specs", "GpuSpec": "specs"}

__all__ = ["simulate", "ServingResult", "ServingSystem", "build_result", "ModelSpec", "GpuSpec"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"llmos_sim.serving.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llmos_sim.serving' has no attribute {name!r}")
