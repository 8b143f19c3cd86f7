"""The SimPy cluster model: time from the seed's cost model, waited in simulated time."""
from llmos_sim.backends.simpy_cluster.backend import SimPyCluster
from llmos_sim.backends.simpy_cluster.cost import CostModel, CrossNodeSlowdown

__all__ = ["SimPyCluster", "CostModel", "CrossNodeSlowdown"]
