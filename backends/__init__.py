"""Backends (imported as ``llmos_sim.backends``): the SimPy cluster model and the torch backend.
torch is imported only under ``llmos_sim.backends.torch_gpu``."""
