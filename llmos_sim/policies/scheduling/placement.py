"""More placement policies beside :class:`~.base.Pack` (consolidate) and :class:`~.base.FirstFree`.

- :class:`Spread`: round-robin across nodes (one device per node in turn), the opposite of Pack
- :class:`RandomPlacement`: uniformly random free devices (seeded through ``set_rng``)
- :class:`TopologyAware`: one node if possible, else one switch (``Node.switch``), else Pack
- :class:`Consolidated`: Tiresias's consolidated placement: one node only for a job that fits
  a node, whole free nodes for a larger one; otherwise the job waits (no spilling)

All of them honour device pins and memory fit through :meth:`Placement.eligible`, and hand
fractional jobs (``gpu_milli`` < 1000) to the shared best-fit :meth:`Placement.place_fractional`.
None of them changes the view (the scheduler calls ``view.plan`` with the result).
"""
from __future__ import annotations

import numpy as np

from llmos_sim.policies.scheduling.base import Pack, Placement
from llmos_sim.types import Job
from llmos_sim.view import ClusterView


def _free_by_node(job: Job, view: ClusterView) -> dict[int, list[int]]:
    """Eligible free devices per node (nodes with at least one), nodes in index order."""
    free = view.free
    out: dict[int, list[int]] = {}
    for k in range(1, free.base.max_per_node + 1):
        for node in free.nodes_with(k):
            ids = [d for d in free.ids(node) if Placement.eligible(job, d, view)]
            if ids:
                out[node] = ids
    return dict(sorted(out.items()))


class Spread(Placement):
    """Round-robin across nodes: nodes with the most free devices first, one device from each
    in turn, so a job's workers land on as many nodes as possible (load balancing across
    machines; worst case for communication — the contrast to :class:`~.base.Pack`)."""

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        per_node = _free_by_node(job, view)
        if sum(len(v) for v in per_node.values()) < n:
            return None
        order = sorted(per_node, key=lambda nd: (-len(per_node[nd]), nd))
        chosen: list[int] = []
        depth = 0
        while len(chosen) < n:
            for nd in order:
                ids = per_node[nd]
                if depth < len(ids):
                    chosen.append(ids[depth])
                    if len(chosen) == n:
                        break
            depth += 1
        return tuple(sorted(chosen))


class RandomPlacement(Placement):
    """``n`` eligible free devices drawn uniformly at random (without replacement).

    Its generator comes from the run's seed via :meth:`set_rng` (``llmos_sim.run`` calls it);
    without one it uses ``default_rng(0)`` so it is still deterministic.
    """

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def set_rng(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        cands = [d for ids in _free_by_node(job, view).values() for d in ids]
        if len(cands) < n:
            return None
        pick = self.rng.choice(len(cands), size=n, replace=False)
        return tuple(sorted(cands[i] for i in pick))


class TopologyAware(Placement):
    """Fewest hops: one node (best fit), else one switch (the switch whose free devices fit
    ``n`` with the fewest left over; within it the nodes with most free first), else spill
    across switches like :class:`~.base.Pack`."""

    def __init__(self) -> None:
        self._pack = Pack()

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        per_node = _free_by_node(job, view)
        # 1) one node, best fit
        fits = [(len(ids), nd) for nd, ids in per_node.items() if len(ids) >= n]
        if fits:
            _, nd = min(fits)
            return tuple(per_node[nd][:n])
        # 2) one switch, best fit by free devices on the switch
        nodes = view.cluster.nodes
        by_switch: dict[int, list[int]] = {}
        for nd in per_node:
            by_switch.setdefault(nodes[nd].switch, []).append(nd)
        totals = [(sum(len(per_node[nd]) for nd in nds), sw) for sw, nds in by_switch.items()]
        ok = [(t, sw) for t, sw in totals if t >= n]
        if ok:
            _, sw = min(ok)
            chosen: list[int] = []
            for nd in sorted(by_switch[sw], key=lambda x: (-len(per_node[x]), x)):
                chosen.extend(per_node[nd][: n - len(chosen)])
                if len(chosen) == n:
                    return tuple(sorted(chosen))
        # 3) across switches
        return self._pack.place(job, n, view)


class Consolidated(Placement):
    """Tiresias's consolidated placement (its simulator's default for consolidation-sensitive
    jobs): a job that fits in one node runs on one node only, the best fit (the node with the
    fewest eligible free devices that still hold it, the lower index among equals; its lowest
    devices); a job larger than every node takes whole free nodes (every device of the node
    free and eligible), the largest first, then lower index; the last node's unused devices
    stay free. Otherwise the job waits: it is never
    spread over partly used nodes."""

    def place_whole(self, job: Job, n: int, view: ClusterView) -> tuple[int, ...] | None:
        per_node = _free_by_node(job, view)
        nodes = view.cluster.nodes
        if n <= max(len(nd.devices) for nd in nodes):
            fits = [(len(ids), nd) for nd, ids in per_node.items() if len(ids) >= n]
            if not fits:
                return None
            _, nd = min(fits)
            return tuple(per_node[nd][:n])
        whole = sorted((nd for nd, ids in per_node.items() if len(ids) == len(nodes[nd].devices)),
                       key=lambda nd: (-len(per_node[nd]), nd))
        chosen: list[int] = []
        for nd in whole:
            chosen.extend(per_node[nd][: n - len(chosen)])
            if len(chosen) == n:
                return tuple(sorted(chosen))
        return None
