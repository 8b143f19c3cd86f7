"""Workloads: seeded synthetic generators and adapters for real traces (shipped under data/)."""
from llmos_sim.workload.alibaba import AlibabaTrace
from llmos_sim.workload.base import TraceError, Workload, data_path, read_csv_checked
from llmos_sim.workload.philly import PhillyTrace
from llmos_sim.workload.pollux import PolluxWorkload
from llmos_sim.workload.synthetic import SyntheticJobs
from llmos_sim.workload.tiresias import TiresiasTrace

__all__ = ["TraceError", "Workload", "data_path", "read_csv_checked", "PhillyTrace", "SyntheticJobs",
           "TiresiasTrace", "PolluxWorkload", "AlibabaTrace"]
