"""Device presets with published peak rates (dense, no sparsity) and cluster builders.

Figures are the vendors' datasheet peaks: tensor-core dense FLOP/s at bf16 (fp16 where the
part has no bf16: P100, V100, T4), fp32 non-tensor FLOP/s, memory capacity and bandwidth.
Achieved rates are lower; calibrate (``experiment=calibrate backend=torch``) to measure them.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from llmos_sim.types import GB, Cluster, DeviceSpec
from llmos_sim.validate import count, non_negative, positive

T = 1e12

#: name -> (bf16/fp16 tensor FLOP/s, fp32 FLOP/s, memory bytes, memory bandwidth bytes/s)
PRESETS: dict[str, tuple[float, float, int, float]] = {
    "P100": (21.2 * T, 10.6 * T, 16 * GB, 732e9),  # SXM2, fp16
    "V100": (125 * T, 15.7 * T, 32 * GB, 900e9),  # SXM2 32 GB, fp16 tensor
    "V100M16": (125 * T, 15.7 * T, 16 * GB, 900e9),
    "V100M32": (125 * T, 15.7 * T, 32 * GB, 900e9),
    "T4": (65 * T, 8.1 * T, 16 * GB, 320e9),  # fp16 tensor
    "A10": (125 * T, 31.2 * T, 24 * GB, 600e9),
    "A100": (312 * T, 19.5 * T, 80 * GB, 2039e9),  # SXM 80 GB
    "A100-40GB": (312 * T, 19.5 * T, 40 * GB, 1555e9),
    "H100": (989 * T, 67 * T, 80 * GB, 3350e9),  # SXM
    "H200": (989 * T, 67 * T, 141 * GB, 4800e9),  # SXM
    "RTX4090": (165.2 * T, 82.6 * T, 24 * GB, 1008e9),  # bf16 tensor with fp32 accumulate
}


def device_spec(name: str, dtype: str = "bf16", flops: float | None = None, mem_bytes: int | None = None,
                mem_bw_bytes_s: float | None = None, key: str = "device") -> DeviceSpec:
    """A preset by name (``dtype`` ``bf16``/``fp16`` or ``fp32``), or a custom device when
    ``flops`` and ``mem_bytes`` are given; explicit values override the preset's. Given values
    must be finite (``flops`` > 0, the others >= 0); ``key`` names the config key in errors."""
    flops = None if flops is None else positive(f"{key}.flops", flops)
    mem_bytes = None if mem_bytes is None else count(f"{key}.mem_bytes", mem_bytes)
    mem_bw_bytes_s = None if mem_bw_bytes_s is None else non_negative(f"{key}.mem_bw_bytes_s", mem_bw_bytes_s)
    if name in PRESETS:
        f16, f32, mem, bw = PRESETS[name]
        if dtype not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"device {name!r}: unknown dtype {dtype!r} (bf16, fp16, fp32)")
        base = f32 if dtype == "fp32" else f16
        return DeviceSpec(name, float(flops if flops is not None else base),
                          int(mem_bytes if mem_bytes is not None else mem),
                          float(mem_bw_bytes_s if mem_bw_bytes_s is not None else bw))
    if flops is None or mem_bytes is None:
        raise ValueError(f"unknown device preset {name!r} (known: {sorted(PRESETS)}); "
                         "give flops and mem_bytes for a custom device")
    return DeviceSpec(name, float(flops), int(mem_bytes), float(mem_bw_bytes_s or 0.0))


def build_cluster(groups: Sequence[Mapping[str, Any]], nodes_per_switch: int = 0, link_bw_bytes_s: float = 0.0,
                  link_latency_s: float = 0.0) -> Cluster:
    """A cluster from config groups, each ``{nodes, devices_per_node, device: {name, dtype?,
    flops?, mem_bytes?, mem_bw_bytes_s?}, cpus_per_node?, host_mem_bytes_per_node?}``."""
    built = []
    for i, g in enumerate(groups):
        g = dict(g)
        for key in ("nodes", "devices_per_node", "device"):
            if key not in g:
                raise ValueError(f"cluster.groups[{i}]: missing key {key!r}")
        dev, key = g["device"], f"cluster.groups[{i}]"
        spec = device_spec(dev) if isinstance(dev, str) else device_spec(**dict(dev), key=f"{key}.device")
        built.append((count(f"{key}.nodes", g["nodes"], 1), count(f"{key}.devices_per_node", g["devices_per_node"], 1),
                      spec, count(f"{key}.cpus_per_node", g.get("cpus_per_node", 0)),
                      count(f"{key}.host_mem_bytes_per_node", g.get("host_mem_bytes_per_node", 0))))
    non_negative("cluster.link_bw_bytes_s", link_bw_bytes_s)
    non_negative("cluster.link_latency_s", link_latency_s)
    count("cluster.nodes_per_switch", nodes_per_switch)
    return Cluster.from_groups(built, nodes_per_switch=nodes_per_switch, link_bw_bytes_s=link_bw_bytes_s,
                               link_latency_s=link_latency_s)


# -- heterogeneity helpers (Gavel-style throughput model) -----------------------------------
def job_class(name: str) -> str:
    """A job's class for per-(class, device type) affinities: its name without the trailing
    ``-<number>`` (``"resnet50-12"`` → ``"resnet50"``, ``"philly-7"`` → ``"philly"``)."""
    head, sep, tail = name.rpartition("-")
    return head if sep and tail.isdigit() else name


def affinity_of(affinity: Mapping[str, Mapping[str, float]] | None, name: str, device_type: str) -> float:
    """Relative speed multiplier of jobs named ``name`` on ``device_type`` (1.0 if not listed).
    ``affinity`` maps class → device type → multiplier; the class ``"*"`` applies to all."""
    if not affinity:
        return 1.0
    cls = job_class(name)
    for c in (cls, "*"):
        row = affinity.get(c)
        if row is not None and device_type in row:
            return float(row[device_type])
    return 1.0


def tiresias_cluster(path: str = "data:tiresias/n32g4.csv", device: str = "P100", link_bw_bytes_s: float = 12.5e9,
                     link_latency_s: float = 0.0) -> Cluster:
    """The cluster spec Tiresias's simulator reads (``n32g4.csv``: ``num_switch,
    num_node_p_switch, num_gpu_p_node, num_cpu_p_node, mem_p_node`` with memory in GB), as a
    :class:`Cluster` of ``device`` GPUs (default P100, Tiresias's testbed GPU)."""
    from llmos_sim.workload.tiresias import read_cluster_spec

    s = read_cluster_spec(path)
    nodes = s["num_switch"] * s["num_node_p_switch"]
    return Cluster.from_groups([(nodes, s["num_gpu_p_node"], device_spec(device), s["num_cpu_p_node"],
                                 s["mem_p_node"] * GB)], nodes_per_switch=s["num_node_p_switch"],
                               link_bw_bytes_s=link_bw_bytes_s, link_latency_s=link_latency_s)


#: FLOP/s assumed for Alibaba's anonymised GPU models (G2, G3 have no public spec); a guess
#: between T4 and A100 so they sort between the known parts. Override in ``alibaba_cluster``.
ALIBABA_UNKNOWN_FLOPS = {"G2": 125 * T, "G3": 200 * T}


def alibaba_cluster(path: str = "data:alibaba_openb_2023/openb_node_list_gpu_node.csv",
                    models: Sequence[str] | None = None, max_nodes: int | None = None,
                    model_flops: Mapping[str, float] | None = None, mem_bytes: int = 32 * GB) -> Cluster:
    """The OpenB node list (``sn, cpu_milli, memory_mib, gpu, model``) as a heterogeneous
    :class:`Cluster`: one node per row, its GPUs of preset ``model`` (P100, T4, V100M16,
    V100M32, A10); unknown models (G2, G3) get ``model_flops`` (default
    :data:`ALIBABA_UNKNOWN_FLOPS`) and ``mem_bytes``. ``models`` keeps only those models;
    ``max_nodes`` the first N nodes (after the filter). CPUs = ``cpu_milli/1000``, host memory
    = ``memory_mib`` MiB."""
    from llmos_sim.workload.alibaba import read_nodes

    df = read_nodes(path)
    if models is not None:
        df = df[df["model"].isin(list(models))]
    if max_nodes is not None:
        df = df.iloc[: int(max_nodes)]
    flops = dict(ALIBABA_UNKNOWN_FLOPS)
    flops.update(model_flops or {})
    specs: dict[str, DeviceSpec] = {}
    groups = []
    for cpu, mem, gpu, model in zip(df["cpu_milli"].tolist(), df["memory_mib"].tolist(), df["gpu"].tolist(),
                                    df["model"].tolist()):
        if model not in specs:
            specs[model] = device_spec(model) if model in PRESETS else device_spec(
                model, flops=flops.get(model, 100 * T), mem_bytes=mem_bytes)
        groups.append((1, int(gpu), specs[model], int(cpu) // 1000, int(mem) * 2**20))
    return Cluster.from_groups(groups)
