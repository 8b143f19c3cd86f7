"""Model and GPU specifications for serving: frozen dataclasses with derived sizes.

``ModelSpec`` describes a dense decoder-only transformer (Llama family: grouped-query
attention, SwiGLU MLP, untied embeddings unless said otherwise). From it follow the parameter
count, the weight bytes and the KV-cache bytes per token, which the cost model and the KV
cache manager use. ``GpuSpec`` holds published peak numbers of one accelerator.

Presets (values from the models' ``config.json`` and the vendors' datasheets):

- Llama-3.1-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocab 128256
  → 8.03e9 parameters, 128 KiB of KV per token in bf16.
- Llama-3-70B: 80 layers, hidden 8192, 64 heads, 8 KV heads, MLP 28672, vocab 128256
  → 70.6e9 parameters, 320 KiB of KV per token.
- GPUs: dense (no sparsity) bf16 tensor FLOP/s with FP32 accumulate, memory bandwidth,
  memory capacity, the per-GPU peer link (NVLink or PCIe) and the host link (swap).
"""
from __future__ import annotations

from dataclasses import dataclass

from llmos_sim.types import GiB, DeviceSpec


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A dense transformer. Sizes are element counts; ``dtype_bytes`` is bytes per element
    of weights and KV cache (2 for bf16)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    dtype_bytes: int = 2
    tied_embeddings: bool = False

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "dtype_bytes"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model {self.name!r}: {f} must be > 0, got {getattr(self, f)}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"model {self.name!r}: hidden must divide by heads and heads by kv_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: q,o (h×h), k,v (h×kv_dim), SwiGLU MLP (3·h·i), 2 norms."""
        kv_dim = self.kv_heads * self.head_dim
        return 2 * self.hidden * self.hidden + 2 * self.hidden * kv_dim + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def params(self) -> int:
        """All parameters: layers + embedding + final norm + LM head (unless tied)."""
        emb = self.vocab * self.hidden
        return self.layers * self.layer_params + emb + self.hidden + (0 if self.tied_embeddings else emb)

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in a matmul per token (layers + LM head; not the lookup)."""
        return self.layers * self.layer_params + self.vocab * self.hidden

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token: ``2 · layers · kv_heads · head_dim · dtype``."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator's published peaks: dense bf16 FLOP/s, memory bandwidth (bytes/s),
    memory capacity (bytes), peer link per GPU (bytes/s, one direction) and host link (bytes/s)."""

    name: str
    flops: float
    mem_bw_bytes_s: float
    mem_bytes: int
    link_bw_bytes_s: float = 0.0
    host_bw_bytes_s: float = 0.0

    def __post_init__(self) -> None:
        if self.flops <= 0 or self.mem_bw_bytes_s <= 0 or self.mem_bytes <= 0:
            raise ValueError(f"gpu {self.name!r}: flops, mem_bw_bytes_s and mem_bytes must be > 0")

    def device(self) -> DeviceSpec:
        """The project-wide device type for this GPU."""
        return DeviceSpec(self.name, self.flops, self.mem_bytes, self.mem_bw_bytes_s)


LLAMA31_8B = ModelSpec("Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128256)
LLAMA3_70B = ModelSpec("Llama-3-70B", 80, 8192, 64, 8, 28672, 128256)
TINY = ModelSpec("tiny", 2, 64, 4, 4, 256, 1000)

A100_80GB = GpuSpec("A100-SXM-80GB", 312e12, 2.039e12, 80 * GiB, 300e9, 32e9)
H100 = GpuSpec("H100-SXM", 989.4e12, 3.35e12, 80 * GiB, 450e9, 64e9)
H200 = GpuSpec("H200-SXM", 989.4e12, 4.8e12, 141 * 10**9, 450e9, 64e9)
RTX4090 = GpuSpec("RTX-4090", 165.2e12, 1.008e12, 24 * GiB, 32e9, 32e9)
L40S = GpuSpec("L40S", 362.05e12, 0.864e12, 48 * GiB, 32e9, 32e9)
