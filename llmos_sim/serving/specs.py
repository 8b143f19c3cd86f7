"""Model and GPU specifications for serving: frozen dataclasses with derived sizes.

``ModelSpec`` describes a decoder-only transformer (Llama / Qwen3 family: grouped-query
attention, SwiGLU MLP, untied embeddings unless said otherwise). A mixture-of-experts model
(``experts`` > 0) replaces each layer's MLP by ``experts`` SwiGLU experts of width
``expert_intermediate`` and a router, of which ``active_experts`` run per token. From it follow the parameter
count, the weight bytes and the KV-cache bytes per token, which the cost model and the KV
cache manager use. ``GpuSpec`` holds published peak numbers of one accelerator.

Presets (values from the models' ``config.json`` and the vendors' datasheets):

- Llama-3.1-8B: 32 layers, hidden 4096, 32 heads, 8 KV heads, MLP 14336, vocab 128256
  → 8.03e9 parameters, 128 KiB of KV per token in bf16.
- Llama-3-70B: 80 layers, hidden 8192, 64 heads, 8 KV heads, MLP 28672, vocab 128256
  → 70.6e9 parameters, 320 KiB of KV per token.
- Qwen3-32B: 64 layers, hidden 5120, 64 heads of 128 (head size given, not hidden / heads),
  8 KV heads, MLP 25600, vocab 151936 → 32.8e9 parameters, 256 KiB of KV per token.
- Qwen3-30B-A3B (MoE): 48 layers, hidden 2048, 32 heads of 128, 4 KV heads, 128 experts of
  width 768, 8 active per token, vocab 151936 → 30.5e9 parameters (3.3e9 active per token),
  96 KiB of KV per token.
- GPUs: a :class:`GpuSpec` is the serving view of one part of the device catalogue
  (:data:`llmos_sim.hardware.CATALOGUE`, the one list training and serving share): dense bf16
  tensor FLOP/s, memory bandwidth, memory capacity, the per-GPU peer link (NVLink or PCIe) and
  the host link (swap). :func:`gpu_spec` builds one by name (``configs/gpu/*.yaml`` call it),
  :meth:`GpuSpec.of_device` from the device a cluster granted.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmos_sim.hardware import CATALOGUE, part
from llmos_sim.types import DeviceSpec


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
    head_size: int = 0  #: per-head width; 0 = hidden / heads
    experts: int = 0  #: MoE: routed experts per layer (0 = a dense MLP of width ``intermediate``)
    active_experts: int = 0  #: MoE: experts each token runs (top-k)
    expert_intermediate: int = 0  #: MoE: width of one expert's SwiGLU MLP

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab", "dtype_bytes"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model {self.name!r}: {f} must be > 0, got {getattr(self, f)}")
        if (not self.head_size and self.hidden % self.heads) or self.heads % self.kv_heads:
            raise ValueError(f"model {self.name!r}: hidden must divide by heads and heads by kv_heads")
        if self.head_size < 0 or self.experts < 0:
            raise ValueError(f"model {self.name!r}: head_size and experts must be >= 0")
        if self.experts and not (0 < self.active_experts <= self.experts and self.expert_intermediate > 0):
            raise ValueError(f"model {self.name!r}: a MoE model needs 0 < active_experts <= experts "
                             f"and expert_intermediate > 0")

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.heads

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def _attn_params(self) -> int:
        """q and o (h × heads·head_dim each), k and v (h × kv_dim each), 2 norms."""
        q_dim, kv_dim = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return 2 * self.hidden * q_dim + 2 * self.hidden * kv_dim + 2 * self.hidden

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: attention (q, k, v, o), the MLP (SwiGLU, 3·h·i; for
        a MoE model every expert's 3·h·expert_intermediate and the router h·experts), 2 norms."""
        if self.experts:
            return self._attn_params() + self.experts * 3 * self.hidden * self.expert_intermediate + self.hidden * self.experts
        return self._attn_params() + 3 * self.hidden * self.intermediate

    @property
    def active_layer_params(self) -> int:
        """Parameters of one decoder layer one token multiplies with: all of a dense layer; for
        a MoE layer the attention, the router and ``active_experts`` experts."""
        if self.experts:
            return (self._attn_params() + self.active_experts * 3 * self.hidden * self.expert_intermediate
                    + self.hidden * self.experts)
        return self.layer_params

    @property
    def params(self) -> int:
        """All parameters: layers + embedding + final norm + LM head (unless tied)."""
        emb = self.vocab * self.hidden
        return self.layers * self.layer_params + emb + self.hidden + (0 if self.tied_embeddings else emb)

    @property
    def matmul_params(self) -> int:
        """Parameters that take part in a matmul (layers + LM head; not the lookup)."""
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

    @classmethod
    def of_device(cls, dev: DeviceSpec) -> "GpuSpec":
        """The GPU a cluster device is: its FLOP/s, memory and bandwidth as granted; its links
        from the catalogue when the part is known there (else none). A device without a memory
        bandwidth takes the catalogue's (a serving cost model needs one)."""
        known = CATALOGUE.get(dev.name)
        bw = dev.mem_bw_bytes_s or (known.mem_bw_bytes_s if known else 0.0)
        return cls(dev.name, dev.flops, bw, dev.mem_bytes, known.link_bw_bytes_s if known else 0.0,
                   known.host_bw_bytes_s if known else 0.0)


def gpu_spec(name: str, flops: float | None = None, mem_bw_bytes_s: float | None = None,
             mem_bytes: int | None = None, link_bw_bytes_s: float | None = None,
             host_bw_bytes_s: float | None = None) -> GpuSpec:
    """The catalogue part ``name`` (canonical name or alias) as a :class:`GpuSpec`; a given
    figure overrides the catalogue's (e.g. ``gpu.mem_bytes`` for what a driver reports)."""
    p = part(name, "gpu.name")
    pick = lambda v, d: d if v is None else v  # noqa: E731
    return GpuSpec(p.name, float(pick(flops, p.flops)), float(pick(mem_bw_bytes_s, p.mem_bw_bytes_s)),
                   int(pick(mem_bytes, p.mem_bytes)), float(pick(link_bw_bytes_s, p.link_bw_bytes_s)),
                   float(pick(host_bw_bytes_s, p.host_bw_bytes_s)))


LLAMA31_8B = ModelSpec("Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128256)
LLAMA3_70B = ModelSpec("Llama-3-70B", 80, 8192, 64, 8, 28672, 128256)
TINY = ModelSpec("tiny", 2, 64, 4, 4, 256, 1000)
QWEN3_32B = ModelSpec("Qwen3-32B", 64, 5120, 64, 8, 25600, 151936, head_size=128)
QWEN3_30B_A3B = ModelSpec("Qwen3-30B-A3B", 48, 2048, 32, 4, 6144, 151936, head_size=128,
                          experts=128, active_experts=8, expert_intermediate=768)

A100_80GB = gpu_spec("A100")
H100 = gpu_spec("H100")
H200 = gpu_spec("H200")
RTX4090 = gpu_spec("RTX4090")
L40S = gpu_spec("L40S")
RTX_PRO_6000 = gpu_spec("RTXPRO6000")
