"""Metrics named as vLLM's serving benchmark names them: TTFT, TPOT, ITL (per-token gaps), e2e
latency in ms with mean/median/std/p50/p90/p95/p99, goodput under per-request SLOs, and the
plots one serving run writes. Stories use 1 s iterations (hand-computed gaps)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llmos_sim.serving import simulate
from llmos_sim.serving.metrics import Frames, itl_samples, weighted_percentiles
from llmos_sim.serving.system import ServingSystem, build_result, replica_factory
from llmos_sim.workload.requests import Request
from .helpers import make_cfg

ROWS = [[0, 20, 3], [0, 10, 2], [1, 5, 4]]


def itl(r):
    v, w = itl_samples(Frames(r.log), r.tables["batches"])
    return sorted(np.repeat(v, w).tolist())


def test_continuous_batching_prefill_iteration_lengthens_the_waiting_decodes_gaps():
    # t0-1 prefill {0,1}; t1-2 a prefill-only iteration for req2 (0 and 1 sit it out);
    # t2-3 all decode: req0 and req1 tokens after a 2 s gap; req0 again at 4; req2 at 3, 4, 5
    r = simulate(make_cfg(ROWS, "continuous", serving={"num_kv_blocks": 100}), seed=0)
    assert itl(r) == [1.0, 1.0, 1.0, 1.0, 2.0, 2.0]
    s = r.summary
    assert s["mean_itl_ms"] == pytest.approx(8000 / 6)
    assert s["median_itl_ms"] == s["p50_itl_ms"] == 1000.0
    assert s["p99_itl_ms"] == pytest.approx(np.percentile([1, 1, 1, 1, 2, 2], 99) * 1e3)
    assert s["std_itl_ms"] == pytest.approx(np.std([1, 1, 1, 1, 2, 2]) * 1e3)


def test_static_batching_padding_is_no_token():
    # batch {0,1}: req1 finishes at 2 and rides along as padding in the t2-3 iteration
    r = simulate(make_cfg(ROWS, "static", serving={"num_kv_blocks": 100}), seed=0)
    assert itl(r) == [1.0] * 6
    assert [d[1:] for t, k, s, d in r.log if k == "itl_adjust"] == [(-1, 0.0, 1)]
    assert r.log.records[-2][1] == "end"  # (logged after the run: its records keep their numbers)


@pytest.mark.parametrize("mode", ["recompute", "swap"])
def test_a_preempted_requests_next_token_gap_spans_its_absence(mode):
    # 3 blocks: B preempted at 1 (after its first token), back at 3, next token at 4
    r = simulate(make_cfg([[0, 16, 3], [0, 16, 3]], "chunked_prefill", batching_over={"preemption": mode},
                          serving={"num_kv_blocks": 3}), seed=0)
    assert itl(r) == [1.0, 1.0, 1.0, 3.0]
    assert r.summary["p99_itl_ms"] == pytest.approx(np.percentile([1, 1, 1, 3], 99) * 1e3)


def test_vllm_named_keys_and_old_keys_agree():
    r = simulate(make_cfg(ROWS, "chunked_prefill", serving={"num_kv_blocks": 100}), seed=0)
    s = r.summary
    for m in ("ttft", "tpot", "itl", "e2el"):
        for k in ("mean", "median", "std", "p50", "p90", "p95", "p99"):
            assert f"{k}_{m}_ms" in s
    assert s["mean_ttft_ms"] == pytest.approx(s["ttft_s_mean"] * 1e3)
    assert s["p99_e2el_ms"] == pytest.approx(s["e2e_s_p99"] * 1e3)
    assert s["request_throughput"] == s["throughput_req_s"] and s["output_throughput"] == s["throughput_tok_s"]
    assert s["completed"] == 3


def test_goodput_with_per_request_slos():
    # 1 s iterations: req0 TTFT 1, TPOT 1, e2e 3; req1 TTFT 1, TPOT 1, e2e 2; req2 TTFT 1,
    # TPOT 1, e2e 4 (chunked prefill, lots of room). Run SLOs: TTFT 2, TPOT 1.5, e2e 3.5;
    # req1 carries its own TTFT SLO of 0.5 (missed); req2 fails the run's e2e SLO
    cfg = make_cfg(ROWS, "chunked_prefill", serving={"num_kv_blocks": 100, "slo_ttft_s": 2.0, "slo_tpot_s": 1.5,
                                                     "slo_e2e_s": 3.5})
    reqs = [Request(0, 0.0, 20, 3), Request(1, 0.0, 10, 2, slo_ttft_s=0.5), Request(2, 1.0, 5, 4)]
    make, _ = replica_factory(cfg)
    from hydra.utils import instantiate

    sysm = ServingSystem(reqs, make, instantiate(cfg.router), 1)
    sysm.run()
    r = build_result(sysm.log, 2.0, 1.5, 3.5)
    req = r.tables["requests"].set_index("request")
    assert req["slo_ttft_s"].tolist() == [2.0, 0.5, 2.0] and req["slo_e2e_s"].tolist() == [3.5] * 3
    assert req["e2e_s"].tolist() == [3.0, 2.0, 4.0]
    assert req["slo_met"].tolist() == [True, False, False]
    assert r.summary["request_goodput"] == pytest.approx(1 / 5.0)  # 1 request over first arrival (0) → last finish (5)
    assert r.summary["goodput_req_s"] == pytest.approx(3 / 5.0)  # (the old key: run-level TTFT/TPOT SLOs only)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(0, 3), st.integers(1, 60), st.integers(1, 12)), min_size=1, max_size=10),
       batching=st.sampled_from(["static", "orca", "continuous", "chunked_prefill"]), blocks=st.integers(4, 20),
       mode=st.sampled_from(["recompute", "swap"]), per_iteration=st.booleans(), budget=st.integers(8, 64))
def test_gaps_add_up_to_each_requests_decode_time(rows, batching, blocks, mode, per_iteration, budget):
    over = {"max_num_batched_tokens": budget} if batching == "chunked_prefill" else {}
    if batching != "static":
        over["preemption"] = mode
    r = simulate(make_cfg([list(x) for x in rows], batching, batching_over=over, cost=None,
                          serving={"num_kv_blocks": blocks, "per_iteration_records": per_iteration}), seed=0)
    v, w = itl_samples(Frames(r.log), r.tables["batches"])
    assert (w >= 0).all()
    req = r.tables["requests"]
    done = req[req["finish_s"].notna()]
    if r.summary["n_failed"] == 0:  # (a request failed after tokens would add gaps of its own)
        assert int(w.sum()) == int((done["output_tokens"] - 1).sum())
        assert float((v * w).sum()) == pytest.approx(float((done["finish_s"] - done["first_token_s"]).sum()),
                                                     rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(vals=st.lists(st.tuples(st.floats(0, 10), st.integers(0, 5)), min_size=1, max_size=20),
       q=st.floats(0, 100))
def test_weighted_percentiles_equal_numpy_on_the_repeated_values(vals, q):
    v = np.array([a for a, _ in vals])
    w = np.array([b for _, b in vals])
    got = weighted_percentiles(v, w, [q])[0]
    if w.sum() == 0:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(float(np.percentile(np.repeat(v, w), q)), rel=1e-9, abs=1e-12)
