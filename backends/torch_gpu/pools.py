"""``torch_native``: a memory pool that is PyTorch's own caching allocator.

Each allocation is a real ``torch.empty(nbytes, dtype=uint8)`` on the pool's device; PyTorch
decides where it lives. The pool keeps the :class:`~llmos_sim.policies.memory.base.MemoryPool`
interface so the engine and the stats treat it like any policy: ``offset`` is the tensor's
address relative to the first one seen (a label of where the caching allocator put it),
``allocated`` is what PyTorch reports as allocated (rounded to its block sizes on a GPU), and
``reserved`` is what its cache holds from the device (``torch.cuda.memory_stats`` on a GPU;
on the CPU there is no cache, so both equal the bytes handed out). The capacity ``M`` is
enforced like any pool: a request that would take the live bytes over ``M`` returns ``None``;
a real ``torch.OutOfMemoryError`` also returns ``None``.
"""
from __future__ import annotations

from typing import Hashable

import torch

from llmos_sim.policies.memory.base import Allocation, MemoryPool

#: the CUDA caching allocator rounds requests up to multiples of 512 bytes
CUDA_ROUND_BYTES = 512


class TorchNativePool(MemoryPool):
    """PyTorch's caching allocator behind the pool seam, on ``device`` (``cpu``, ``cuda:0``, ...)."""

    def __init__(self, capacity_bytes: int, device: str = "cpu") -> None:
        super().__init__(capacity_bytes)
        self.device = torch.device(device)
        self._tensors: dict[int, torch.Tensor] = {}
        self._base_ptr: int | None = None

    addressed = False  #: offsets are labels of real addresses; the backend uses :meth:`tensor`
    owns_storage = True

    def tensor(self, allocation: Allocation) -> torch.Tensor:
        """The real uint8 tensor behind ``allocation``."""
        return self._tensors[allocation.id]

    def _rounded(self, nbytes: int) -> int:
        if self.device.type == "cuda":
            return max(CUDA_ROUND_BYTES, -(-nbytes // CUDA_ROUND_BYTES) * CUDA_ROUND_BYTES)
        return nbytes

    def _allocate(self, nbytes: int, tag: Hashable, alloc_id: int) -> Allocation | None:
        size = self._rounded(nbytes)
        if self._allocated + size > self.capacity_bytes:
            return None
        try:
            t = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=self.device)
        except torch.OutOfMemoryError:
            return None
        ptr = t.data_ptr()
        if self._base_ptr is None:
            self._base_ptr = ptr
        self._tensors[alloc_id] = t
        self._allocated += size
        self._sync_reserved()
        return Allocation(offset=ptr - self._base_ptr, nbytes=size, requested=nbytes, tag=tag, id=alloc_id)

    def _free(self, allocation: Allocation) -> None:
        del self._tensors[allocation.id]  # back to PyTorch's cache (GPU) or the OS (CPU)
        self._allocated -= allocation.nbytes
        self._sync_reserved()

    def _sync_reserved(self) -> None:
        if self.device.type == "cuda":
            self._reserved = max(self._allocated, int(torch.cuda.memory_stats(self.device).get(
                "reserved_bytes.all.current", 0)))
        else:
            self._reserved = self._allocated

    def largest_free_bytes(self) -> int:
        return max(0, self.capacity_bytes - self._allocated)

    def device_stats(self) -> dict[str, int]:
        """PyTorch's own counters for this device (GPU), or the pool's byte counts (CPU)."""
        if self.device.type == "cuda":
            s = torch.cuda.memory_stats(self.device)
            return {k: int(s.get(k, 0)) for k in ("allocated_bytes.all.current", "reserved_bytes.all.current",
                                                 "inactive_split_bytes.all.current", "num_alloc_retries", "num_ooms")}
        return {"allocated_bytes": self._allocated, "reserved_bytes": self._reserved}


class TorchNativeFactory:
    """``capacity_bytes -> TorchNativePool``: the engine's pool factory (one call per device, in
    device order). ``device="auto"`` puts the ``i``-th pool on ``cuda:i`` (mod the GPU count)
    when GPUs exist, else every pool on the CPU; any other value is used for every pool."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device
        self._built = 0  # pools built so far by this factory (one run's engine)

    def __call__(self, capacity_bytes: int) -> TorchNativePool:
        dev = self.device
        if dev == "auto":
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            dev = f"cuda:{self._built % n}" if n else "cpu"
        self._built += 1
        return TorchNativePool(capacity_bytes, dev)
