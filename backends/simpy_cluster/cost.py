"""Training cost model: ``T_d = T / Σ C_i`` over the granted devices, times a factor.

The factor models placement and communication; it is exactly 1.0 by default so the seed's
formula holds exactly. :class:`CrossNodeSlowdown` is the simplest non-trivial one.
"""
from __future__ import annotations

from llmos_sim.formulas import distributed_time_s
from llmos_sim.types import Cluster, Task


class TrainingCost:
    """``T_d = T / Σ (C_i · share_i) · factor(placement)``; ``factor`` = 1.0 here.

    Subclasses change :meth:`factor` (placement, communication); :meth:`capacity_flops`
    is ``Σ C_i · share_i`` over the task's devices.
    """

    def device_flops(self, cluster: Cluster) -> list[float]:
        """``C_i`` of every device of ``cluster`` (cached per cluster: read once per task)."""
        cached = getattr(self, "_flops_for", None)
        if cached is None or cached[0] is not cluster:
            cached = (cluster, [d.spec.flops for d in cluster.devices])
            self._flops_for = cached
        return cached[1]

    def capacity_flops(self, task: Task, cluster: Cluster) -> float:
        """``Σ C_i`` over the granted devices, each scaled by the task's share."""
        total = sum(map(self.device_flops(cluster).__getitem__, task.devices))
        return total * task.share_milli / 1000 if task.share_milli != 1000 else total

    def capacities(self, task: Task, cluster: Cluster) -> list[float]:
        share = task.share_milli / 1000
        devs = cluster.devices
        return [devs[d].spec.flops * share for d in task.devices]

    def factor(self, task: Task, cluster: Cluster) -> float:
        """Placement/communication slowdown (>= 1 slows the job down). Exactly 1.0 here."""
        return 1.0

    def compute_s(self, task: Task, cluster: Cluster) -> float:
        """Seconds of compute for ``task.work_flops`` (no overheads)."""
        return distributed_time_s(task.work_flops, (self.capacity_flops(task, cluster),), self.factor(task, cluster))

    def rate_flops_s(self, task: Task, cluster: Cluster) -> float:
        """Progress rate ``Σ C_i · share_i / factor`` (FLOP/s)."""
        return self.capacity_flops(task, cluster) / self.factor(task, cluster)


class CrossNodeSlowdown(TrainingCost):
    """A job spread over ``k`` > 1 nodes runs ``1 + per_extra_node · (k − 1)`` times slower."""

    def __init__(self, per_extra_node: float = 0.0) -> None:
        if per_extra_node < 0:
            raise ValueError(f"per_extra_node must be >= 0, got {per_extra_node}")
        self.per_extra_node = per_extra_node

    def factor(self, task: Task, cluster: Cluster) -> float:
        k = len({cluster.devices[d].node for d in task.devices})
        return 1.0 + self.per_extra_node * (k - 1)


class RingAllReduce(TrainingCost):
    """Data-parallel communication from link bandwidth: ring all-reduce of the gradients each step.

    A job on ``n`` > 1 devices runs steps of ``step_s`` seconds of compute (weak scaling: the
    per-device batch is fixed, so the compute per step does not depend on ``n``) and then
    all-reduces ``grad_bytes`` with a ring: every device sends and receives
    ``2 (n − 1) / n · grad_bytes`` bytes over the slowest link of the ring, plus
    ``2 (n − 1)`` link latencies. The slowest link is

    - ``intra_node_bw_bytes_s`` (NVLink/PCIe) when all devices share one node,
    - ``cluster.link_bw_bytes_s`` across nodes of one switch (``intra_node_bw_bytes_s`` if the
      cluster leaves it 0),
    - that divided by ``cross_switch_oversubscription`` when the ring spans switches.

    ``factor = (step_s + comm_s) / step_s``: exactly 1.0 on one device. Communication is not
    overlapped with compute (a pessimistic, simple bound). ``grad_bytes_by_class`` overrides
    ``grad_bytes`` per job class (:func:`llmos_sim.hardware.job_class` of the job's name).
    """

    def __init__(self, grad_bytes: float = 1e9, step_s: float = 0.5, intra_node_bw_bytes_s: float = 150e9,
                 cross_switch_oversubscription: float = 1.0, grad_bytes_by_class: dict | None = None) -> None:
        if grad_bytes < 0 or step_s <= 0 or intra_node_bw_bytes_s <= 0 or cross_switch_oversubscription < 1:
            raise ValueError("RingAllReduce: need grad_bytes >= 0, step_s > 0, intra_node_bw_bytes_s > 0, "
                             "cross_switch_oversubscription >= 1")
        self.grad_bytes = float(grad_bytes)
        self.step_s = float(step_s)
        self.intra_node_bw_bytes_s = float(intra_node_bw_bytes_s)
        self.cross_switch_oversubscription = float(cross_switch_oversubscription)
        self.grad_bytes_by_class = dict(grad_bytes_by_class or {})

    def comm_s(self, task: Task, cluster: Cluster) -> float:
        """Seconds of all-reduce per step for ``task``'s placement."""
        n = len(task.devices)
        if n <= 1:
            return 0.0
        devs, nodes = cluster.devices, cluster.nodes
        node_set = {devs[d].node for d in task.devices}
        if len(node_set) == 1:
            bw = self.intra_node_bw_bytes_s
        else:
            bw = cluster.link_bw_bytes_s or self.intra_node_bw_bytes_s
            if len({nodes[nd].switch for nd in node_set}) > 1:
                bw /= self.cross_switch_oversubscription
        grad = self.grad_bytes
        if self.grad_bytes_by_class:
            from llmos_sim.hardware import job_class

            grad = float(self.grad_bytes_by_class.get(job_class(task.job.name), grad))
        lat = cluster.link_latency_s if len(node_set) > 1 else 0.0
        return 2 * (n - 1) / n * grad / bw + 2 * (n - 1) * lat

    def factor(self, task: Task, cluster: Cluster) -> float:
        return (self.step_s + self.comm_s(task, cluster)) / self.step_s


class DeviceAffinity(TrainingCost):
    """Per-(job class, device type) speed: a job runs at ``C · affinity`` on each device, where
    ``affinity[class][type]`` (default 1.0; class ``"*"`` = every class) is how well that model
    uses that GPU (Gavel's throughput matrix, relative to peak FLOP/s). A mixed-type grant runs
    at the pace of its slowest device (synchronous data parallelism):
    ``rate = n · min_i(C_i · a_i)``, i.e. ``factor = Σ C_i / (n · min_i(C_i · a_i))``."""

    def __init__(self, affinity: dict | None = None) -> None:
        self.affinity = {str(k): {str(t): float(x) for t, x in dict(v).items()} for k, v in dict(affinity or {}).items()}

    def factor(self, task: Task, cluster: Cluster) -> float:
        from llmos_sim.hardware import affinity_of

        devs = cluster.devices
        speeds = [devs[d].spec.flops * affinity_of(self.affinity, task.job.name, devs[d].spec.name)
                  for d in task.devices]
        if not speeds:
            return 1.0
        return sum(devs[d].spec.flops for d in task.devices) / (len(speeds) * min(speeds))
