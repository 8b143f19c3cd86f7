"""The real backend (imported as ``llmos_sim.backends.torch_gpu``): the only place torch is
imported. Real matmuls on every local CUDA GPU (or the CPU), real memory in per-device
arenas, calibration of the SimPy model from measurements, and the sim-vs-real comparison."""
from llmos_sim.backends.torch_gpu.backend import TorchBackend, WallClockEnvironment
from llmos_sim.backends.torch_gpu.devices import discover, local_cluster
from llmos_sim.backends.torch_gpu.pools import TorchNativeFactory, TorchNativePool
from llmos_sim.backends.torch_gpu.workload import CalibratedJobs

__all__ = ["TorchBackend", "WallClockEnvironment", "local_cluster", "discover", "TorchNativePool",
           "TorchNativeFactory", "CalibratedJobs"]
