"""Shortcuts between the batching policy, the replica and the tables against their plain
counterparts: the block growth a policy hands over in ``BatchDecision.grow`` (against the
replica's own scan), and the batch / per-kind tables built from numeric columns (against
``DataFrame.from_records`` and a concat + sort in log order)."""
from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest

from llmos_sim import events as E
from llmos_sim.policies.batching.base import BatchingPolicy
from llmos_sim.serving import metrics, simulate
from llmos_sim.serving.view import TokenList
from .helpers import make_cfg

PAGED = {"_target_": "llmos_sim.policies.memory.paged.PagedPool", "_partial_": True, "block_bytes": 16 * 512}


def _rows(seed: int, n: int = 40):
    rng = random.Random(seed)
    t, rows = 0.0, []
    for _ in range(n):
        t += rng.expovariate(3.0)
        rows.append([round(t, 3), rng.randint(1, 120), rng.randint(1, 90)])
    return rows


def _cfg(seed: int, batching: str, preemption: str, per_iteration: bool = False):
    return make_cfg(_rows(seed), batching=batching, batching_over={"preemption": preemption, "max_num_seqs": 16},
                    serving={"num_kv_blocks": 30, "per_iteration_records": per_iteration}, memory=PAGED)


@pytest.mark.parametrize("batching", ["continuous", "chunked_prefill", "orca", "static"])
@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_policy_growth_is_the_replicas_scan(monkeypatch, batching, preemption):
    for seed in range(3):
        cfg = _cfg(seed, batching, preemption, per_iteration=seed == 2)
        fast = simulate(cfg, seed=0)
        with monkeypatch.context() as m:  # no growth handed over: the replica scans every row
            m.setattr(BatchingPolicy, "_running", lambda self, v, b: (*self.schedule_running(v, b), None))
            plain = simulate(cfg, seed=0)
        assert list(fast.log) == list(plain.log)


def test_overridden_schedule_running_hands_no_growth():
    class Halving(BatchingPolicy):
        def schedule_running(self, view, budget):
            return super().schedule_running(view, budget // 2)

    from llmos_sim.serving.view import ReplicaView, SeqTable
    from llmos_sim.serving.kv import KVCacheManager
    from llmos_sim.policies.memory.paged import PagedPool

    kv = KVCacheManager(PagedPool(40 * 16 * 512, 16 * 512), 512, 16, "grow")
    tab = SeqTable()
    tab.append([(0, 100, 10, 0, 0, 0, 0, 0, 10, 0.0, False)])
    d = Halving(max_num_batched_tokens=64).next_batch(ReplicaView(0.0, tab, [], kv))
    assert d.grow is None and d.tokens.tolist() == [32]
    d = BatchingPolicy(max_num_batched_tokens=64).next_batch(ReplicaView(0.0, tab, [], kv))
    assert d.grow == ([0], [4]) and d.tokens.tolist() == [64] and isinstance(d.tokens, TokenList)


@pytest.mark.parametrize("per_iteration", [False, True])
def test_tables_from_columns_are_from_records(per_iteration):
    res = simulate(_cfg(1, "chunked_prefill", "recompute", per_iteration), seed=0)
    fr = metrics.Frames(res.log)
    for kind in metrics.SERVING_KINDS:
        cols = ["seq", "time_s", "subject", *E.FIELDS[kind]]
        pd.testing.assert_frame_equal(fr.frame(kind), pd.DataFrame.from_records(fr.rows(kind), columns=cols))
    # the batch table merged from columns against the one concatenated and sorted (from an EventLog)
    pd.testing.assert_frame_equal(metrics.batch_table(fr), metrics.batch_table(res.log), check_exact=True)
    assert (metrics.batch_table(fr)["n_iters"] > 1).any() != per_iteration


def _data_json(kind, d) -> str:
    """One record's data as the events table's JSON object, built record by record."""
    if d == ():
        return "{}"
    d = d if isinstance(d, tuple) else (d,)
    names = E.FIELDS.get(kind, ())
    keys = names if len(d) == len(names) else [f"f{j}" for j in range(len(d))]
    return json.dumps(dict(zip(keys, d)), default=lambda v: v.item())


def _events_table_by_records(log: E.EventLog) -> pd.DataFrame:
    """The events table built record by record (JSON of each data, ``str`` of each subject)."""
    recs = log.records
    return pd.DataFrame({"seq": range(len(recs)), "time_s": [r[0] for r in recs], "kind": [r[1] for r in recs],
                         "subject": [str(r[2]) for r in recs], "data": [_data_json(r[1], r[3]) for r in recs]})


def _same(x, y) -> bool:
    """Equal JSON values of the same types (int vs float), NaN equal to NaN."""
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (math.isnan(x) and math.isnan(y))
    if isinstance(x, dict):
        return isinstance(y, dict) and list(x) == list(y) and all(_same(x[k], y[k]) for k in x)
    if isinstance(x, list):
        return isinstance(y, list) and len(x) == len(y) and all(map(_same, x, y))
    return type(x) is type(y) and x == y


def _assert_events_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.drop(columns="data"), want.drop(columns="data"), check_exact=True)
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(got["data"], want["data"])) if not _same(json.loads(a), json.loads(b))]
    assert not bad, bad[:5]


def test_events_table_is_the_records_json():
    """The events table, built per kind and column (numbers formatted by Arrow, distinct subjects
    once), against ``json.dumps``/``str`` record by record — on awkward values too (same values
    and types; Arrow may spell a float differently, e.g. ``1.5e+12``)."""
    log = E.EventLog()
    rows = [
        (0, E.BATCH, 0, (1, 2, 3, 0.1, 5)), (0.5, E.BATCH, 1, (-1, 0, 2**62, 1e-7, 10**20)),  # an int beyond 64 bits
        (1.0, E.BATCH, 0, (True, 2, 3, 4, 5)),  # a bool among ints
        (1, E.REQ_ARRIVE, 7, ("it's", 3, 4)), (2.0, E.REQ_ARRIVE, True, ('a"b', 3, None)),
        (2.0, E.REQ_FINISH, 7, (0,)), (2.5, E.REQ_FINISH, 8, (1.0,)), (3.0, E.END, "serving", ()),
        (3.0, E.END, "x", ()), (3.5, "start", 3, ((0, 1), 500, 1.5e12)), (4.0, "start", 3.0, ((2,), 1000, float("inf"))),
        (4.5, "odd", 1, [1, 2]), (5.0, "odd", 2, (1, 2, 3)), (5.5, "odd", 3, None), (6.0, "fail", 4, (float("nan"),)),
        (6.5, E.KV_SAMPLE, 0, (1, 2, 3, 4)), (7.0, E.KV_SAMPLE, 0, (-0.0, 2, 3, 4)),
    ]
    for r in rows:
        log.emit(*r)
    _assert_events_equal(log.table(), _events_table_by_records(log))
    res = simulate(_cfg(2, "chunked_prefill", "swap", False), seed=0)
    _assert_events_equal(res.tables["events"], _events_table_by_records(res.log))
