"""Routers for serving: pick the replica for each arriving request."""
from llmos_sim.policies.routing.base import ReplicaLoad, Router
from llmos_sim.policies.routing.least_kv import LeastKV
from llmos_sim.policies.routing.least_outstanding import LeastOutstanding
from llmos_sim.policies.routing.prefix_aware import PrefixAware
from llmos_sim.policies.routing.round_robin import RoundRobin

__all__ = ["Router", "ReplicaLoad", "RoundRobin", "LeastOutstanding", "LeastKV", "PrefixAware"]
