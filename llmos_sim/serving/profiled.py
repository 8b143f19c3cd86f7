"""A cost model built from operator times measured on a real GPU (``cost=profiled``).

A *profile* is a folder of per-operator times measured with vLLM 0.19 on one GPU for one
model (one transformer layer of the real shapes; ``meta.yaml`` says how), one subfolder per
tensor-parallel degree (``tp1/``, ``tp2/``, ... each rank's own times at that degree):

- ``dense.csv`` (``layer, tokens, time_us``): every non-attention layer of one transformer
  layer by the number of tokens in the batch (``qkv_proj``, ``qk_norm``, ``rotary_emb``,
  ``o_proj``, ``layernorm``, ``gate_up_proj``, ``act_fn``, ``down_proj``) and the two layers
  that run once per iteration (``embedding``, ``final_layernorm``);
- ``attention.csv`` (``prefill_chunk, kv_prefill, n_decode, kv_decode, time_us``): one
  attention layer for a batch of one prefill chunk (``prefill_chunk`` new tokens after
  ``kv_prefill`` cached ones) plus ``n_decode`` decode rows of ``kv_decode`` tokens each;
- ``per_sequence.csv`` (``layer, sequences, time_us``): the LM head and the sampler by the
  number of sequences in the batch;
- ``moe.csv`` (``tokens, activated_experts, time_us``; MoE models): one MoE block (router and
  fused experts) by tokens and the number of distinct experts they activate.

Shipped profiles (``llmos_sim/serving/profiles/``, from LLMServingSim, MIT): RTX 4090 ×
Llama-3.1-8B (TP1); RTX PRO 6000 Blackwell × Llama-3.1-8B, Qwen3-32B, Qwen3-30B-A3B-Instruct-2507
(TP1 and TP2). ``profile`` is a folder path or one of these names (``RTXPRO6000/Qwen3-32B``),
or ``auto``: the shipped profile for the GPU and model presets in use.

Iteration time (µs, then seconds), for a batch of ``T`` tokens (``Q`` prefill tokens in
chunks, ``N`` decode rows), ``S`` sequences, ``L`` layers, on each of ``tp`` ranks::

    t = L · dense_layer(T') + dense_once(T')           # dense.csv, summed per layer
      + L · attention(Q, K, N, kv)                     # attention.csv, one lookup
      + L · moe(T')                                    # MoE models: moe.csv (below)
      + lm_head(S) + sampler(S)                        # per_sequence.csv
      + L · 2 · allreduce(T')                          # tp > 1 (below)
      + L · 2 · ep_collective(T)                       # dp > 1 with expert parallelism
      + swap bytes / host link + overhead_s            # overhead_s = 0 by default

``T' = T`` unless the engine runs with CUDA graphs (``cuda_graph_sizes``, below).

Assumptions (none of them fitted to end-to-end runs: the profile is the only input measured):

- **Layer composition.** Each transformer layer runs every dense layer once per layer, except
  ``layernorm`` twice (before attention and before the MLP); ``embedding`` and
  ``final_layernorm`` run once per iteration. These are vLLM's Llama / Qwen3 / Qwen3-MoE
  decoder layers. The profiled times are taken as they are: no launch overhead is added or
  removed (the profiles were measured eagerly; the real runs use CUDA graphs).
- **CUDA graphs** (``cuda_graph_sizes``: the engine's capture sizes, when it runs with
  graphs): vLLM runs a batch of ``T`` tokens, ``T`` up to the largest captured size, as the
  graph of the next captured size ``T' >= T``, its input padded (``pad_for_cudagraph``):
  every token-wise layer (dense, MoE, all-reduce) computes ``T'`` rows. The LM head and the
  sampler see the real sequences (logits are taken at the sequences' last tokens only), and
  attention the real rows (the padded rows have no KV). Larger batches run unpadded. Off
  (``None``) by default; the fidelity command sets it from the run's ``meta.json``.
- **Interpolation.** Every table is piecewise linear in each of its axes, one axis after the
  other (multilinear; on the attention table: in ``prefill_chunk``, then ``n_decode``, then
  ``kv_prefill``, then ``kv_decode``, each bracketed among the values measured for the
  slice at hand, since the grid is not rectangular). At a grid point the measured value is
  returned exactly. Below an axis' smallest measured value the value is clamped (a 5-token
  chunk costs what a 16-token one does: launch-bound); above its largest it is extrapolated
  linearly from the last two points (e.g. 256 decode rows next to a prefill chunk, where
  the grid stops at 128). ``prefill_chunk = 0`` and ``n_decode = 0`` are their own slices,
  not interpolation points (no prefill / no decode is a different kernel mix).
- **Several prefill chunks in one batch** (the profile has one): looked up as the single
  chunk with the same attention work. A batch's chunks attend ``P = Σ x·(c + (x+1)/2)``
  (query, key) pairs (``x`` new tokens after ``c`` cached). With ``Q = Σ x`` the single
  chunk of ``Q`` tokens after ``K = P/Q − (Q+1)/2`` cached ones has exactly ``P`` pairs; for
  one chunk that is the chunk itself. When ``K`` would be negative (several fresh prompts
  attend fewer pairs than one prompt of all their tokens), the chunk is ``Q' < Q`` fresh
  tokens with ``Q'(Q'+1)/2 = P``.
- **Decode rows of unequal length** (the attention grid has one length per batch): looked up
  at the mean length (the same KV bytes read), then corrected by the profile's own
  measurements of unequal rows wherever its ``tp<N>/`` folder holds their fit
  (``skew_fit.csv``; every shipped profile): ``t = t(mean) + alpha · (t(longest) − t(mean))``
  when ``t(longest) > t(mean)``, ``alpha`` from ``tp<N>/skew_fit.csv`` by bucket of (prefill
  chunk — the table's nearest —, decode rows, skew rate ``(mean − shortest) / (longest −
  shortest)``, longest row, cached prefill KV; bins from ``meta.yaml``), else its pooled
  ``alpha_default``. That table is the profile authors' per-bucket fit of their kernel
  measurements (``skew.csv``: it is exactly each bucket's least-squares ``alpha`` of
  ``t_skew − t_mean = alpha · (t_max − t_mean)``), not of end-to-end runs. A ``meta.yaml``
  without a ``skew_fit`` section (the RTX 4090 profile's says ``enabled: false``, yet its
  folder holds ``skew.csv`` — its ``t_mean`` is 3.0× the same profile's attention table at
  the same points, as on the RTX PRO 6000, not the other GPU's 4.7× — and that file's
  per-bucket fit) gets the profiler's standard bins (:data:`SKEW_AXES`) and the pooled
  least-squares ``alpha`` of ``skew.csv`` (:func:`pooled_alpha`, the rule that reproduces
  every stated ``alpha_default``). The replica passes the longest and the shortest decode
  row to this model (``wants_decode_spread``). Checked against the measurements themselves
  (``experiments/gpu_fidelity/profile_check.py``): at each of the RTX 4090's 13,009 measured
  batches (``n`` rows, ``nb`` of them long, the rest short) the corrected time over the time
  at the mean length reproduces the measured ratio with a bias within ±0.8 % at every row
  count. What is not measured: row counts between the profiler's 2, 4, …, 256 (each ``n``
  bucket's ``alpha`` is measured at its top count only and stands for the whole bucket), and
  rows of more than two lengths (a running batch's; its skew rate stands in for ``nb / n``).
- **Per-sequence costs** count every sequence in the batch (vLLM computes logits for each
  scheduled request, partial prefills included).
- **MoE** (``moe.csv``): ``T`` tokens routed top-``k`` among ``E`` experts activate
  ``E·(1 − (1 − k/E)^T)`` distinct experts on average (independent uniform routing); the
  block's time is looked up at (``T``, that many). The MoE table is measured at TP1 only; at
  ``tp`` > 1 without expert parallelism every rank holds ``1/tp`` of each expert and its
  time is the TP1 time ``/ tp``.
- **Tensor parallelism**: dense, attention and per-sequence times come from the profile's
  ``tp<N>/`` folder (measured on one rank at that degree; an unprofiled degree is an error).
  Communication: two all-reduces per layer (after ``o_proj`` and after the MLP / MoE block)
  of ``T · hidden · dtype`` bytes, each a ring: ``allreduce_latency_s + 2(tp−1)/tp · bytes /
  link bandwidth`` (the GPU preset's peer link; the profiles hold no communication times).
- **Data parallelism with expert parallelism** (``dp`` > 1, ``expert_parallel``): the ``dp``
  replicas of one deployment form one expert-parallel group of ``G = dp · tp`` ranks, each
  holding ``E/G`` whole experts. vLLM runs the ranks of such a group in lockstep: at every
  MoE layer each rank gathers every rank's tokens (all-gather), runs its own experts on the
  (token, expert) pairs routed to them, and sends the results back (reduce-scatter); the
  slowest rank sets the pace. Modelled per replica as if every DP rank carried a batch like
  its own (the ranks are symmetric: ``T_all = dp · T``; a DP rank's real batch is not seen
  by the others): a rank's pairs are binomial with mean ``μ = T_all·k/G`` and variance
  ``T_all·k·(1/G)(1 − 1/G)``, the slowest of ``G`` has ``μ + c_G·σ`` (``c_G``: the mean of
  the largest of ``G`` standard normals; ``c_2 = 1/√π``), and the layer costs
  ``moe((μ + c_G·σ)/k tokens, E/G · (1 − (1 − k/E)^T_all) experts)`` plus the all-gather and
  the reduce-scatter, each ``allreduce_latency_s + (dp−1)/dp · T_all · hidden · dtype / link``.
- Nothing is added for CPU work (scheduling, detokenisation): vLLM's async scheduling
  overlaps it with the GPU. ``overhead_s`` (default 0) adds a fixed time per iteration when a
  user wants one; it is not fitted here.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmos_sim.serving.cost import BatchShape, CostModel, span_of_line
from llmos_sim.serving.specs import GpuSpec, ModelSpec

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"

#: GPU preset names (``GpuSpec.name``) → the profile folder of that hardware
GPU_FOLDERS = {"RTX-4090": "RTX4090", "RTX-PRO-6000": "RTXPRO6000"}
#: dense layers that run once per iteration, and how often the others run per layer
ONCE_PER_ITERATION = ("embedding", "final_layernorm")
PER_LAYER_REPEAT = {"layernorm": 2}


class ProfileError(ValueError):
    """A profile folder or file that cannot be used (the message names it)."""


# -- profile folders --------------------------------------------------------------------
def available_profiles(root: Path = PROFILES_DIR) -> list[str]:
    """Names of the shipped profiles (``<hardware>/<model>``)."""
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/meta.yaml"))


def resolve_profile(profile: str | Path) -> Path:
    """A profile folder from a path or a shipped profile's name."""
    p = Path(profile).expanduser()
    if (p / "meta.yaml").is_file():
        return p
    q = PROFILES_DIR / str(profile)
    if (q / "meta.yaml").is_file():
        return q
    raise ProfileError(f"profile {str(profile)!r}: no meta.yaml there or among the shipped profiles "
                       f"({', '.join(available_profiles())})")


def find_profile(gpu_name: str, model_name: str) -> str | None:
    """The shipped profile for a GPU preset name and a model name (a shipped profile whose
    model starts with the name's last path part, e.g. ``Qwen3-30B-A3B`` → the Instruct-2507
    profile), or None."""
    hw = GPU_FOLDERS.get(gpu_name, gpu_name.replace("-", "").upper())
    model = model_name.rsplit("/", 1)[-1]
    names = [n for n in available_profiles() if n.split("/")[0] == hw]
    for n in names:
        if n.split("/")[1] == model:
            return n
    for n in sorted(names):
        if n.split("/")[1].startswith(model) or model.startswith(n.split("/")[1]):
            return n
    return None


def load_meta(folder: Path) -> dict:
    import yaml

    path = folder / "meta.yaml"
    try:
        with open(path, encoding="utf-8") as f:
            meta = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when built with it
    except (OSError, yaml.YAMLError) as e:
        raise ProfileError(f"{path}: cannot read: {e}") from e
    if not isinstance(meta, dict):
        raise ProfileError(f"{path}: expected a mapping")
    return meta


#: tables built from profile files, by what was read (file path, modification time, size) and
#: how: a run that builds the same cost model again (a sweep, a benchmark's repeats, the
#: fidelity command's variants) parses and indexes each file once. The values are never
#: mutated after they are built.
_BUILT: dict[tuple, object] = {}


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _built(key: tuple, build):
    """``build()``, kept under ``key`` (bounded: cleared when it grows past 256 entries)."""
    v = _BUILT.get(key)
    if v is None:
        if len(_BUILT) >= 256:
            _BUILT.clear()
        v = _BUILT[key] = build()
    return v


def _derived(src: pd.DataFrame, tag: tuple, build):
    """``build()`` from the table ``src`` (one that :func:`_read` returned), kept beside it
    (the entry holds ``src``, so its id is not reused while the entry exists)."""
    key = ("derived", id(src), tag)
    v = _BUILT.get(key)
    if v is None or v[0] is not src:
        if len(_BUILT) >= 256:
            _BUILT.clear()
        v = _BUILT[key] = (src, build())
    return v[1]


def _read(folder: Path, name: str, cols: Sequence[str], required: bool = True,
          text: Sequence[str] = ("layer",), signed: Sequence[str] = ()) -> pd.DataFrame | None:
    """``name``.csv or ``name``.csv.gz in ``folder``, checked: the columns, numbers (>= 0
    unless ``signed``) except the ``text`` columns (read once per file version: not to be
    modified)."""
    for path in (folder / f"{name}.csv", folder / f"{name}.csv.gz"):
        if path.is_file():
            break
    else:
        if required:
            raise ProfileError(f"{folder}: no {name}.csv (or .csv.gz)")
        return None
    return _built(("csv", _stamp(path), tuple(cols), tuple(text), tuple(signed)),
                  lambda: _parse(path, cols, text, signed))


def _parse(path: Path, cols: Sequence[str], text: Sequence[str], signed: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any parse error, named with the file
        raise ProfileError(f"{path}: cannot parse: {e}") from e
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ProfileError(f"{path}: missing column(s) {missing}; has {list(df.columns)}")
    for c in cols:
        if c in text:
            continue
        v = pd.to_numeric(df[c], errors="coerce")
        x = v.to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(x) | ((x < 0) & (c not in signed)))
        if len(bad):
            what = "a number" if c in signed else "a number >= 0"
            raise ProfileError(f"{path}:{bad[0] + 2}: column {c!r} must be {what}, got {df[c].iloc[bad[0]]!r}")
        df[c] = v
    return df


# -- piecewise-linear interpolation -------------------------------------------------------
def bracket(xs: Sequence[float], x: float) -> tuple[tuple[int, float], ...]:
    """Indices and weights that interpolate at ``x`` on the sorted grid ``xs``: clamped below
    the first point, linear between two, linearly extrapolated from the last two above."""
    n = len(xs)
    if n == 1 or x <= xs[0]:
        return ((0, 1.0),)
    i = bisect_right(xs, x)
    if i < n and xs[i - 1] == x:
        return ((i - 1, 1.0),)
    if i >= n:
        if x == xs[-1]:
            return ((n - 1, 1.0),)
        i = n - 1
    t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ((i - 1, 1.0 - t), (i, t))


def interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear ``ys`` over ``xs`` at ``x`` (see :func:`bracket`; the same, inlined)."""
    n = len(xs)
    if n == 1 or x <= xs[0]:
        return ys[0]
    i = bisect_right(xs, x)
    if i >= n:
        if x == xs[-1]:
            return ys[-1]
        i = n - 1
    elif xs[i - 1] == x:
        return ys[i - 1]
    x0, y0 = xs[i - 1], ys[i - 1]
    return y0 + (x - x0) / (xs[i] - x0) * (ys[i] - y0)


def interp_vec(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """:func:`interp` for an array of ``x``."""
    y = np.interp(x, xs, ys)
    if len(xs) > 1:
        hi = x > xs[-1]
        if hi.any():
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            y[hi] = ys[-1] + slope * (x[hi] - xs[-1])
    return y


class Table1D:
    """A 1-D table, with every integer point from 0 to the largest measured one precomputed
    (O(1) lookups); beyond it, linear extrapolation. Zero at 0 (nothing to run)."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        order = np.argsort(xs)
        self.xs, self.ys = np.asarray(xs, float)[order], np.asarray(ys, float)[order]
        top = int(self.xs[-1])
        grid = np.arange(top + 1, dtype=float)
        self.values = interp_vec(self.xs, self.ys, grid).tolist()
        self.values[0] = 0.0
        self.top = top
        self.slope = (self.ys[-1] - self.ys[-2]) / (self.xs[-1] - self.xs[-2]) if len(self.xs) > 1 else 0.0

    def __call__(self, x: int) -> float:
        if x <= self.top:
            return self.values[x] if x > 0 else 0.0
        return self.ys[-1] + self.slope * (x - self.xs[-1])


def _layer_sum(df: pd.DataFrame, key: str, names: Sequence[str], weight) -> tuple[np.ndarray, np.ndarray]:
    """Σ weight(name) · time(name) over ``names`` on the union of their key grids."""
    xs = np.unique(df.loc[df["layer"].isin(names), key].to_numpy(dtype=float))
    total = np.zeros(len(xs))
    for name in names:
        d = df[df["layer"] == name].sort_values(key)
        total += weight(name) * interp_vec(d[key].to_numpy(float), d["time_us"].to_numpy(float), xs)
    return xs, total


class AttentionTable:
    """``attention.csv`` as nested sorted grids: prefill chunk → decode rows → cached prefill
    KV → decode KV (see the module docstring for the interpolation)."""

    def __init__(self, df: pd.DataFrame, path: str = "attention.csv") -> None:
        grid: dict = {}
        for pc, kp, nd, kd, t in zip(*(df[c].tolist() for c in ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode",
                                                                "time_us"))):
            row = grid.setdefault(int(pc), {}).setdefault(int(nd), {}).setdefault(int(kp), {})
            row[int(kd)] = float(t)  # a repeated measurement: the last one wins
        if not grid:
            raise ProfileError(f"{path}: no rows")
        # pc -> (sorted positive nd, {nd: (sorted kp, [(kd list, t list)])}); nd = 0 kept apart
        self.grid = {}
        for pc, by_nd in grid.items():
            slices = {}
            for nd, by_kp in by_nd.items():
                kps = sorted(by_kp)
                rows = []
                for kp in kps:
                    r = by_kp[kp]
                    kds = sorted(k for k in r if nd == 0 or k > 0) or sorted(r)
                    rows.append((kds, [r[k] for k in kds]))
                slices[nd] = (kps, rows)
            self.grid[pc] = (sorted(nd for nd in slices if nd > 0), slices)
        self.pcs = sorted(pc for pc in self.grid if pc > 0)
        self._decode_rows: dict[int, list] = {}  # n -> [(weight, kds, ts)] of a pure-decode batch
        if 0 not in self.grid or not self.grid[0][0]:
            raise ProfileError(f"{path}: no pure-decode rows (prefill_chunk 0, n_decode > 0)")
        if not self.pcs:
            raise ProfileError(f"{path}: no prefill rows (prefill_chunk > 0)")

    def _slice(self, pc: int, nd_w, kp: float, kd: float) -> float:
        nds, slices = self.grid[pc]
        v = 0.0
        for nd, w in nd_w:
            kps, rows = slices[nd]
            for j, wk in bracket(kps, kp):
                kds, ts = rows[j]
                v += w * wk * interp(kds, ts, kd)
        return v

    def __call__(self, q: float, kp: float, n: int, kd: float) -> float:
        """µs of one attention layer: a prefill chunk of ``q`` tokens after ``kp`` cached ones
        and ``n`` decode rows of ``kd`` tokens each."""
        if q <= 0:
            if n <= 0:
                return 0.0
            nds = self.grid[0][0]
            return self._slice(0, [(nds[i], w) for i, w in bracket(nds, n)], 0.0, kd)
        v = 0.0
        for i, w in bracket(self.pcs, q):
            pc = self.pcs[i]
            nds, slices = self.grid[pc]
            if n <= 0:
                if 0 not in slices:
                    raise ProfileError(f"attention profile: no prefill-only rows for prefill_chunk {pc}")
                nd_w = [(0, 1.0)]
                v += w * self._slice(pc, nd_w, kp, 0.0)
            else:
                if not nds:
                    raise ProfileError(f"attention profile: no mixed rows for prefill_chunk {pc}")
                v += w * self._slice(pc, [(nds[j], wn) for j, wn in bracket(nds, n)], kp, kd)
        return v

    def decode(self, n: int, kd: float) -> float:
        """``self(0, 0, n, kd)`` for ``n`` > 0 rows (pure decode), the same sum with the rows'
        brackets kept per ``n``: the cached prefill KV is 0, the first of its slice's values
        (weight 1.0, so the weights are the decode rows' own)."""
        parts = self._decode_rows.get(n)
        if parts is None:
            nds, slices = self.grid[0]
            parts = self._decode_rows[n] = [(w, *slices[nds[i]][1][0]) for i, w in bracket(nds, n)]
        v = 0.0
        for w, kds, ts in parts:
            v += w * interp(kds, ts, kd)
        return v

    def decode_vec(self, n: int, kd: np.ndarray) -> np.ndarray:
        """Pure decode (no prefill) of ``n`` rows at each length in ``kd``."""
        nds, slices = self.grid[0]
        out = np.zeros(len(kd))
        for i, w in bracket(nds, n):
            kps, rows = slices[nds[i]]
            kds, ts = rows[0]  # pure decode: kv_prefill 0 only
            out += w * interp_vec(np.asarray(kds, float), np.asarray(ts, float), kd)
        return out


class MoETable:
    """``moe.csv``: rows by tokens, each sorted by activated experts; multilinear (tokens,
    then experts within each row)."""

    def __init__(self, df: pd.DataFrame, path: str = "moe.csv") -> None:
        rows: dict[int, dict[int, float]] = {}
        for tok, e, t in df[["tokens", "activated_experts", "time_us"]].itertuples(index=False, name=None):
            rows.setdefault(int(tok), {})[int(e)] = float(t)
        if not rows:
            raise ProfileError(f"{path}: no rows")
        self.tokens = sorted(rows)
        self.rows = [(sorted(rows[t]), [rows[t][e] for e in sorted(rows[t])]) for t in self.tokens]

    def __call__(self, tokens: float, experts: float) -> float:
        v = 0.0
        for i, w in bracket(self.tokens, tokens):
            es, ts = self.rows[i]
            v += w * interp(es, ts, experts)
        return v


class SkewTable:
    """The profile's correction for decode rows of unequal length (``tp<N>/skew_fit.csv`` and
    ``meta.yaml``'s ``skew_fit``): ``t = t(mean) + alpha · (t(longest) − t(mean))``, ``alpha``
    by bucket of (prefill chunk, decode rows, skew rate = (mean − shortest) / (longest −
    shortest), longest, cached prefill KV), else the pooled ``alpha_default``."""

    AXES = (("n_bins", "n_labels"), ("skew_rate_bins", "skew_rate_labels"), ("kv_big_bins", "kv_big_labels"),
            ("kp_bins", "kp_labels"))

    def __init__(self, df: pd.DataFrame, axes: dict, alpha_default: float, path: str = "skew_fit.csv") -> None:
        try:
            self.bins = [([float(x) for x in axes[b]], list(axes[lab])) for b, lab in self.AXES]
        except (KeyError, TypeError) as e:
            raise ProfileError(f"meta.yaml skew_fit.bucket_axes: missing {e}") from e
        for bins, labels in self.bins:
            if len(bins) != len(labels) + 1:
                raise ProfileError(f"meta.yaml skew_fit.bucket_axes: {len(bins)} bin edges for {len(labels)} labels")
        self.alpha_default = float(alpha_default)
        cols = ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha")
        self.alpha = {(int(pc), n, sr, kv, kp): float(a) for pc, n, sr, kv, kp, a in zip(*(df[c].tolist() for c in cols))}
        self.pcs = sorted({k[0] for k in self.alpha if k[0] > 0})
        self._grid: np.ndarray | None = None
        self._rows: dict[int, list] = {}  # decode_row's lists by row-count bucket
        # the same table keyed by label positions, for the hot path
        pos = [{lab: i for i, lab in enumerate(labels)} for _, labels in self.bins]
        self._by_index = {}
        for (pc, *labs), a in self.alpha.items():
            if all(lab in p_ for lab, p_ in zip(labs, pos)):
                self._by_index[(pc, *(p_[lab] for lab, p_ in zip(labs, pos)))] = a

    @staticmethod
    def _index(bins: list, v: float) -> int:
        """Bucket ``(bins[i], bins[i+1]]`` → ``i`` (clamped to the first and the last bucket)."""
        i = bisect_left(bins, v) - 1
        return min(max(i, 0), len(bins) - 2)

    def __call__(self, pc: float, n: int, skew_rate: float, longest: float, kp: float) -> float:
        """``alpha`` of a batch; ``pc`` is taken at the nearest prefill chunk of the table."""
        pck = 0 if pc <= 0 or not self.pcs else min(self.pcs, key=lambda x: abs(x - pc))
        (nb, _), (sb, _), (kb, _), (pb, _) = self.bins
        ix = self._index
        return self._by_index.get((pck, ix(nb, n), ix(sb, min(max(skew_rate, 0.0), 1.0)), ix(kb, longest), ix(pb, kp)),
                                  self.alpha_default)

    def _decode_grid(self) -> np.ndarray:
        """``alpha`` of pure-decode batches (no prefill, no cached prefill KV) by (rows,
        skew-rate, longest-row) bucket positions: a dense array for vectorised lookups."""
        if self._grid is None:
            dims = [len(b) - 1 for b, _ in self.bins[:3]]
            g = np.full(dims, self.alpha_default)
            i_p = self._index(self.bins[3][0], 0)
            for (pc, i_n, i_s, i_k, ip), a in self._by_index.items():
                if pc == 0 and ip == i_p:
                    g[i_n, i_s, i_k] = a
            self._grid = g
        return self._grid

    def decode_alpha(self, n: int, skew_rate: float, longest: float) -> float:
        """``alpha`` of a pure-decode batch of ``n`` rows."""
        (nb, _), (sb, _), (kb, _) = self.bins[:3]
        i = bisect_left(nb, n) - 1
        j = bisect_left(sb, skew_rate if skew_rate < 1.0 else 1.0) - 1
        k = bisect_left(kb, longest) - 1
        return float(self._decode_grid()[min(max(i, 0), len(nb) - 2), min(max(j, 0), len(sb) - 2),
                                          min(max(k, 0), len(kb) - 2)])

    def decode_row(self, n: int) -> list:
        """The ``alpha`` of pure-decode batches of ``n`` rows by (skew-rate, longest-row) bucket
        position, as nested lists (for :meth:`row_alpha`; kept per row-count bucket)."""
        i = self._index(self.bins[0][0], n)
        row = self._rows.get(i)
        if row is None:
            row = self._rows[i] = self._decode_grid()[i].tolist()
        return row

    def row_bucket(self, skew_rate: float, longest: float) -> tuple[int, int]:
        """The (skew-rate, longest-row) bucket position of a pure-decode batch, as
        :meth:`decode_vec` finds it (an index pair into :meth:`decode_row`'s lists)."""
        sb, kb = self.bins[1][0], self.bins[2][0]
        j = bisect_left(sb, min(max(skew_rate, 0.0), 1.0)) - 1
        k = bisect_left(kb, longest) - 1
        return min(max(j, 0), len(sb) - 2), min(max(k, 0), len(kb) - 2)

    def row_alpha(self, row: list, skew_rate: float, longest: float) -> float:
        """:meth:`decode_alpha` from :meth:`decode_row`'s ``row`` of the batch's row count."""
        sb, kb = self.bins[1][0], self.bins[2][0]
        j = bisect_left(sb, skew_rate if skew_rate < 1.0 else 1.0) - 1
        k = bisect_left(kb, longest) - 1
        r = row[j if j < len(sb) - 2 else len(sb) - 2] if j > 0 else row[0]
        return r[k if k < len(kb) - 2 else len(kb) - 2] if k > 0 else r[0]

    def decode_vec(self, n: int, skew_rate: np.ndarray, longest: np.ndarray) -> np.ndarray:
        """``alpha`` of pure-decode batches of ``n`` rows (no prefill), vectorised."""
        (nb, _), (sb, _), (kb, _) = self.bins[:3]
        mx, mn = np.maximum, np.minimum  # (np.clip's dispatch costs more than the work here)
        i_s = mn(mx(np.searchsorted(sb, mn(mx(skew_rate, 0.0), 1.0), side="left") - 1, 0), len(sb) - 2)
        i_k = mn(mx(np.searchsorted(kb, longest, side="left") - 1, 0), len(kb) - 2)
        return self._decode_grid()[self._index(nb, n), i_s, i_k]


#: the profiler's bucket axes of ``skew_fit.csv`` (as every profile whose ``meta.yaml`` has a
#: ``skew_fit`` section states them), for a profile whose ``meta.yaml`` does not
SKEW_AXES = {
    "n_bins": [0, 2, 4, 8, 16, 32, 64, 128, 256, 1000000],
    "n_labels": ["n<=2", "n<=4", "n<=8", "n<=16", "n<=32", "n<=64", "n<=128", "n<=256", "n>256"],
    "skew_rate_bins": [-0.01, 0.05, 0.15, 0.4, 0.7, 1.01],
    "skew_rate_labels": ["sr<=5%", "sr<=15%", "sr<=40%", "sr<=70%", "sr>70%"],
    "kv_big_bins": [0, 1024, 4096, 16384, 1000000000],
    "kv_big_labels": ["kvB<=1k", "kvB<=4k", "kvB<=16k", "kvB>16k"],
    "kp_bins": [-1, 0, 512, 1024, 2048, 4096, 8192, 1000000000],
    "kp_labels": ["kp=0", "kp<=512", "kp<=1k", "kp<=2k", "kp<=4k", "kp<=8k", "kp>8k"],
}


def pooled_alpha(skew: pd.DataFrame) -> float:
    """The least-squares ``alpha`` of every unequal-length measurement together: the ``alpha``
    minimising Σ (t_skew − t_mean − alpha·(t_max − t_mean))² (0 when no row has t_max ≠
    t_mean). On every shipped profile whose ``meta.yaml`` states its ``alpha_default``, this
    gives that value (to its 4 decimals)."""
    dm = skew["t_max_us"].to_numpy(float) - skew["t_mean_us"].to_numpy(float)
    ds = skew["t_skew_us"].to_numpy(float) - skew["t_mean_us"].to_numpy(float)
    den = float(dm @ dm)
    return float(ds @ dm) / den if den > 0 else 0.0


def graph_padding(sizes: Sequence[int] | None) -> list[int] | None:
    """``pad[T]``: the token count a batch of ``T`` tokens runs at under CUDA graphs captured
    at ``sizes`` (the smallest size >= ``T``), for ``T`` up to the largest; None for None."""
    if sizes is None:
        return None
    try:
        sz = sorted({int(x) for x in sizes})
    except (TypeError, ValueError) as e:
        raise ValueError(f"cuda_graph_sizes must be a list of integers >= 1, got {sizes!r}") from e
    if not sz or sz[0] < 1:
        raise ValueError(f"cuda_graph_sizes must be a non-empty list of integers >= 1, got {sizes!r}")
    pad = [0] * (sz[-1] + 1)
    j = 0
    for t in range(1, sz[-1] + 1):
        if t > sz[j]:
            j += 1
        pad[t] = sz[j]
    return pad


def expected_active(tokens: float, experts: int, top_k: int, local: float | None = None) -> float:
    """Distinct experts ``tokens`` tokens activate among ``experts`` (top-``top_k``, uniform
    independent routing), counted on ``local`` of them (default all)."""
    frac = 1.0 - (1.0 - top_k / experts) ** tokens
    return (experts if local is None else local) * frac


@lru_cache(maxsize=64)
def expected_max_normal(g: int) -> float:
    """Mean of the largest of ``g`` independent standard normals (0 for ``g`` = 1)."""
    if g <= 1:
        return 0.0
    x = np.linspace(-10.0, 10.0, 20001)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    return float(trapezoid(x * g * cdf ** (g - 1) * pdf, x))


class ProfiledCost(CostModel):
    """Iteration time from a measured operator profile (see the module docstring).

    ``profile``: a folder, a shipped profile's name, or ``auto`` (the shipped profile for
    ``gpu`` and ``model``). ``tp``: tensor-parallel degree (its ``tp<N>/`` folder is used).
    ``dp``, ``expert_parallel``: the deployment's data-parallel size and whether its MoE
    layers are expert-parallel across the ``dp · tp`` ranks. ``allreduce_latency_s``,
    ``link_bw_bytes_s`` (default: the GPU preset's peer link): the collectives' cost.
    ``cuda_graph_sizes``: the engine's CUDA-graph capture sizes when it runs with graphs (a
    batch of up to the largest runs its token-wise layers padded to the next one); None: no
    padding (eager).
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, tp: int = 1, profile: str = "auto", dp: int = 1,
                 expert_parallel: bool = False, allreduce_latency_s: float = 10e-6,
                 link_bw_bytes_s: float | None = None, overhead_s: float = 0.0,
                 cuda_graph_sizes: Sequence[int] | None = None) -> None:
        if tp < 1 or dp < 1:
            raise ValueError(f"ProfiledCost: tp and dp must be >= 1, got tp={tp}, dp={dp}")
        if str(profile) == "auto":
            name = find_profile(gpu.name, model.name)
            if name is None:
                raise ProfileError(f"no shipped profile for {model.name} on {gpu.name} "
                                   f"(shipped: {', '.join(available_profiles())}); set the cost's profile")
            profile = name
        self.folder = resolve_profile(profile)
        self.meta = load_meta(self.folder)
        self.model, self.gpu, self.tp, self.dp = model, gpu, int(tp), int(dp)
        self.expert_parallel = bool(expert_parallel)
        self.overhead_s = float(overhead_s)
        self.allreduce_latency_s = float(allreduce_latency_s)
        self.link_bw = float(gpu.link_bw_bytes_s if link_bw_bytes_s is None else link_bw_bytes_s)
        prof_model = str(self.meta.get("model", "")).rsplit("/", 1)[-1]
        if prof_model and not (prof_model.startswith(model.name) or model.name.startswith(prof_model)):
            raise ProfileError(f"{self.folder}/meta.yaml: profiled model {prof_model!r} is not {model.name!r}")
        tp_dir = self.folder / f"tp{self.tp}"
        if not tp_dir.is_dir():
            have = sorted(p.name for p in self.folder.glob("tp*") if p.is_dir())
            raise ProfileError(f"{self.folder}: no tp{self.tp}/ (profiled: {', '.join(have)})")
        dense = _read(tp_dir, "dense", ("layer", "tokens", "time_us"))
        per_seq = _read(tp_dir, "per_sequence", ("layer", "sequences", "time_us"))
        attn = _read(tp_dir, "attention", ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode", "time_us"))
        names = sorted(set(dense["layer"]))
        per_layer = [n for n in names if n not in ONCE_PER_ITERATION]
        once = [n for n in names if n in ONCE_PER_ITERATION]
        if not per_layer:
            raise ProfileError(f"{tp_dir}/dense.csv: no per-layer rows")
        L = model.layers
        xs, per = _layer_sum(dense, "tokens", per_layer, lambda n: PER_LAYER_REPEAT.get(n, 1))
        xo, one = _layer_sum(dense, "tokens", once, lambda n: 1) if once else (xs, np.zeros(len(xs)))
        self.dense = Table1D(xs, L * per + interp_vec(xo, one, xs))
        sx, ss = _layer_sum(per_seq, "sequences", sorted(set(per_seq["layer"])), lambda n: 1)
        self.per_seq = Table1D(sx, ss)
        self.attention = _derived(attn, ("attention",), lambda: AttentionTable(attn, str(tp_dir / "attention.csv")))
        self.skew = self._skew_table(tp_dir)
        self.wants_decode_spread = self.skew is not None
        self.moe = None
        self._moe_scale = 1.0
        moe = _read(tp_dir, "moe", ("tokens", "activated_experts", "time_us"), required=False)
        if moe is None and model.is_moe:
            moe = _read(self.folder / "tp1", "moe", ("tokens", "activated_experts", "time_us"), required=False)
            if not self.expert_parallel:
                self._moe_scale = 1.0 / self.tp  # each rank holds 1/tp of every expert
        if model.is_moe:
            if moe is None:
                raise ProfileError(f"{self.folder}: {model.name} is a MoE model but the profile has no moe.csv")
            self.moe = MoETable(moe)
        elif moe is not None:
            raise ProfileError(f"{tp_dir}/moe.csv: a MoE profile, but {model.name} has no experts")
        self._act_bytes = model.hidden * model.dtype_bytes  # one token's activation
        self._ep_ranks = self.dp * self.tp if (self.expert_parallel and model.is_moe) else 1
        self._moe_cache: dict[int, float] = {}
        self._curves: dict[int, tuple] = {}
        self._span_curves: dict[int, tuple] = {}
        self._attn_cache: dict[tuple, float] = {}  # exact lookup points seen (bounded)
        self._iter_cache: dict[tuple, float] = {}  # whole iterations by batch shape (bounded)
        self._graph_pad = graph_padding(cuda_graph_sizes)

    def _skew_table(self, tp_dir: Path) -> "SkewTable | None":
        """The profile's unequal-length correction where its folder holds ``skew_fit.csv``:
        bucket axes and pooled ``alpha`` from ``meta.yaml``'s ``skew_fit`` where it states
        them, else the profiler's standard axes and the pooled least-squares ``alpha`` of
        ``skew.csv`` (see the module docstring)."""
        sk = _read(tp_dir, "skew_fit", ("pc", "n_label", "skew_rate_label", "kv_big_label", "kp_label", "alpha"),
                   required=False, text=("n_label", "skew_rate_label", "kv_big_label", "kp_label"), signed=("alpha",))
        if sk is None:
            return None
        fit = self.meta.get("skew_fit")
        fit = fit if isinstance(fit, dict) else {}
        alpha = ((fit.get("per_tp") or {}).get(self.tp) or {}).get("alpha_default")
        if alpha is None:
            raw = _read(tp_dir, "skew", ("t_mean_us", "t_max_us", "t_skew_us"), required=False, text=())
            alpha = pooled_alpha(raw) if raw is not None else 0.0
        axes = fit.get("bucket_axes") or SKEW_AXES
        return _derived(sk, (repr(axes), alpha), lambda: SkewTable(sk, axes, alpha, str(tp_dir / "skew_fit.csv")))

    # -- parts (µs) ----------------------------------------------------------------------
    def allreduce_us(self, tokens: int) -> float:
        """One ring all-reduce of ``tokens`` activations over the ``tp`` ranks."""
        if self.tp == 1 or tokens <= 0:
            return 0.0
        nbytes = tokens * self._act_bytes
        return 1e6 * (self.allreduce_latency_s + 2 * (self.tp - 1) / self.tp * nbytes / self.link_bw)

    def moe_us(self, tokens: int) -> float:
        """One MoE layer (experts and, with expert parallelism over DP, its two collectives)."""
        if self.moe is None or tokens <= 0:
            return 0.0
        v = self._moe_cache.get(tokens)
        if v is not None:
            return v
        m = self.model
        E, k = m.experts, m.active_experts
        G = self._ep_ranks
        if G == 1:
            v = self._moe_scale * self.moe(tokens, expected_active(tokens, E, k))
        else:
            t_all = self.dp * tokens
            pairs = t_all * k
            mu, sd = pairs / G, math.sqrt(pairs * (1 / G) * (1 - 1 / G))
            worst = min(mu + expected_max_normal(G) * sd, t_all * min(k, E / G))
            v = self.moe(worst / k, expected_active(t_all, E, k, local=E / G))
            if self.dp > 1:  # all-gather the tokens, reduce-scatter the results
                nbytes = t_all * self._act_bytes
                v += 2e6 * (self.allreduce_latency_s + (self.dp - 1) / self.dp * nbytes / self.link_bw)
        if len(self._moe_cache) < 1 << 16:
            self._moe_cache[tokens] = v
        return v

    def attention_args(self, b: BatchShape) -> tuple[float, float, int, float]:
        """The single-chunk attention lookup point of a batch (see the module docstring)."""
        q = b.n_prefill_tokens
        kp = 0.0
        if q:
            pairs = b.prefill_attn_pairs
            kp = pairs / q - (q + 1) / 2
            if kp < 0:
                q, kp = (math.sqrt(8.0 * pairs + 1.0) - 1.0) / 2.0, 0.0
        n = b.n_decode_tokens
        return q, kp, n, (b.decode_ctx_tokens / n if n else 0.0)

    def _skewed(self, t_mean: float, q: float, kp: float, n: int, kd: float, longest: int, shortest: int) -> float:
        """The profile's unequal-length correction of one attention layer (see :class:`SkewTable`)."""
        alpha = self.skew(q, n, (kd - shortest) / (longest - shortest) if longest > shortest else 0.5, longest, kp)
        if alpha == 0.0:
            return t_mean
        t_max = self.attention(q, kp, n, longest)
        return t_mean + alpha * (t_max - t_mean) if t_max > t_mean else t_mean

    def iteration_s(self, b: BatchShape) -> float:
        """The iteration's time: :meth:`_iteration_us` in seconds plus ``overhead_s``, kept by
        batch shape (the cached float is the one computed), plus the swap traffic."""
        key = (b.n_prefill_tokens, b.prefill_attn_pairs, b.n_decode_tokens, b.decode_ctx_tokens, b.n_seqs,
               b.decode_ctx_max, b.decode_ctx_min)
        t = self._iter_cache.get(key)
        if t is None:
            n_tok = key[0] + key[2]
            t = self._iteration_us(b, n_tok) * 1e-6 + self.overhead_s if n_tok else 0.0
            if len(self._iter_cache) < 1 << 16:
                self._iter_cache[key] = t
        if b.swap_bytes:  # (no tokens: the overhead alone, as 0 µs of work would give)
            return (t if key[0] or key[2] else self.overhead_s) + b.swap_bytes / self.gpu.host_bw_bytes_s
        return t

    def _iteration_us(self, b: BatchShape, n_tok: int) -> float:
        """The iteration's time in µs, without ``overhead_s`` and swap traffic."""
        L = self.model.layers
        if b.n_prefill_tokens:
            a = self._mixed_attention_us(b)
        else:
            a = self._decode_attention_us(b.n_decode_tokens, b.decode_ctx_tokens, b.decode_ctx_max, b.decode_ctx_min)
        if self._graph_pad is not None and n_tok < len(self._graph_pad):
            n_tok = self._graph_pad[n_tok]
        t = self.dense(n_tok) + self.per_seq(b.n_seqs) + L * a
        if self.moe is not None:
            t += L * self.moe_us(n_tok)
        if self.tp > 1:
            t += 2 * L * self.allreduce_us(n_tok)
        return t

    def _mixed_attention_us(self, b: BatchShape) -> float:
        """One attention layer of a batch with prefill chunks (and maybe decode rows), kept by
        lookup point."""
        key = self.attention_args(b)
        skewed = self.skew is not None and key[2] > 1 and b.decode_ctx_max > key[3]
        if skewed:
            key = key + (b.decode_ctx_max, b.decode_ctx_min)
        a = self._attn_cache.get(key)
        if a is None:
            a = self.attention(*key[:4])
            if skewed:
                a = self._skewed(a, *key)
            if len(self._attn_cache) < 1 << 16:
                self._attn_cache[key] = a
        return a

    def _decode_attention_us(self, n: int, ctx: int, longest: int, shortest: int) -> float:
        """One attention layer of ``n`` > 0 decode rows and no prefill: what
        :meth:`_mixed_attention_us` computes for such a batch (the same floats: the attention
        table's pure-decode sum and the pure-decode ``alpha`` row), without its lookup-point
        cache (a batch shape the iteration cache missed is a new lookup point)."""
        kd = ctx / n
        t = self.attention.decode(n, kd)
        sk = self.skew
        if sk is None or n <= 1 or longest <= kd:
            return t
        alpha = sk.row_alpha(sk.decode_row(n), (kd - shortest) / (longest - shortest) if longest > shortest else 0.5,
                             longest)
        if alpha == 0.0:
            return t
        t_max = self.attention.decode(n, longest)
        return t + alpha * (t_max - t) if t_max > t else t

    def _decode_curve(self, n: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """A pure-decode iteration of ``n`` rows: the attention layers' time (s) as a function of
        the rows' length — the breakpoints (the attention grid's lengths), the times there and
        the slope beyond the last — and the rest of the iteration (s); cached per ``n``."""
        c = self._curves.get(n)
        if c is not None:
            return c
        L = self.model.layers
        n_tok = self._graph_pad[n] if self._graph_pad is not None and n < len(self._graph_pad) else n
        fixed = self.dense(n_tok) + self.per_seq(n)
        if self.moe is not None:
            fixed += L * self.moe_us(n_tok)
        if self.tp > 1:
            fixed += 2 * L * self.allreduce_us(n_tok)
        nds, slices = self.attention.grid[0]
        xs = np.unique(np.concatenate([np.asarray(slices[nds[i]][1][0][0], float) for i, _ in bracket(nds, n)]))
        ys = L * self.attention.decode_vec(n, xs) * 1e-6
        slope = L * self.attention.decode_vec(n, np.array([xs[-1] + 1.0]))[0] * 1e-6 - ys[-1]
        c = (xs, ys, float(slope), fixed * 1e-6 + self.overhead_s)
        if len(self._curves) < 4096:
            self._curves[n] = c
        return c

    @staticmethod
    def _on_curve(xs: np.ndarray, ys: np.ndarray, slope: float, x: np.ndarray) -> np.ndarray:
        y = np.interp(x, xs, ys)
        if x[-1] > xs[-1] or x[0] > xs[-1]:
            hi = x > xs[-1]
            y[hi] = ys[-1] + slope * (x[hi] - xs[-1])
        return y

    def decode_span_s(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int | None = None,
                      spread: tuple[int, int] | None = None) -> np.ndarray:
        """Pure-decode iterations (see :meth:`CostModel.decode_span_s`); ``spread``: the first
        iteration's longest and shortest row (each grows by one per iteration)."""
        g = n_seqs if ctx_growth is None else ctx_growth
        j = np.arange(k, dtype=np.float64)
        kd = (ctx_tokens + g * j) / n_seqs
        xs, ys, slope, fixed = self._decode_curve(n_seqs)
        attn = self._on_curve(xs, ys, slope, kd)
        if self.skew is not None and spread is not None and n_seqs > 1 and spread[0] > kd[0]:
            longest, shortest = spread[0] + j, spread[1] + j
            width = spread[0] - spread[1]
            sr = (kd - shortest) / width if width > 0 else np.full(k, 0.5)
            # the bucket moves monotonically along both axes: one bucket at both ends is one
            # ``alpha`` for the whole span (about 3 in 4 such spans on the Azure conversation
            # trace), a scalar instead of a lookup per iteration (the same floats)
            first = self.skew.row_bucket(float(sr.min()), spread[0])
            if first == self.skew.row_bucket(float(sr.max()), spread[0] + k - 1):
                by_bucket = self._span_curve(n_seqs)[5]  # (this row count's alphas, kept)
                alpha = by_bucket[first[0]][first[1]]
                if alpha != 0.0:
                    t_max = self._on_curve(xs, ys, slope, longest)
                    attn = np.where(t_max > attn, attn + alpha * (t_max - attn), attn)
            else:
                alpha = self.skew.decode_vec(n_seqs, sr, longest)
                t_max = self._on_curve(xs, ys, slope, longest)
                attn = np.where((alpha != 0.0) & (t_max > attn), attn + alpha * (t_max - attn), attn)
        return attn + fixed

    def _span_curve(self, n: int) -> tuple:
        """:meth:`_decode_curve` of ``n`` rows as plain lists, for :meth:`decode_span`'s closed
        form: breakpoints, times, each piece's slope, the slope beyond, the rest of the iteration
        and (with the unequal-length correction) the ``alpha`` grid of ``n`` rows by (skew-rate,
        longest-row) bucket; cached per ``n``. The same numbers as
        the arrays, so the same sums."""
        c = self._span_curves.get(n)
        if c is not None:
            return c
        xs, ys, slope, fixed = self._decode_curve(n)
        xl, yl = xs.tolist(), ys.tolist()
        bl = [0.0] + [(yl[i] - yl[i - 1]) / (xl[i] - xl[i - 1]) for i in range(1, len(xl))]
        arow = self.skew.decode_row(n) if self.skew is not None and n > 1 else None
        c = (xl, yl, bl, slope, fixed, arow)
        if len(self._span_curves) < 4096:
            self._span_curves[n] = c
        return c

    def decode_span(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int, start_s: float,
                    limit_s: float, spread: tuple[int, int] | None = None) -> tuple[int, float]:
        """:meth:`CostModel.decode_span`; in closed form when the iteration time is affine over
        the whole span: the rows' mean (and, with the unequal-length correction, the longest
        row) stay within one segment of the attention grid and ``alpha`` stays in one bucket."""
        xl, yl, bl, slope, fixed, arow = self._span_curves.get(n_seqs) or self._span_curve(n_seqs)
        x0, x1 = ctx_tokens / n_seqs, (ctx_tokens + ctx_growth * (k - 1)) / n_seqs
        mean = _segment(xl, yl, bl, slope, x0, x1)
        if mean is None:
            return self._span_by_iterations(n_seqs, ctx_tokens, k, ctx_growth, start_s, limit_s, spread)
        a, b = mean[0], mean[1] * ctx_growth / n_seqs
        if arow is None or spread is None or spread[0] <= x0:
            if b >= 0:
                return span_of_line(a + fixed, b, k, start_s, limit_s)
            return self._span_by_iterations(n_seqs, ctx_tokens, k, ctx_growth, start_s, limit_s, spread)
        hi, lo = spread
        h1 = hi + k - 1
        top = _segment(xl, yl, bl, slope, hi, h1)
        if top is None:
            return self._span_by_iterations(n_seqs, ctx_tokens, k, ctx_growth, start_s, limit_s, spread)
        tx0, tb = top
        w = hi - lo
        sr0 = (x0 - lo) / w if w > 0 else 0.5
        sr1 = (x1 - lo - (k - 1)) / w if w > 0 else 0.5
        row_alpha = self.skew.row_alpha
        al = row_alpha(arow, sr0, hi)
        if al == row_alpha(arow, sr1, h1):  # one alpha over the span
            tx1 = tx0 + tb * (k - 1)
            tm1 = a + b * (k - 1)
            if al == 0.0 or (tx0 <= a and tx1 <= tm1):
                if b >= 0:
                    return span_of_line(a + fixed, b, k, start_s, limit_s)
            elif tx0 > a and tx1 > tm1:
                b = b + al * (tb - b)
                if b >= 0:
                    return span_of_line(a + al * (tx0 - a) + fixed, b, k, start_s, limit_s)
        return self._span_by_iterations(n_seqs, ctx_tokens, k, ctx_growth, start_s, limit_s, spread)

    def _span_by_iterations(self, n_seqs: int, ctx_tokens: int, k: int, ctx_growth: int, start_s: float,
                            limit_s: float, spread: tuple[int, int] | None) -> tuple[int, float]:
        """:meth:`decode_span` from the iterations' durations (:meth:`decode_span_s`), where
        the closed form does not hold. A short span (most of them) takes them one by one
        (:meth:`_span_durations`) and sums them as numpy does (:func:`_array_sum`): the same
        floats, without numpy's call overhead on a few dozen values. Iteration ``j`` starts at
        ``start_s`` plus the running sum before it; these starts never decrease when every
        iteration lasts longer than the sums' rounding (checked), so the first at/after the
        limit is numpy's ``searchsorted`` of them."""
        if k <= _LOOP_SPAN:
            durs = self._span_durations(n_seqs, ctx_tokens, k, ctx_growth, spread)
            total = _array_sum(durs, 0, k)
            if start_s + total - durs[-1] < limit_s:
                return k, total
            if min(durs) > 1e-15 * total:
                c, j = 0.0, 0
                for d in durs:
                    c += d
                    if start_s + (c - d) >= limit_s:
                        break
                    j += 1
                k = max(1, j)
                return k, _array_sum(durs, 0, k)
        durs = self.decode_span_s(n_seqs, ctx_tokens, k, ctx_growth, spread)
        if start_s + float(durs.sum()) - float(durs[-1]) >= limit_s:
            k = max(1, int(np.searchsorted(start_s + (np.cumsum(durs) - durs), limit_s, side="left")))
            durs = durs[:k]
        return k, float(durs.sum())

    def _span_durations(self, n: int, ctx: int, k: int, growth: int, spread: tuple[int, int] | None) -> list:
        """:meth:`decode_span_s` as a list, one iteration at a time: the same operations on the
        same floats (the rows' mean ``(ctx + growth·j) / n`` is the same correctly rounded
        quotient whether its integers are converted before or after)."""
        xl, yl, bl, slope, fixed, arow = self._span_curves.get(n) or self._span_curve(n)
        kd = [(ctx + growth * j) / n for j in range(k)]
        attn = _curve_values(xl, yl, bl, slope, kd)
        if arow is not None and spread is not None and spread[0] > kd[0]:
            hi, lo = spread
            w = hi - lo
            sr = [(x - (lo + j)) / w for j, x in enumerate(kd)] if w > 0 else [0.5] * k
            sk = self.skew
            first = sk.row_bucket(min(sr), hi)
            if first == sk.row_bucket(max(sr), hi + k - 1):  # one alpha (as decode_span_s takes it)
                al = arow[first[0]][first[1]]
                if al != 0.0:
                    t_max = _curve_values(xl, yl, bl, slope, range(hi, hi + k))
                    attn = [a + al * (t - a) if t > a else a for a, t in zip(attn, t_max)]
            else:
                row_alpha = sk.row_alpha
                t_max = _curve_values(xl, yl, bl, slope, range(hi, hi + k))
                attn = [a + al * (t - a) if al != 0.0 and t > a else a
                        for a, t, al in zip(attn, t_max, [row_alpha(arow, x, hi + j) for j, x in enumerate(sr)])]
        return [a + fixed for a in attn]



def _segment(xs: list, ys: list, bs: list, slope: float, x0: float, x1: float):
    """``(value at x0, slope)`` of a piecewise-linear curve (breakpoints ``xs``, values ``ys``,
    ``bs[i]`` the slope between ``xs[i-1]`` and ``xs[i]``, clamped below, ``slope`` above) when
    ``[x0, x1]`` lies on one of its pieces, else None."""
    i = bisect_right(xs, x0)
    if i >= len(xs):
        return ys[-1] + slope * (x0 - xs[-1]), slope
    if x1 <= xs[i]:
        if i:
            b = bs[i]
            return ys[i - 1] + b * (x0 - xs[i - 1]), b
        return ys[0], 0.0
    return None


#: decode spans of at most this many iterations that the closed form cannot price are priced
#: one iteration at a time in Python (:meth:`ProfiledCost._span_durations`), longer ones with numpy
_LOOP_SPAN = 256


def _curve_values(xl: list, yl: list, bl: list, slope: float, xs) -> list:
    """:meth:`ProfiledCost._on_curve` at each of ``xs``, one at a time: ``np.interp``'s
    ``slope_i · (x − x_i) + y_i`` between breakpoints (``bl`` holds its slopes, computed as it
    computes them), the first value below the first breakpoint, the line ``slope`` beyond the
    last (the same floats)."""
    top = len(xl)
    x_end, y_end, y0 = xl[-1], yl[-1], yl[0]
    out = []
    for x in xs:
        i = bisect_right(xl, x)
        if i >= top:
            out.append(y_end + slope * (x - x_end) if x > x_end else y_end)
        elif i:
            out.append(bl[i] * (x - xl[i - 1]) + yl[i - 1])
        else:
            out.append(y0)
    return out


def _array_sum(a: list, lo: int, n: int) -> float:
    """``float(np.array(a[lo:lo + n]).sum())``: numpy's pairwise summation of float64 — fewer
    than 8 values one after the other; up to 128 in eight running sums (every eighth value),
    combined pairwise, then the rest one by one; more split in two at a multiple of 8 below
    half."""
    if n < 8:
        res = -0.0
        for x in a[lo:lo + n]:
            res += x
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo:lo + 8]
        end = lo + n - n % 8
        for i in range(lo + 8, end, 8):
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for x in a[end:lo + n]:
            res += x
        return res
    half = n // 2
    half -= half % 8
    return _array_sum(a, lo, half) + _array_sum(a, lo + half, n - half)
