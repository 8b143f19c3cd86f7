"""Workloads: seeded synthetic generators and adapters for real traces (shipped under data/)."""
from llmos_sim.workload.base import TraceError, Workload, data_path, read_csv_checked
from llmos_sim.workload.philly import PhillyTrace
from llmos_sim.workload.synthetic import SyntheticJobs

__all__ = ["TraceError", "Workload", "data_path", "read_csv_checked", "PhillyTrace", "SyntheticJobs"]
