"""What the two fast-core equality tests (test_fastcore.py, test_fastcore_las.py) share: the
devices, placements and pools they draw from, and the check that a fast-core run and a
general-engine run are the same run."""
import numpy as np
import pandas as pd

from llmos_sim.engine import Engine
from llmos_sim.metrics import jobs_table, memory_table, timeline_table
from llmos_sim.policies.memory import IdealPool
from llmos_sim.policies.memory.buddy import BuddyPool
from llmos_sim.policies.memory.fit import FirstFitPool
from llmos_sim.policies.scheduling import Consolidated, FirstFree, Pack, RandomPlacement, Spread, TopologyAware
from llmos_sim.types import GB, DeviceSpec

FAST = DeviceSpec("fast", 2e13, 8 * GB)
SLOW = DeviceSpec("slow", 1e13, 6 * GB)

PLACEMENTS = {"pack": Pack, "first_free": FirstFree, "spread": Spread, "topology": TopologyAware,
              "consolidated": Consolidated, "random": RandomPlacement}


class StingyPool(IdealPool):
    """Says a request fits whenever it is below the free bytes, but refuses any above 5 GB:
    starts whose memory does not fit after placement (reject, fail, and runs that stall)."""

    def _allocate(self, nbytes, tag, alloc_id):
        return None if nbytes > 5 * GB else super()._allocate(nbytes, tag, alloc_id)


POOLS = {"none": None, "ideal": IdealPool, "first_fit": FirstFitPool, "buddy": BuddyPool, "stingy": StingyPool}


def placement(place: str):
    """A fresh placement of the name (the random one seeded)."""
    p = PLACEMENTS[place]()
    if place == "random":
        p.set_rng(np.random.default_rng(7))
    return p


def same(a: Engine, b: Engine) -> None:
    """The two runs wrote the same log and tables, finished the same jobs and left the pools
    in the same state (counts, levels, next allocation id, nothing live) at the same clock."""
    assert list(a.log.records) == list(b.log.records)
    cl = a.cluster
    for make in (jobs_table, memory_table, timeline_table):
        pd.testing.assert_frame_equal(make(a.log, cl), make(b.log, cl))
    pd.testing.assert_frame_equal(a.log.table(), b.log.table())
    assert list(a.finished) == list(b.finished)
    assert [(p.stats(), p._next_id) for p in a.pools] == [(p.stats(), p._next_id) for p in b.pools]
    assert a.env.now == b.env.now and not a.queue and not b.queue
