"""Domain types at every boundary: frozen dataclasses with units in their names.

Vocabulary follows the seed document: a device has compute capacity ``C`` (FLOP/s) and a
memory pool of capacity ``M`` (bytes); a job carries work ``T`` (FLOPs) and demands per
resource type. Mutable runtime state lives only inside the engine.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from itertools import repeat
from operator import attrgetter
from types import MappingProxyType
from typing import Iterator, Mapping

GB = 10**9  #: decimal gigabyte (the seed's "4 GB")
GiB = 2**30
TFLOPS = 10**12

#: resource-type names used in demands and grants (the seed's R_i)
GPU = "gpu"
CPU = "cpu"
HOST_MEM = "host_mem_bytes"

FULL_DEVICE_MILLI = 1000  #: a whole device, in thousandths (Alibaba's ``gpu_milli``)

#: slack when a demand is compared with what is free (float sums of fractional grants): the
#: engine's grant and the view's fit test must use the same, or a job the view says fits is refused
CAPACITY_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One accelerator model: capacity ``C`` (FLOP/s, at the dtype jobs run in), memory ``M``
    (bytes) and memory bandwidth (bytes/s)."""

    name: str
    flops: float
    mem_bytes: int
    mem_bw_bytes_s: float = 0.0

    def __post_init__(self) -> None:
        if self.flops <= 0:
            raise ValueError(f"device {self.name!r}: flops must be > 0, got {self.flops}")
        if self.mem_bytes < 0:
            raise ValueError(f"device {self.name!r}: mem_bytes must be >= 0, got {self.mem_bytes}")


@dataclass(frozen=True, slots=True)
class Device:
    """A device instance in the cluster: a global index, its node and its spec."""

    index: int
    node: int
    spec: DeviceSpec

    @property
    def flops(self) -> float:
        return self.spec.flops

    @property
    def mem_bytes(self) -> int:
        return self.spec.mem_bytes


@dataclass(frozen=True, slots=True)
class Node:
    """A machine: its devices (global indices), CPU cores and host memory."""

    index: int
    devices: tuple[int, ...]
    cpus: int = 0
    host_mem_bytes: int = 0
    switch: int = 0  #: which top-of-rack switch the node hangs off (topology-aware placement)


@dataclass(frozen=True, slots=True)
class Cluster:
    """Nodes of devices, possibly heterogeneous. Device ``i`` is ``devices[i]``."""

    nodes: tuple[Node, ...]
    devices: tuple[Device, ...]
    link_bw_bytes_s: float = 0.0  #: inter-node link bandwidth (0 = not modelled)
    link_latency_s: float = 0.0
    #: Σ C_i, summed once (policies ask for the mean capacity per job per pass)
    _total_flops: float = field(init=False, repr=False, compare=False, default=0.0)

    def __post_init__(self) -> None:
        for i, d in enumerate(self.devices):
            if d.index != i:
                raise ValueError(f"device at position {i} has index {d.index}")
        if not self.devices:
            raise ValueError("a cluster needs at least one device")
        object.__setattr__(self, "_total_flops", sum(d.flops for d in self.devices))

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @property
    def total_flops(self) -> float:
        return self._total_flops

    def totals(self) -> dict[str, float]:
        """Capacity per resource type (the seed's R_i)."""
        return {
            GPU: float(len(self.devices)),
            CPU: float(sum(n.cpus for n in self.nodes)),
            HOST_MEM: float(sum(n.host_mem_bytes for n in self.nodes)),
        }

    @staticmethod
    def homogeneous(
        n_nodes: int,
        devices_per_node: int,
        spec: DeviceSpec,
        cpus_per_node: int = 0,
        host_mem_bytes_per_node: int = 0,
        nodes_per_switch: int = 0,
        link_bw_bytes_s: float = 0.0,
        link_latency_s: float = 0.0,
    ) -> "Cluster":
        """``n_nodes`` identical nodes of ``devices_per_node`` devices of one ``spec``."""
        return Cluster.from_groups(
            [(n_nodes, devices_per_node, spec, cpus_per_node, host_mem_bytes_per_node)],
            nodes_per_switch=nodes_per_switch,
            link_bw_bytes_s=link_bw_bytes_s,
            link_latency_s=link_latency_s,
        )

    @staticmethod
    def from_groups(
        groups: list[tuple[int, int, DeviceSpec, int, int]],
        nodes_per_switch: int = 0,
        link_bw_bytes_s: float = 0.0,
        link_latency_s: float = 0.0,
    ) -> "Cluster":
        """Build from groups of ``(n_nodes, devices_per_node, spec, cpus, host_mem_bytes)``."""
        nodes: list[Node] = []
        devices: list[Device] = []
        for n_nodes, per_node, spec, cpus, host_mem in groups:
            for _ in range(int(n_nodes)):
                ni = len(nodes)
                idx = tuple(range(len(devices), len(devices) + int(per_node)))
                devices.extend(Device(i, ni, spec) for i in idx)
                sw = ni // nodes_per_switch if nodes_per_switch else 0
                nodes.append(Node(ni, idx, int(cpus), int(host_mem), sw))
        return Cluster(tuple(nodes), tuple(devices), link_bw_bytes_s, link_latency_s)


def _frozen_map(m: Mapping[str, float] | None) -> Mapping[str, float]:
    return MappingProxyType(dict(m or {}))


_NO_DEMAND: Mapping[str, float] = MappingProxyType({})


def _no_demand() -> Mapping[str, float]:
    return _NO_DEMAND


@dataclass(frozen=True, slots=True)
class Job:
    """A training/batch job (the seed's task).

    ``work_flops`` is ``T``. ``gpus`` is the device demand (``R^d`` for the gpu type);
    ``min_gpus < gpus`` makes the job elastic: it may start on fewer devices (as many as
    ``min(available, demanded)`` grants, at least ``min_gpus``) and grow later. ``gpu_milli``
    below 1000 asks for a fraction of each device (shared GPUs). ``mem_bytes_per_device`` is
    the seed's ``M_d`` on every granted device. ``demand`` holds the other resource types
    (cpu, host_mem_bytes), as job totals.
    """

    id: int
    arrival_s: float
    work_flops: float
    gpus: int = 1
    min_gpus: int | None = None
    gpu_milli: int = FULL_DEVICE_MILLI
    mem_bytes_per_device: int = 0
    demand: Mapping[str, float] = field(default_factory=_no_demand)
    priority: int = 0
    tenant: str = "default"
    duration_hint_s: float | None = None  #: a user's estimate (walltime); None = unknown
    preprocess_s: float = 0.0  #: seed step 3 (CPU/IO before running)
    output_s: float = 0.0  #: seed step 5 (writing results)
    device_type: str | None = None  #: pin to a device model; None = any
    name: str = ""
    #: a long-running job that hosts replicas of this serving service on its devices until the
    #: service's request stream ends (``work_flops`` is then unused); None = ordinary work
    service: str | None = None
    #: an allocation pattern replayed on every granted device while the job runs, on top of
    #: ``mem_bytes_per_device`` (the persistent part): rows ``(time_s, op, key, nbytes)`` with
    #: ``op`` "alloc" or "free" and ``time_s`` from the start of each run segment's compute —
    #: the ``llmos_sim.memtrace`` trace format (e.g. a transformer step's activations). A
    #: failed allocation is a real out-of-memory: the job fails. Empty = a fixed footprint.
    mem_trace: tuple = ()

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"job {self.id}: gpus must be >= 1, got {self.gpus}")
        if self.work_flops < 0:
            raise ValueError(f"job {self.id}: work_flops must be >= 0, got {self.work_flops}")
        if self.min_gpus is not None and not (1 <= self.min_gpus <= self.gpus):
            raise ValueError(f"job {self.id}: min_gpus must be in [1, gpus], got {self.min_gpus}")
        if not (0 < self.gpu_milli <= FULL_DEVICE_MILLI):
            raise ValueError(f"job {self.id}: gpu_milli must be in (0, 1000], got {self.gpu_milli}")
        if self.arrival_s < 0:
            raise ValueError(f"job {self.id}: arrival_s must be >= 0, got {self.arrival_s}")
        if not isinstance(self.demand, MappingProxyType):
            object.__setattr__(self, "demand", _frozen_map(self.demand))

    @property
    def elastic(self) -> bool:
        return self.min_gpus is not None and self.min_gpus < self.gpus

    @property
    def min_devices(self) -> int:
        return self.min_gpus if self.min_gpus is not None else self.gpus

    def demands(self) -> dict[str, float]:
        """Demand per resource type, gpu included (the seed's ``R^d``)."""
        d = {GPU: float(self.gpus)}
        d.update(self.demand)
        return d


@dataclass(slots=True, eq=False)
class Task:
    """One run segment of a job handed to a backend: run ``work_flops`` on ``devices``, each
    at ``share_milli``/1000 of its capacity, after ``overhead_s`` (restore, preprocess).

    Read-only by convention (nothing changes a task once the engine has built it). Not a
    frozen dataclass on purpose: the engine builds one per start and per resume (hundreds of
    thousands in a preemptive run), and a frozen dataclass's constructor costs several times
    a plain one's. Equality is identity (each task is one segment; backends may key by it)."""

    job: Job
    devices: tuple[int, ...]
    work_flops: float
    share_milli: int = FULL_DEVICE_MILLI
    overhead_s: float = 0.0
    segment: int = 0  #: how many segments of this job ran before (preemptions/resizes)
    allocations: tuple = ()  #: ``((device, Allocation), ...)``: the memory granted to this segment


#: the :class:`Job` fields in constructor order (the columns of a :class:`JobTable`)
JOB_FIELDS: tuple[str, ...] = tuple(Job.__dataclass_fields__)


class Constant:
    """A column whose every row holds the same value (``tenant`` of a one-tenant workload,
    ``demand`` of jobs that ask for no other resource): one reference, not one per row."""

    __slots__ = ("value", "n")

    def __init__(self, value, n: int) -> None:
        self.value, self.n = value, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.value] * len(range(*i.indices(self.n)))
        if not -self.n <= i < self.n:
            raise IndexError("column index out of range")
        return self.value

    def __iter__(self):
        return repeat(self.value, self.n)


def _column(values: list):
    """The most compact column that reads back exactly ``values`` (same values, same types):
    one value for all rows (:class:`Constant`), 8 bytes a row (``array('d')`` of floats,
    ``array('q')`` of ints within int64), or the list itself."""
    n = len(values)
    if n:
        first = values[0]
        # equal ints, strings or None only: equal floats may differ in sign (0.0 and -0.0)
        if all(v is first for v in values) or (type(first) in (int, str) and values.count(first) == n
                                               and set(map(type, values)) == {type(first)}):
            return Constant(first, n)
    types = set(map(type, values))
    if types == {float}:
        return array("d", values)
    if types == {int} and -2**63 <= min(values) and max(values) < 2**63:
        return array("q", values)
    return values


class JobTable(Sequence):
    """Jobs as rows of columns: one column per :class:`Job` field (``JOB_FIELDS``), each an
    ``array`` of 8-byte numbers, a :class:`Constant` or a list, so a million jobs hold a few
    arrays instead of a million objects (a :class:`Job` with its boxed floats and ids is
    ≈270 bytes; a row of the table ≈40).

    It is a read-only sequence of :class:`Job`: ``table[i]``, slices and iteration build the
    jobs when asked (each time: equal, not identical), so code that wants jobs gets them. The
    key-order fast core reads the columns directly and never builds one; the general engine
    builds them once per run. Generators make a table from numpy columns (:meth:`from_columns`),
    anything else from jobs (:meth:`from_jobs`); each column reads back the values and Python
    types the jobs had.
    """

    __slots__ = ("n", "cols")

    def __init__(self, n: int, cols: dict) -> None:
        missing = [f for f in JOB_FIELDS if f not in cols]
        if missing:
            raise ValueError(f"JobTable: missing column(s) {missing}")
        bad = [f for f in JOB_FIELDS if len(cols[f]) != n]
        if bad:
            raise ValueError(f"JobTable: column(s) {bad} do not have {n} rows")
        self.n, self.cols = n, {f: cols[f] for f in JOB_FIELDS}

    @classmethod
    def from_jobs(cls, jobs: Sequence[Job]) -> "JobTable":
        """The table of ``jobs`` (rows in their order)."""
        if isinstance(jobs, JobTable):
            return jobs
        jobs = list(jobs)
        return cls(len(jobs), {f: _column(list(map(attrgetter(f), jobs))) for f in JOB_FIELDS})

    @classmethod
    def from_columns(cls, n: int, **columns) -> "JobTable":
        """A table of ``n`` jobs from columns by field name: a numpy array (float64 -> floats,
        integers -> ints), a list, or a single value for every row; fields not given take the
        :class:`Job` default. The rows are checked as :class:`Job` checks them."""
        import numpy as np

        cols = {}
        for f in JOB_FIELDS:
            if f not in columns:
                default = Job.__dataclass_fields__[f]
                if default.default is MISSING and default.default_factory is MISSING:
                    raise ValueError(f"JobTable.from_columns: column {f!r} is required")
                cols[f] = Constant(default.default_factory() if default.default is MISSING else default.default, n)
                continue
            v = columns[f]
            if isinstance(v, np.ndarray):
                if v.shape != (n,):
                    raise ValueError(f"JobTable.from_columns: column {f!r} has shape {v.shape}, not ({n},)")
                if v.dtype.kind == "f":
                    cols[f] = array("d", v.astype(np.float64, copy=False).tobytes())
                elif v.dtype.kind in "iu":  # one value in every row (memory 0): a Constant
                    cols[f] = (Constant(int(v[0]), n) if n and (v == v[0]).all()
                               else array("q", v.astype(np.int64).tobytes()))
                else:
                    cols[f] = v.tolist()
            elif isinstance(v, (list, array, Constant)):
                cols[f] = v
            else:
                cols[f] = Constant(v, n)
        table = cls(n, cols)
        table._check()
        return table

    def _check(self) -> None:
        """What :meth:`Job.__post_init__` checks, over whole columns: the first bad row is built
        as a :class:`Job`, whose own check names the job and the field. Columns of other
        objects (elastic ``min_gpus``, ``demand`` mappings) are checked row by row."""
        import numpy as np

        tests = {"gpus": lambda v: v < 1, "work_flops": lambda v: v < 0, "arrival_s": lambda v: v < 0,
                 "gpu_milli": lambda v: (v <= 0) | (v > FULL_DEVICE_MILLI)}
        for name, test in tests.items():
            v = self.array(name)
            rows = np.flatnonzero(test(v)) if v is not None else range(self.n)
            for i in rows[:1] if v is not None else rows:
                self[int(i)]
        if any(not isinstance(self.cols[f], Constant) for f in ("min_gpus", "demand")) or self.n:
            for i in range(self.n) if not all(isinstance(self.cols[f], Constant) for f in ("min_gpus", "demand")) \
                    else range(1):
                self[i]

    def array(self, name: str):
        """Column ``name`` as a numpy array, or None when it is not numbers of one type."""
        import numpy as np

        c = self.cols[name]
        if isinstance(c, array):
            return np.frombuffer(c, dtype=np.float64 if c.typecode == "d" else np.int64) if len(c) else \
                np.zeros(0, np.float64 if c.typecode == "d" else np.int64)
        if isinstance(c, Constant) and type(c.value) in (int, float):
            return np.full(self.n, c.value, dtype=np.float64 if type(c.value) is float else np.int64)
        return None

    def column(self, name: str):
        """Column ``name``: indexable by row (an ``array``, a :class:`Constant` or a list)."""
        return self.cols[name]

    def values(self, name: str) -> list:
        """Column ``name`` as a list of its Python values."""
        c = self.cols[name]
        return c.tolist() if isinstance(c, array) else list(c)

    def distinct(self, name: str) -> set:
        """The distinct values of column ``name``."""
        c = self.cols[name]
        if isinstance(c, Constant):
            return {c.value} if self.n else set()
        if isinstance(c, array):
            import numpy as np

            return set(np.unique(self.array(name)).tolist())
        try:
            return set(c)
        except TypeError:  # unhashable values (mappings): compare them one by one
            return {repr(v) for v in c}

    def take(self, rows) -> "JobTable":
        """The table of rows ``rows`` (a sequence of row numbers), in that order."""
        import numpy as np

        rows = np.asarray(rows, dtype=np.int64)
        cols = {}
        for f, c in self.cols.items():
            if isinstance(c, Constant):
                cols[f] = Constant(c.value, len(rows))
            elif isinstance(c, array):
                cols[f] = array(c.typecode, self.array(f)[rows].tobytes())
            else:
                cols[f] = list(map(c.__getitem__, rows.tolist()))
        return JobTable(len(rows), cols)

    def gather(self, name: str, rows: Sequence[int]) -> list:
        """Column ``name``'s values at ``rows`` (row numbers), as a list: the values and Python
        types ``table[k].<name>`` has, without a step per row for a column of numbers."""
        c = self.cols[name]
        if isinstance(c, Constant):
            return [c.value] * len(rows)
        if isinstance(c, array):
            import numpy as np

            return self.array(name)[np.asarray(rows, dtype=np.int64)].tolist()
        return list(map(c.__getitem__, rows))

    def arrive(self, k: int) -> tuple:
        """The ``arrive`` record's data of row ``k``: ``(gpus, work_flops, gpu_milli, tenant)``,
        the fields an arrival logs (the fast core logs the row number; the log derives this)."""
        c = self.cols
        return c["gpus"][k], c["work_flops"][k], c["gpu_milli"][k], c["tenant"][k]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError("job table index out of range")
        return Job(*[c[i] for c in self.cols.values()])

    def __iter__(self) -> Iterator[Job]:
        return map(Job, *(self.values(f) for f in JOB_FIELDS))

    def __reduce__(self):
        return JobTable, (self.n, self.cols)

    def __repr__(self) -> str:
        return f"JobTable({self.n} jobs)"


#: the :class:`Job` fields an ``arrive`` record's data holds, in order
ARRIVE_FIELDS = ("gpus", "work_flops", "gpu_milli", "tenant")


class Arrivals:
    """How a log derives its ``arrive`` records' data when each stores its job's row in a
    :class:`JobTable` (the fast core's arrivals): called with a row, the data tuple
    (:meth:`JobTable.arrive`); :meth:`columns` gives many rows' data as one column per field,
    which the tables read instead of a tuple per record."""

    __slots__ = ("table",)

    def __init__(self, table: JobTable) -> None:
        self.table = table

    def __call__(self, k: int) -> tuple:
        return self.table.arrive(k)

    def columns(self, rows: Sequence[int]) -> list[list]:
        """The data of the arrivals of ``rows``, field by field (:data:`ARRIVE_FIELDS`): what
        ``zip(*map(self, rows))`` gives, as lists."""
        return [self.table.gather(f, rows) for f in ARRIVE_FIELDS]


class JobRows(Sequence):
    """Rows of a :class:`JobTable` as a read-only sequence of :class:`Job` (built when read):
    the jobs of a run's finished records when the run read a table."""

    __slots__ = ("table", "rows")

    def __init__(self, table: JobTable, rows) -> None:
        self.table, self.rows = table, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.table[k] for k in self.rows[i]]
        return self.table[self.rows[i]]

    def __iter__(self) -> Iterator[Job]:
        return map(self.table.__getitem__, self.rows)
