"""The SimPy cluster model: time from the seed's cost model, waited in simulated time."""
from llmos_sim.backends.simpy_cluster.backend import SimPyCluster
from llmos_sim.backends.simpy_cluster.cost import CrossNodeSlowdown, TrainingCost

#: the old name of :class:`TrainingCost`, kept so configs that name it still load (the serving
#: half's :class:`llmos_sim.serving.cost.CostModel` prices an iteration, not a training task)
CostModel = TrainingCost

__all__ = ["SimPyCluster", "TrainingCost", "CrossNodeSlowdown"]
