"""One toy of each kind a user adds: each is one class here plus one YAML under ``conf/``.

The test (``tests/core/test_how_to_add.py``) puts this folder on ``sys.path`` and ``conf/`` on
Hydra's search path (``hydra.searchpath``), then selects them like shipped options.
"""
from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np

from llmos_sim.policies.batching.order import Ordering
from llmos_sim.policies.memory.base import Allocation, MemoryPool
from llmos_sim.policies.routing.base import ReplicaLoad, Router
from llmos_sim.policies.scheduling.base import QueueScheduler
from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.types import Job
from llmos_sim.view import ClusterView
from llmos_sim.workload.base import Workload, read_csv_checked


class LargestFirst(QueueScheduler):
    """Scheduler: the widest waiting job first (ties: arrival, id); later jobs may start if it cannot."""

    def __init__(self, placement=None) -> None:
        super().__init__(placement, blocking=False)

    def order(self, view: ClusterView) -> Iterable[Job]:
        return sorted(view.queue, key=lambda j: (-j.gpus, j.arrival_s, j.id))


class BumpPool(MemoryPool):
    """Memory pool: a bump allocator; space comes back only when every allocation is freed."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self._top = 0

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        if self._top + nbytes > self.capacity_bytes:
            return None
        a = Allocation(self._top, nbytes, nbytes, tag, id=alloc_id)
        self._top += nbytes
        self._allocated += nbytes
        self._reserved = self._top
        return a

    def _free(self, allocation: Allocation) -> None:
        self._allocated -= allocation.nbytes
        if self._allocated == 0:
            self._top = 0
        self._reserved = self._top

    def largest_free_bytes(self) -> int:
        return self.capacity_bytes - self._top


class ShortestPromptFirst(Ordering):
    """Batching-policy ordering: the shortest prompt waits least (ties: arrival, id)."""

    def key(self, w) -> tuple:
        return (w.prompt, w.arrival_s, w.rid)


class LastReplica(Router):
    """Router: every request to the highest-numbered replica."""

    def route(self, request, loads: Sequence[ReplicaLoad]) -> int:
        return max(x.index for x in loads)


class ConstantCost(CostModel):
    """Cost model: every iteration takes ``seconds``, whatever the batch."""

    def __init__(self, model=None, gpu=None, tp: int = 1, seconds: float = 1.0) -> None:
        self.seconds = float(seconds)

    def iteration_s(self, b: BatchShape) -> float:
        return self.seconds


class CsvJobs(Workload):
    """Trace adapter: jobs from a CSV ``arrival_s,gpus,duration_s,mem_bytes``; a job's work is
    its duration on ``gpus`` devices of ``reference_flops``. Bad rows are named by line."""

    SEED_VARIES = "nothing"

    def __init__(self, path: str, reference_flops: float = 1e13) -> None:
        self.path, self.reference_flops = path, float(reference_flops)

    def jobs(self, rng: np.random.Generator) -> list[Job]:
        df = read_csv_checked(self.path, {"arrival_s": "float", "gpus": "int", "duration_s": "float",
                                          "mem_bytes": "int"})
        return [Job(i, float(a), float(d) * int(g) * self.reference_flops, gpus=int(g), mem_bytes_per_device=int(m))
                for i, (a, g, d, m) in enumerate(zip(df["arrival_s"], df["gpus"], df["duration_s"], df["mem_bytes"]))]
