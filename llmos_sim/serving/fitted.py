"""A serving cost model fitted to measured iterations (torch-free: a simulated run that uses
it does not import torch; the torch backend's sim-vs-real comparison fits it)."""
from __future__ import annotations

import numpy as np

from llmos_sim.serving.cost import BatchShape, CostModel
from llmos_sim.serving.specs import ModelSpec


class FittedCost(CostModel):
    """Iteration time ``a + b·n_seqs + c·n_prefill + d·n_decode + e·prefill_attn_pairs +
    f·decode_ctx`` seconds, fitted by non-negative least squares to measured iterations.

    Prefill attention (a causal mask over the chunk) and decode attention (one query reading
    the whole cached context) are different kernels, so each has its own coefficient."""

    FEATURES = ("base_s", "per_seq_s", "per_prefill_token_s", "per_decode_token_s", "per_prefill_attn_pair_s",
                "per_decode_ctx_token_s")

    def __init__(self, coef: np.ndarray | list[float], model: ModelSpec | None = None, gpu=None, tp: int = 1) -> None:
        self.coef = np.asarray(coef, dtype=float)
        if self.coef.shape != (len(self.FEATURES),):
            raise ValueError(f"FittedCost: coef needs {len(self.FEATURES)} values {self.FEATURES}, got {list(coef)}")

    @staticmethod
    def features(b: BatchShape) -> np.ndarray:
        """The regressors of one iteration, in :attr:`FEATURES` order."""
        return np.array([1.0, b.n_seqs, b.n_prefill_tokens, b.n_decode_tokens, b.prefill_attn_pairs,
                         b.decode_ctx_tokens])

    def iteration_s(self, b: BatchShape) -> float:
        return float(self.features(b) @ self.coef)

    @classmethod
    def fit(cls, shapes: list[BatchShape], times_s: list[float]) -> "FittedCost":
        X = np.stack([cls.features(b) for b in shapes])
        y = np.asarray(times_s, dtype=float)
        coef = _nnls(X, y)
        return cls(coef)


def _nnls(X: np.ndarray, y: np.ndarray, iters: int = 50) -> np.ndarray:
    """Least squares with the coefficients clipped to >= 0 (active set by repeated refits),
    weighting each row by 1/y so that small iterations count as much as large ones."""
    w = 1.0 / np.maximum(y, 1e-9)
    Xw, yw = X * w[:, None], y * w
    active = np.ones(X.shape[1], dtype=bool)
    coef = np.zeros(X.shape[1])
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(Xw[:, active], yw, rcond=None)
        coef[:] = 0.0
        coef[active] = c
        if (c >= 0).all():
            break
        active[np.flatnonzero(active)[c < 0]] = False
    return coef
