"""Job-level scheduling policies and placement (see :mod:`.base` for the seam)."""
from llmos_sim.policies.scheduling.base import (
    ClusterScheduler, Decision, FirstFree, Pack, Placement, Preempt, QueueScheduler, Resize, Start,
)
from llmos_sim.policies.scheduling.backfill import EASYBackfill
from llmos_sim.policies.scheduling.elastic import Elastic
from llmos_sim.policies.scheduling.fair import DRF
from llmos_sim.policies.scheduling.fifo import FIFO
from llmos_sim.policies.scheduling.hetero import HeterogeneityAware
from llmos_sim.policies.scheduling.placement import Consolidated, RandomPlacement, Spread, TopologyAware
from llmos_sim.policies.scheduling.predictive import OnlinePredictor, PredictedSJF
from llmos_sim.policies.scheduling.preemptive import LAS, SRTF, DiscretizedLAS, PreemptiveScheduler
from llmos_sim.policies.scheduling.sjf import SJF

__all__ = ["ClusterScheduler", "Decision", "FirstFree", "Pack", "Placement", "Preempt",
           "QueueScheduler", "Resize", "Start", "FIFO", "SJF", "SRTF", "LAS", "DiscretizedLAS",
           "PreemptiveScheduler", "DRF", "EASYBackfill", "PredictedSJF", "OnlinePredictor",
           "HeterogeneityAware", "Elastic", "Spread", "RandomPlacement", "TopologyAware",
           "Consolidated"]
