"""Job-level scheduling policies and placement (see :mod:`.base` for the seam)."""
from llmos_sim.policies.scheduling.base import (
    ClusterScheduler, Decision, FirstFree, Pack, Placement, Preempt, QueueScheduler, Resize, Start,
)
from llmos_sim.policies.scheduling.fifo import FIFO
from llmos_sim.policies.scheduling.sjf import SJF

__all__ = ["ClusterScheduler", "Decision", "FirstFree", "Pack", "Placement", "Preempt",
           "QueueScheduler", "Resize", "Start", "FIFO", "SJF"]
