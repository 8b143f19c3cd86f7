"""The device catalogue (the one list of accelerator parts every mode reads) and cluster builders.

:data:`CATALOGUE` holds, per part, the vendors' datasheet peaks: tensor-core dense FLOP/s at
bf16 (fp16 where the part has no bf16: P100, V100, T4), fp32 non-tensor FLOP/s, memory
capacity and bandwidth, the per-device peer link (NVLink, or PCIe where the part has none;
bytes/s, one direction) and the host link. Training clusters take :class:`DeviceSpec` from it
(:func:`device_spec`), serving takes :class:`~llmos_sim.serving.specs.GpuSpec` from it
(:func:`llmos_sim.serving.specs.gpu_spec`; ``configs/gpu/*.yaml`` only name a part), and in
``mode: mixed`` a service's replicas run on the part the cluster granted.

Memory is the nominal capacity in binary units: the DRAM on these boards comes in power-of-two
chips, and the marketing "80GB" of an A100 or H100 is 80 GiB (NVML reports exactly 81920 MiB
on an A100 80GB, 40960 MiB on an A100 40GB; an H100 80GB reports 81559 MiB and an H200 141GB
143771 MiB, the driver keeping a few hundred MiB; GDDR parts with ECC on report ~6% less).
A run that needs the figure a driver reports sets ``mem_bytes`` (training) or
``gpu.mem_bytes`` (serving). Achieved rates are lower than these peaks; calibrate
(``experiment=calibrate backend=torch``) to measure them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from llmos_sim.types import GB, GiB, Cluster, DeviceSpec
from llmos_sim.validate import count, non_negative, positive

T = 1e12


@dataclass(frozen=True, slots=True)
class Part:
    """One catalogue entry: a part's published peaks (see the module docstring for units)."""

    name: str
    flops: float  #: dense bf16 (fp16 where no bf16) tensor FLOP/s
    flops_fp32: float  #: fp32 non-tensor FLOP/s
    mem_bytes: int
    mem_bw_bytes_s: float
    link_bw_bytes_s: float  #: peer link per device, one direction
    host_bw_bytes_s: float  #: host link (PCIe), one direction
    aliases: tuple[str, ...] = ()


#: every part the simulator knows, by canonical name
CATALOGUE: dict[str, Part] = {p.name: p for p in (
    Part("P100", 21.2 * T, 10.6 * T, 16 * GiB, 732e9, 80e9, 16e9),  # SXM2, fp16; NVLink1 4 x 20 GB/s
    Part("V100", 125 * T, 15.7 * T, 32 * GiB, 900e9, 150e9, 16e9),  # SXM2 32 GB, fp16 tensor; NVLink2 6 x 25 GB/s
    Part("V100M16", 125 * T, 15.7 * T, 16 * GiB, 900e9, 150e9, 16e9),
    Part("V100M32", 125 * T, 15.7 * T, 32 * GiB, 900e9, 150e9, 16e9),
    Part("T4", 65 * T, 8.1 * T, 16 * GiB, 320e9, 16e9, 16e9),  # fp16 tensor; PCIe3 x16
    Part("A10", 125 * T, 31.2 * T, 24 * GiB, 600e9, 32e9, 32e9),  # PCIe4 x16
    Part("A100", 312 * T, 19.5 * T, 80 * GiB, 2039e9, 300e9, 32e9, ("A100-SXM-80GB",)),  # SXM 80 GB; NVLink3
    Part("A100-40GB", 312 * T, 19.5 * T, 40 * GiB, 1555e9, 300e9, 32e9),
    Part("H100", 989.4 * T, 67 * T, 80 * GiB, 3350e9, 450e9, 64e9, ("H100-SXM",)),  # SXM5; NVLink4, PCIe5
    Part("H200", 989.4 * T, 67 * T, 141 * GiB, 4800e9, 450e9, 64e9, ("H200-SXM",)),  # SXM
    Part("RTX4090", 165.2 * T, 82.6 * T, 24 * GiB, 1008e9, 32e9, 32e9, ("RTX-4090",)),  # bf16, fp32 accumulate
    Part("L40S", 362.05 * T, 91.6 * T, 48 * GiB, 864e9, 32e9, 32e9),  # PCIe4 x16, no NVLink
    # Blackwell Server Edition: 32 x 3 GiB GDDR7; dense bf16 = the datasheet's 4 PFLOP/s sparse FP4 / 8
    Part("RTXPRO6000", 503.8 * T, 125 * T, 96 * GiB, 1597e9, 64e9, 64e9, ("RTX-PRO-6000",)),
)}
_BY_ALIAS = {a: p for p in CATALOGUE.values() for a in p.aliases}


def part(name: str, key: str = "device") -> Part:
    """The catalogue entry named ``name`` (canonical name or alias); a clear error otherwise."""
    found = CATALOGUE.get(name) or _BY_ALIAS.get(name)
    if found is None:
        raise ValueError(f"{key}: unknown device {name!r} (known: {', '.join(sorted(CATALOGUE))})")
    return found


def is_known(name: str) -> bool:
    return name in CATALOGUE or name in _BY_ALIAS


#: name -> (bf16/fp16 tensor FLOP/s, fp32 FLOP/s, memory bytes, memory bandwidth bytes/s); a view of
#: :data:`CATALOGUE` kept for callers that read the four training figures
PRESETS: dict[str, tuple[float, float, int, float]] = {
    n: (p.flops, p.flops_fp32, p.mem_bytes, p.mem_bw_bytes_s) for n, p in CATALOGUE.items()}


def device_spec(name: str, dtype: str = "bf16", flops: float | None = None, mem_bytes: int | None = None,
                mem_bw_bytes_s: float | None = None, key: str = "device") -> DeviceSpec:
    """A preset by name (``dtype`` ``bf16``/``fp16`` or ``fp32``), or a custom device when
    ``flops`` and ``mem_bytes`` are given; explicit values override the preset's. Given values
    must be finite (``flops`` > 0, the others >= 0); ``key`` names the config key in errors."""
    flops = None if flops is None else positive(f"{key}.flops", flops)
    mem_bytes = None if mem_bytes is None else count(f"{key}.mem_bytes", mem_bytes)
    mem_bw_bytes_s = None if mem_bw_bytes_s is None else non_negative(f"{key}.mem_bw_bytes_s", mem_bw_bytes_s)
    if is_known(name):
        p = part(name, key)
        name, f16, f32, mem, bw = p.name, p.flops, p.flops_fp32, p.mem_bytes, p.mem_bw_bytes_s
        if dtype not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"device {name!r}: unknown dtype {dtype!r} (bf16, fp16, fp32)")
        base = f32 if dtype == "fp32" else f16
        return DeviceSpec(name, float(flops if flops is not None else base),
                          int(mem_bytes if mem_bytes is not None else mem),
                          float(mem_bw_bytes_s if mem_bw_bytes_s is not None else bw))
    if flops is None or mem_bytes is None:
        raise ValueError(f"unknown device preset {name!r} (known: {sorted(CATALOGUE)}); "
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
            specs[model] = device_spec(model) if is_known(model) else device_spec(
                model, flops=flops.get(model, 100 * T), mem_bytes=mem_bytes)
        groups.append((1, int(gpu), specs[model], int(cpu) // 1000, int(mem) * 2**20))
    return Cluster.from_groups(groups)
