"""What ends a fast-forwarded decode span (``serving.span_cut``): an arrival at its own replica
(``own``, the default) or an arrival anywhere (``any``). With ``own`` a replica's records do not
depend on the traffic routed elsewhere: each replica's are those of a one-replica run fed the
requests it was given; per-request results are those of ``any`` up to float rounding of the
span sums; ``any`` reproduces the tables of the rule before."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from llmos_sim.policies.routing import RoundRobin
from llmos_sim.run import build_serving, compose, rngs, run_config
from llmos_sim.serving import simulate
from llmos_sim.serving.system import serve
from .helpers import CONFIGS, make_cfg, req_events

S, F, D = "req_schedule", "req_first_token", "req_finish"
QUICK = ["experiment=serving_quick", "workload.max_requests=300"]


def _batch_records(log, replica=None):
    return [(t, k, d) for t, k, s, d in log
            if k in ("batch", "batch_span", "kv_sample") and (replica is None or s == replica)]


@pytest.mark.parametrize("span_cut", ["own", "any"])
@pytest.mark.parametrize("b_arrives, records, events", [
    # B lands before the span's second iteration starts: a plain one-iteration record at 1; at
    # 2 B prefills beside A's decode, at 3 both decode (B's last token), from 4 A alone, a span
    # of 2 to its finish at 6
    (1.5, [(0.0, "batch", ()), (1.0, "batch", ()), (2.0, "batch", ()), (3.0, "batch", ()), (4.0, "batch_span", (2,))],
     [(0.0, S, 0), (1.0, F, 0), (2.0, S, 2), (3.0, F, 2), (4.0, D, 2), (6.0, D, 0)]),
    # B lands after three starts (1, 2, 3): a span of 3 ending at 4; then B's prefill, and
    # both decode their last tokens at 5
    (3.5, [(0.0, "batch", ()), (1.0, "batch_span", (3,)), (4.0, "batch", ()), (5.0, "batch", ())],
     [(0.0, S, 0), (1.0, F, 0), (4.0, S, 2), (5.0, F, 2), (6.0, D, 0), (6.0, D, 2)]),
])
def test_an_arrival_cuts_the_span_it_lands_in(span_cut, b_arrives, records, events):
    # 1 s per iteration, two replicas in turn. A (4 prompt tokens, 6 out) goes to replica 0,
    # prefills at 0 (first token at 1) and decodes from 1: a span of 5 up to its finish,
    # planned before B (replica 0 too) arrives; X (replica 1) arrives at 0.5, before it
    r = simulate(make_cfg([[0, 4, 6], [0.5, 4, 1], [b_arrives, 4, 2]],
                          serving={"span_cut": span_cut, "replicas": 2}), seed=0)
    mine = _batch_records(r.log, 0)
    assert [(t, k, d[:1] if k == "batch_span" else ()) for t, k, d in mine if k != "kv_sample"] == records
    decode = [d[:4] for t, k, d in mine if k == "batch" and t == 1.0]
    assert decode in ([], [(0, 1, 1, 1.0)])  # a cut to one iteration: a pure decode of 1 s
    assert [e for e in req_events(r.log) if e[2] != 1] == events


@pytest.mark.parametrize("span_cut, spans", [("own", [(1.0, 5)]), ("any", [(1.0, 2), (3.0, 3)])])
def test_an_arrival_elsewhere_cuts_no_span_here(span_cut, spans):
    # A's span on replica 0 runs 5 iterations from 1; X arrives at 2.5 on replica 1. Only the
    # old rule cuts A's span there (after its iterations at 1 and 2); A finishes at 6 either way
    r = simulate(make_cfg([[0, 4, 6], [2.5, 4, 1]], serving={"span_cut": span_cut, "replicas": 2}), seed=0)
    assert [(t, d[0]) for t, k, d in _batch_records(r.log, 0) if k == "batch_span"] == spans
    assert req_events(r.log) == [(0.0, S, 0), (1.0, F, 0), (2.5, S, 1), (3.5, F, 1), (3.5, D, 1), (6.0, D, 0)]


@pytest.mark.parametrize("batching", ["continuous", "chunked_prefill"])
def test_a_replicas_records_are_those_of_a_run_fed_only_its_requests(batching):
    # three replicas, round robin: replica j gets the requests at positions j, j+3, ...; a
    # one-replica run of exactly those gives the same batch and KV records at the same times
    cfg = compose(QUICK + ["serving.replicas=3", f"batching={batching}", "workload.rate_scale=3"])
    parts = build_serving(cfg, rngs(0))
    reqs = sorted(parts.requests, key=lambda q: (q.arrival_s, q.id))
    multi = serve(reqs, parts.make_replica, RoundRobin(), parts.spec)
    one = dataclasses.replace(parts.spec, replicas=1)
    for j in range(3):
        mine = reqs[j::3]
        alone = serve(mine, parts.make_replica, RoundRobin(), one)
        assert _batch_records(multi.log, j) == _batch_records(alone.log, 0)
        ids = {q.id for q in mine}
        assert [e for e in req_events(multi.log) if e[2] in ids] == req_events(alone.log)
        assert len(_batch_records(alone.log)) > 100


@pytest.mark.parametrize("router", ["round_robin", "least_kv", "least_outstanding"])
def test_per_request_results_are_those_of_cuts_at_any_arrival(router):
    # the routers that read replica state (KV use, outstanding requests) see it as the old
    # rule left it: the same replica for every request, the same times up to the rounding of
    # a span's sum taken in one piece instead of several
    base = QUICK + ["serving.replicas=2", f"router={router}"]
    own = run_config(compose(base)).tables
    old = run_config(compose(base + ["serving.span_cut=any"])).tables
    a, b = own["requests"], old["requests"]
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 300
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=0, atol=1e-9, equal_nan=True)
        else:
            assert a[c].equals(b[c]), c
    assert len(own["batches"]) < 0.85 * len(old["batches"])
    assert own["batches"]["n_iters"].sum() == old["batches"]["n_iters"].sum()


def test_cuts_at_any_arrival_reproduce_the_rule_before():
    # the digest case of the least-KV router on two replicas, as the code before spans were
    # cut only by their own replica's arrivals produced it (its tables, summarised)
    t = run_config(compose(QUICK + ["serving.replicas=2", "router=least_kv", "serving.span_cut=any"]))
    req, bat = t.tables["requests"], t.tables["batches"]
    assert len(bat) == 1102
    assert float(req["finish_s"].sum()) == 15519.749128312686
    assert float(bat["duration_s"].sum()) == 147.3859395382779
    assert req["replica"].value_counts().to_dict() == {0: 155, 1: 145}
    assert t.summary["makespan_s"] == 87.09098244772649


def test_span_cut_is_checked():
    from llmos_sim.validate import ConfigError

    with pytest.raises(ConfigError, match="serving.span_cut"):
        simulate(make_cfg([[0, 4, 6]], serving={"span_cut": "sometimes"}), seed=0)


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 300), st.integers(1, 200)), min_size=1, max_size=25),
       replicas=st.integers(2, 3), router=st.sampled_from(["round_robin", "least_kv", "least_outstanding"]),
       batching=st.sampled_from(["continuous", "chunked_prefill"]), blocks=st.sampled_from([400, 40]),
       memory=st.sampled_from(["paged", "ideal"]))
def test_cuts_at_own_arrivals_change_no_request(rows, replicas, router, batching, blocks, memory):
    # random requests, routers, batching, tight or ample KV: the same requests on the same
    # replicas with the same tokens and preemptions, times within rounding, and as many
    # iterations, in fewer or as many records
    rows = [list(r) for r in sorted(rows)]
    out = {}
    for cut in ("own", "any"):
        cfg = make_cfg(rows, batching=batching, router=router, model="tiny", cost=None,
                       memory=OmegaConf.load(CONFIGS / "memory" / f"{memory}.yaml"),
                       serving={"replicas": replicas, "span_cut": cut, "num_kv_blocks": blocks})
        out[cut] = simulate(cfg, seed=0)
    a, b = out["own"].tables["requests"], out["any"].tables["requests"]
    for c in a.columns:
        if a[c].dtype.kind == "f":
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12, atol=1e-9, equal_nan=True)
        else:
            assert a[c].equals(b[c]), c
    assert out["own"].summary["n_iterations"] == out["any"].summary["n_iterations"]
    assert out["own"].summary["n_batch_records"] <= out["any"].summary["n_batch_records"]


class _AskedRoundRobin(RoundRobin):
    """Round robin asked at each arrival, as a router that reads replica state is."""

    routes_ahead = False


ROOF = {"_target_": "llmos_sim.serving.cost.RooflineCost", "_partial_": True, "mfu": 0.5, "mbu": 0.7, "overhead_s": 0.003}
PROFILED = OmegaConf.load(CONFIGS / "cost" / "profiled.yaml")


def _burst_rows(bursts):
    """``[arrival_s, prompt, output]`` rows from ``(start_s, [(gap_s, prompt, output), ...])``
    bursts: requests of a burst a gap apart (gap 0: together), sorted by arrival."""
    rows = []
    for start, reqs in bursts:
        t = start
        for gap, p, o in reqs:
            t += gap
            rows.append([t, p, o])
    return sorted(rows)


@settings(max_examples=40, deadline=None)
@given(bursts=st.lists(st.tuples(st.floats(0, 20), st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.3]),
                                                                       st.integers(1, 900), st.integers(1, 300)),
                                                             min_size=1, max_size=12)), min_size=1, max_size=5),
       replicas=st.integers(1, 8), batching=st.sampled_from(["continuous", "chunked_prefill"]),
       preemption=st.sampled_from(["recompute", "swap"]), blocks=st.sampled_from([24, 60, 400]),
       memory=st.sampled_from(["paged", "ideal"]), cost=st.sampled_from(["roofline", "profiled"]),
       async_scheduling=st.booleans())
def test_routing_ahead_is_routing_on_arrival(bursts, replicas, batching, preemption, blocks, memory, cost,
                                             async_scheduling):
    # round robin routes every request at set-up, so each replica plans its decode spans up to
    # its own next arrival and none is ever cut: the log is the one of round robin asked at
    # each arrival (spans cut when an arrival lands), record for record, on bursts of
    # requests, caches too small for some requests (they fail on arrival and cut nothing) and
    # tight enough to preempt, on either cost model
    rows = _burst_rows(bursts)
    cfg = make_cfg(rows, batching=batching, batching_over={"preemption": preemption}, model="llama31_8b",
                   gpu="rtx_pro_6000" if cost == "profiled" else "rtx4090",
                   cost=PROFILED if cost == "profiled" else ROOF,
                   memory=OmegaConf.load(CONFIGS / "memory" / f"{memory}.yaml"),
                   serving={"replicas": replicas, "num_kv_blocks": blocks, "async_scheduling": async_scheduling})
    logs = {}
    for router in (RoundRobin, _AskedRoundRobin):
        parts = build_serving(cfg, rngs(0))
        res = serve(parts.requests, parts.make_replica, router(), parts.spec)
        # (one replica: both plan up to the next arrival; several: only round robin does)
        assert all(rep.own_cuts == (replicas > 1 and router is _AskedRoundRobin) for rep in res.extra["replicas"])
        logs[router] = res.log.records
    assert logs[RoundRobin] == logs[_AskedRoundRobin]


def test_a_router_that_reads_loads_cannot_route_ahead():
    class Reading(RoundRobin):
        uses_loads = True

    parts = build_serving(make_cfg([[0, 4, 6]], serving={"replicas": 2}), rngs(0))
    with pytest.raises(ValueError, match="Reading declares routes_ahead but reads the replicas' loads"):
        serve(parts.requests, parts.make_replica, Reading(), parts.spec)
