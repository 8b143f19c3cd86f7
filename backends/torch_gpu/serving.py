"""Real serving: the serving simulator's replicas, batching policies and KV pools, executing
every iteration on a local device in wall-clock time.

``python -m llmos_sim experiment=serving_real backend=torch`` (or any ``mode: serving`` config
with ``backend=torch``) runs :func:`llmos_sim.serving.simulate` unchanged except for two
things the backend supplies (:meth:`TorchBackend.environment`,
:meth:`TorchBackend.serving_replica`):

- the SimPy environment is real time (:class:`~llmos_sim.backends.torch_gpu.backend.WallClockEnvironment`):
  requests arrive at their wall-clock times;
- each replica is an :class:`ExecutingReplica`: the batching policy decides the batch exactly
  as in simulation (same objects, same view), the KV cache manager and the memory-pool policy
  hand out the same blocks, and then, instead of asking the cost model how long the iteration
  takes, the replica runs it — a Llama-shaped transformer with seeded random weights
  (:class:`~llmos_sim.backends.torch_gpu.inference.TinyLM`, built from the config's
  ``model`` spec) does the prefill chunks and decodes of the batch, reading and writing K/V in
  the blocks the pool chose, which are slices of one arena per replica (:class:`ArenaKV`).
  The iteration lasts what it took on the wall clock, decision and bookkeeping included
  (from the end of the previous iteration, or the wake-up, to the end of this one).

Tokens are real: prompts are seeded random ids, each emitted token is the model's greedy
choice and is fed back; a recompute-preempted sequence re-runs its prompt and generated
tokens; a swap-preempted one has its blocks copied to host memory and back. Not supported:
prefix caching (the simulator models cache hits by count, not by physical block), tensor
parallelism (one device per replica).

Every iteration's :class:`~llmos_sim.serving.cost.BatchShape` and measured time are kept in
``replica.measured`` (for fitting a cost model, see
:mod:`llmos_sim.backends.torch_gpu.inference`).
"""
from __future__ import annotations

import time
import zlib
from typing import Hashable

import torch

from llmos_sim import events as E
from llmos_sim.serving.cost import BatchShape
from llmos_sim.serving.iteration import IterationPlan
from llmos_sim.serving.replica import Replica
from llmos_sim.serving.specs import ModelSpec


class ArenaKV:
    """One replica's KV cache as a single arena of ``capacity_bytes`` — the KV pool's address
    range. A block at pool offset ``o`` is ``arena[o : o + block_bytes]`` viewed as
    ``[layers, 2 (K, V), block_tokens, kv_heads, head_dim]``; :meth:`set_table` gives a
    sequence its blocks' offsets (from :meth:`KVCacheManager.block_offsets`) before a forward."""

    def __init__(self, spec: ModelSpec, device: str, dtype: torch.dtype, block_tokens: int,
                 capacity_bytes: int) -> None:
        esz = torch.empty((), dtype=dtype).element_size()
        if esz != spec.dtype_bytes:
            raise ValueError(f"model {spec.name!r} has dtype_bytes={spec.dtype_bytes} but the backend runs {dtype} "
                             f"({esz} bytes): set backend.dtype (or model.dtype_bytes) so they agree")
        self.bt = int(block_tokens)
        self.block_bytes = spec.kv_bytes_per_token * self.bt
        self.shape = (spec.layers, 2, self.bt, spec.kv_heads, spec.head_dim)
        self.dtype = dtype
        self.arena = torch.zeros(int(capacity_bytes), dtype=torch.uint8, device=device)
        n = int(capacity_bytes) // self.block_bytes
        self.blocks = self.arena[:n * self.block_bytes].view(dtype).view(n, *self.shape)
        self.tables: dict[Hashable, list[int]] = {}
        self._index: dict[Hashable, torch.Tensor | None] = {}

    def set_table(self, sid: Hashable, offsets: list[int]) -> None:
        """The byte offsets of ``sid``'s blocks, in token order."""
        if self.tables.get(sid) == offsets:
            return
        self.tables[sid] = list(offsets)
        bb = self.block_bytes
        aligned = all(o % bb == 0 for o in offsets)  # paged pools: always; contiguous: maybe not
        self._index[sid] = torch.tensor([o // bb for o in offsets], device=self.arena.device) if aligned else None

    def drop(self, sid: Hashable) -> None:
        self.tables.pop(sid, None)
        self._index.pop(sid, None)

    def block(self, offset: int) -> torch.Tensor:
        """The block at pool byte ``offset`` (a view of the arena)."""
        if offset % self.block_bytes == 0:
            return self.blocks[offset // self.block_bytes]
        return self.arena[offset:offset + self.block_bytes].view(self.dtype).view(self.shape)

    def write(self, sid: Hashable, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store K/V of tokens ``start .. start+len(k)`` of ``sid`` at ``layer`` in its blocks."""
        offs = self.tables[sid]
        t, end = start, start + len(k)
        while t < end:
            b, o = divmod(t, self.bt)
            n = min(self.bt - o, end - t)
            blk = self.block(offs[b])[layer]
            blk[0, o:o + n] = k[t - start:t - start + n]
            blk[1, o:o + n] = v[t - start:t - start + n]
            t += n

    def gather(self, sid: Hashable, n_tokens: int) -> torch.Tensor:
        """The blocks holding ``sid``'s first ``n_tokens`` tokens, stacked: ``[nb, *shape]``."""
        nb = -(-n_tokens // self.bt)
        idx = self._index.get(sid)
        if idx is not None:
            return self.blocks[idx[:nb]]
        return torch.stack([self.block(o) for o in self.tables[sid][:nb]])

    def read(self, sid: Hashable, layer: int, n_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V (``[n_tokens, kv_heads, head_dim]``) of ``sid`` at ``layer``."""
        g = self.gather(sid, n_tokens)[:, layer]  # [nb, 2, bt, kv, hd]
        g = g.transpose(0, 1).reshape(2, g.shape[0] * self.bt, *g.shape[-2:])
        return g[0, :n_tokens], g[1, :n_tokens]

    def restore(self, sid: Hashable, saved: torch.Tensor) -> None:
        """Copy blocks saved by :meth:`gather` (swapped out) into ``sid``'s current blocks."""
        for j, o in enumerate(self.tables[sid][:len(saved)]):
            self.block(o).copy_(saved[j])


class ExecutingReplica(Replica):
    """A :class:`~llmos_sim.serving.replica.Replica` whose iterations run on a real device.

    Built by the backend's replica factory with the replica's usual arguments plus ``model``
    (the :class:`ModelSpec` to instantiate with random weights), ``device``, ``dtype`` and
    ``seed``. Decisions, KV accounting and records are the base class's; only
    :meth:`_iteration_s` (run and time the batch) and :meth:`_evict` (copy a swapped
    sequence's blocks out) differ. Fast-forwarding is off: every iteration really runs.
    """

    def __init__(self, *args, model: ModelSpec, device: str, dtype: torch.dtype, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.kv.prefix_caching:
            raise ValueError("serving.prefix_caching is not supported by the torch backend (the simulator counts "
                             "cache hits; a real cache would need content-addressed blocks)")
        if not self.kv.pool.addressed:
            raise ValueError(f"the torch backend serves from a KV arena at the pool's offsets; "
                             f"{type(self.kv.pool).__name__} gives labels, not positions (use a paged pool)")
        self.fast_forward = False
        self.device = device
        self.lm = _model(model, device, dtype, seed)
        self.arena_kv = ArenaKV(model, device, dtype, self.kv.block_tokens, self.kv.pool.capacity_bytes)
        self.seed = int(seed)
        self._tokens: dict[Hashable, list[int]] = {}  # request -> prompt + generated token ids
        self._swapped: dict[Hashable, torch.Tensor] = {}  # request -> its blocks, in host memory
        self._output_len: dict[Hashable, int] = {}
        self._oom: tuple[list[int], str] | None = None  # rows of an iteration that ran out of memory, why
        self._cuda = str(device).startswith("cuda")
        self.measured: list[tuple[BatchShape, float]] = []  #: (shape, measured seconds) per iteration
        #: CPU seconds this thread used per iteration (on a CPU device, cpu / measured < 1 means
        #: other processes took the core meanwhile)
        self.cpu_s: list[float] = []
        self._cpu_mark = time.thread_time()
        self.outputs: dict[Hashable, list[int]] = {}  #: request -> the token ids it generated (finished ones)

    def _clock_s(self) -> float:
        """The run's clock now: wall seconds since start over the environment's time factor."""
        env = self.env
        return env.wall_s() / env.factor

    def _prompt(self, rid: Hashable, n: int) -> list[int]:
        """Seeded random prompt ids for request ``rid`` (the same in every run)."""
        key = rid if isinstance(rid, int) else zlib.crc32(str(rid).encode())
        g = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + key % 1_000_003)
        return torch.randint(0, self.lm.spec.vocab, (n,), generator=g).tolist()

    def _evict(self, r: int, swap: bool, t: float, quiet: bool = False):
        if swap:  # the cache moves to host memory (the base class releases the blocks)
            rid = self.table.rid[r]
            self.arena_kv.set_table(rid, self.kv.block_offsets(rid))
            self._swapped[rid] = self.arena_kv.gather(rid, self.table.computed[r]).to("cpu", copy=True)
        return super()._evict(r, swap, t, quiet)

    def _iteration_s(self, shape: BatchShape, tokens: list[int]) -> float:
        tab, akv, kv = self.table, self.arena_kv, self.kv
        seqs, ids = [], []
        done = tab.done if tab.n_done else None
        for i, x in enumerate(tokens):
            if not x:
                continue
            rid, c = tab.rid[i], tab.computed[i]
            hist = self._tokens.get(rid)
            if hist is None:
                hist = self._tokens[rid] = self._prompt(rid, tab.prompt[i])
                self._output_len[rid] = tab.output[i]
            akv.set_table(rid, kv.block_offsets(rid))
            saved = self._swapped.pop(rid, None)
            if saved is not None:  # swapped back in: its blocks come back from host memory
                akv.restore(rid, saved.to(self.device))
            if done is not None and done[i]:  # static batching: a finished row decodes again as padding
                seqs.append((rid, 1, c - 1))
                ids.append(hist[c - 1:c])
            else:
                seqs.append((rid, x, c))
                ids.append(hist[c:c + x])
        if seqs:
            flat = torch.tensor([t for part in ids for t in part], dtype=torch.long, device=self.device)
            try:
                nxt = self.lm.forward(flat, seqs, akv).tolist()
                if self._cuda:
                    torch.cuda.synchronize(self.device)
            except torch.OutOfMemoryError as e:  # the batch's requests fail; the replica carries on
                if self._cuda:
                    torch.cuda.empty_cache()
                self._oom = ([i for i, x in enumerate(tokens) if x], "oom: " + str(e).strip().splitlines()[0][:200])
                nxt = []
            for (rid, n, c), tok in zip(seqs, nxt):
                hist = self._tokens[rid]
                if c + n == len(hist):  # the context is complete: the new token is real
                    hist.append(int(tok))
        dur = max(self._clock_s() - self.now, 1e-9)
        self.measured.append((shape, dur))
        cpu = time.thread_time()
        self.cpu_s.append(cpu - self._cpu_mark)
        self._cpu_mark = cpu
        return dur

    def _finish(self, plan) -> None:
        if self._oom is not None:  # the iteration ran out of device memory: fail its requests alone
            rows, reason = self._oom
            self._oom = None
            tab = self.table
            for r in rows:
                rid = tab.rid[r]
                self.log.emit(self.now, E.REQ_FAIL, rid, (reason,))
                self.kv.release(rid)
                self._tokens.pop(rid, None)
                self._swapped.pop(rid, None)
                self.arena_kv.drop(rid)
            self.outstanding -= len(rows)
            gone = set(rows)
            tab.drop(gone)
            plan = IterationPlan(plan.duration_s, [x for i, x in enumerate(plan.tokens) if i not in gone], plan.k,
                                 plan.hold_finished, plan.may_finish, False)
        before = set(self.table.rid)
        super()._finish(plan)
        if len(before) != len(self.table):  # finished requests: forget their tokens and block tables
            for rid in before.difference(self.table.rid):
                hist = self._tokens.pop(rid, None)
                if hist is not None:
                    self.outputs[rid] = hist[len(hist) - self._output_len.pop(rid):]
                self.arena_kv.drop(rid)


_LAST_MODEL: dict = {}


def _model(spec: ModelSpec, device: str, dtype: torch.dtype, seed: int):
    """The transformer for ``spec`` (seeded random weights, read-only during serving), built
    once and kept for the next run with the same arguments: sim-vs-real serves a dozen runs of
    one model, and a 1 B-parameter model takes seconds to initialise."""
    from llmos_sim.backends.torch_gpu.inference import TinyLM

    key = (spec, str(device), dtype, int(seed))
    if key not in _LAST_MODEL:
        _LAST_MODEL.clear()  # one model at a time: free the previous one's memory first
        _LAST_MODEL[key] = TinyLM(spec, device, dtype, seed)
    return _LAST_MODEL[key]


def replica_factory(model: ModelSpec, devices: list[str], dtype: torch.dtype, seed: int = 0):
    """A callable with :class:`Replica`'s signature that builds :class:`ExecutingReplica` s,
    replica ``i`` on ``devices[i % len(devices)]``."""

    def make(index, *args, **kwargs) -> ExecutingReplica:
        dev = devices[index % len(devices)]
        warm_up(dev)
        return ExecutingReplica(index, *args, model=model, device=dev, dtype=dtype, seed=seed, **kwargs)

    return make


def warm_up(device: str) -> None:
    """One small matmul, so lazy initialisation (thread pools, CUDA context) is not timed."""
    a = torch.ones(64, 64, device=device)
    (a @ a).sum().item()
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)
