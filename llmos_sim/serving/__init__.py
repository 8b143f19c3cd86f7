"""LLM inference serving on SimPy: replicas with iteration-level batching, a KV cache through
the memory-pool seam, a roofline cost model, routers and serving metrics from the event log.

Entry point: :func:`simulate` (``cfg``, ``seed``) → :class:`ServingResult`.
"""
from llmos_sim.serving.specs import GpuSpec, ModelSpec
from llmos_sim.serving.system import ServingResult, ServingSystem, build_result, simulate

__all__ = ["simulate", "ServingResult", "ServingSystem", "build_result", "ModelSpec", "GpuSpec"]
