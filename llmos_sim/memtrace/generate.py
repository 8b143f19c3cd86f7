"""Synthetic allocation patterns in the trace format, seeded and deterministic.

- :func:`transformer_training_trace`: a decoder-only transformer trained with Adam, the
  way PyTorch's allocator sees it: weights first; per step a forward pass that saves
  activations layer by layer (sequence length varies per step, as with unpadded
  variable-length batches), temporaries that die at once, a backward pass that frees the
  saved activations in reverse and allocates gradients, and an optimizer step (Adam state
  allocated lazily at the first step, as ``torch.optim.Adam`` does; grads freed after it,
  as ``zero_grad(set_to_none=True)`` does).
- :func:`kv_cache_trace`: serving requests whose KV cache is allocated on admission and
  freed on completion (Poisson arrivals, varied prompt/output lengths).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llmos_sim.memtrace.trace import validate_trace


class _TraceBuilder:
    """Collects rows; hands out fresh ids; time advances explicitly."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, int, int]] = []
        self.t_s = 0.0
        self._next = 0

    def alloc(self, nbytes: int) -> int:
        i = self._next
        self._next += 1
        self.rows.append((self.t_s, "alloc", i, int(nbytes)))
        return i

    def free(self, i: int, nbytes: int = 0) -> None:
        self.rows.append((self.t_s, "free", i, int(nbytes)))

    def frame(self) -> pd.DataFrame:
        return validate_trace(pd.DataFrame(self.rows, columns=["time_s", "op", "id", "nbytes"]))


def transformer_training_trace(
    layers: int = 4,
    hidden: int = 1024,
    seq: int = 512,
    batch: int = 4,
    dtype_bytes: int = 2,
    steps: int = 3,
    seed: int | np.random.Generator = 0,
    vocab: int = 32000,
    heads: int | None = None,
    min_seq_frac: float = 0.5,
    device_flops: float = 1e14,
) -> pd.DataFrame:
    """Allocation trace of ``steps`` training steps of a ``layers``-layer transformer.

    Sizes in bytes: weights per layer ``12 h^2`` params (QKV ``3h^2``, out ``h^2``, MLP
    ``8h^2``) plus two LayerNorms; embedding ``vocab*h``; Adam keeps two fp32 moments per
    parameter. Per layer the forward pass saves the block input, QKV, attention
    probabilities (``b*heads*s*s``), the attention output, MLP input and MLP hidden
    (``4*b*s*h``) and frees a softmax temporary right away. Each step draws its sequence
    length uniformly from ``[min_seq_frac*seq, seq]``, so activation sizes differ between
    steps. Time advances by the step's FLOPs / ``device_flops`` (6 FLOPs per parameter per
    token, split 1/3 forward, 2/3 backward) so the trace has a realistic shape in time.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    heads = heads or max(1, hidden // 64)
    h, d = hidden, dtype_bytes
    tb = _TraceBuilder()
    layer_params = [("qkv", 3 * h * h), ("out", h * h), ("ln1", 2 * h), ("up", 4 * h * h), ("down", 4 * h * h), ("ln2", 2 * h)]
    params: list[int] = [vocab * h]  # embedding (tied with the output head)
    for _ in range(layers):
        params += [n for _, n in layer_params]
    params.append(2 * h)  # final norm
    n_params = sum(params)
    for n in params:  # weights: allocated once, live for the whole trace
        tb.alloc(n * d)
    adam_ids: list[int] = []
    for _step in range(steps):
        s = int(rng.integers(max(1, int(min_seq_frac * seq)), seq + 1))
        tokens = batch * s
        dt_layer_fwd = 2 * n_params * tokens / max(layers, 1) / device_flops
        tb.t_s += 1e-4
        x = tb.alloc(tokens * h * d)  # embedding output
        saved: list[list[tuple[int, int]]] = []
        for _layer in range(layers):
            acts = []
            for n in (tokens * h, 3 * tokens * h, batch * heads * s * s, tokens * h, tokens * h, 4 * tokens * h):
                acts.append((tb.alloc(n * d), n * d))
            tmp = tb.alloc(batch * heads * s * s * 4)  # fp32 softmax temporary
            tb.free(tmp)
            saved.append(acts)
            tb.t_s += dt_layer_fwd
        logits = tb.alloc(tokens * vocab * 4)  # fp32 logits for the loss
        loss_grad = tb.alloc(tokens * vocab * 4)
        tb.free(logits)
        grads: list[int] = []
        grad_out = tb.alloc(tokens * h * d)
        tb.free(loss_grad)
        for layer in reversed(range(layers)):
            for _name, n in reversed(layer_params):
                grads.append(tb.alloc(n * d))
            g_in = tb.alloc(tokens * h * d)
            tmp = tb.alloc(4 * tokens * h * d)  # grad of the MLP hidden, dies at once
            tb.free(tmp)
            for i, n in reversed(saved[layer]):
                tb.free(i, n)
            tb.free(grad_out)
            grad_out = g_in
            tb.t_s += 2 * dt_layer_fwd
        grads.append(tb.alloc(params[0] * d))  # embedding grad
        grads.append(tb.alloc(params[-1] * d))
        tb.free(grad_out)
        tb.free(x)
        if not adam_ids:  # Adam state appears lazily at the first optimizer step
            for n in params:
                adam_ids += [tb.alloc(n * 4), tb.alloc(n * 4)]
        tb.t_s += 1e-3
        for g in grads:  # zero_grad(set_to_none=True)
            tb.free(g)
    return tb.frame()


def kv_cache_trace(
    n_requests: int = 400,
    arrival_rate_per_s: float = 20.0,
    mean_prompt_tokens: int = 512,
    mean_output_tokens: int = 256,
    max_len_tokens: int = 2048,
    kv_bytes_per_token: int = 16384,
    time_per_output_token_s: float = 0.03,
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """KV-cache-like trace: each request allocates ``(prompt+output) * kv_bytes_per_token``
    on arrival and frees it when its last token is out.

    Arrivals are Poisson (``arrival_rate_per_s``); prompt and output lengths are geometric
    with the given means, clipped so that prompt + output <= ``max_len_tokens``; a request
    lives ``output * time_per_output_token_s`` seconds.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / arrival_rate_per_s, n_requests))
    prompt = np.minimum(rng.geometric(1.0 / mean_prompt_tokens, n_requests), max_len_tokens - 1)
    out = np.minimum(rng.geometric(1.0 / mean_output_tokens, n_requests), max_len_tokens - prompt)
    ends = arrivals + out * time_per_output_token_s
    nbytes = (prompt + out) * kv_bytes_per_token
    ids = np.arange(n_requests)
    events = pd.DataFrame({
        "time_s": np.concatenate([arrivals, ends]),
        "op": ["alloc"] * n_requests + ["free"] * n_requests,
        "id": np.concatenate([ids, ids]),
        "nbytes": np.concatenate([nbytes, nbytes]),
        "_order": np.concatenate([np.ones(n_requests), np.zeros(n_requests)]),  # frees first on ties
    })
    events = events.sort_values(["time_s", "_order", "id"], kind="stable").drop(columns="_order")
    return validate_trace(events)
