"""Batching policies for serving replicas: one class each, a shared base with hooks."""
from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.policies.batching.chunked import ChunkedPrefill
from llmos_sim.policies.batching.continuous import ContinuousBatching
from llmos_sim.policies.batching.orca import OrcaBatching
from llmos_sim.policies.batching.order import FCFS, Ordering, PriorityOrder, ShortestPredictedFirst
from llmos_sim.policies.batching.static import StaticBatching

__all__ = ["BatchingPolicy", "StaticBatching", "OrcaBatching", "ContinuousBatching", "ChunkedPrefill",
           "Ordering", "FCFS", "ShortestPredictedFirst", "PriorityOrder"]
