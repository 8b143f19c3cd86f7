"""Request loaders on the shipped files, and clear errors on malformed input."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from llmos_sim.workload.requests import (ArxivSummarization, AzureLLMTrace, ExplicitRequests, Request,
                                         SyntheticRequests, VllmBenchmarkRequests, WorkloadError)


@pytest.mark.parametrize("loader,n", [(lambda: AzureLLMTrace("conv"), 19366), (lambda: AzureLLMTrace("code"), 8819),
                                      (lambda: ArxivSummarization(rate_per_s=5.0), 28257),
                                      (lambda: VllmBenchmarkRequests(), 300)])
def test_shipped_files_load_whole(loader, n):
    reqs = loader().requests(np.random.default_rng(0))
    assert len(reqs) == n
    a = np.array([r.arrival_s for r in reqs])
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0)
    assert [r.id for r in reqs] == list(range(n))
    assert all(r.prompt_tokens >= 1 and r.output_tokens >= 1 for r in reqs)


def test_azure_rate_scale_and_cap():
    base = AzureLLMTrace("conv", max_requests=100).requests()
    fast = AzureLLMTrace("conv", rate_scale=2.0, max_requests=100).requests()
    assert len(base) == 100
    assert fast[99].arrival_s == pytest.approx(base[99].arrival_s / 2)
    assert (base[0].prompt_tokens, base[0].output_tokens, base[1].prompt_tokens) == (374, 44, 396)
    assert base[1].arrival_s == pytest.approx(4.3145789)


def test_vllm_requests_relative_arrivals():
    r = VllmBenchmarkRequests().requests()
    assert (r[0].prompt_tokens, r[0].output_tokens) == (2358, 531)
    assert r[1].arrival_s == pytest.approx(0.2650914, abs=1e-6)


def test_poisson_arrivals_are_seeded():
    a = [x.arrival_s for x in ArxivSummarization(2.0, max_requests=50).requests(np.random.default_rng(1))]
    b = [x.arrival_s for x in ArxivSummarization(2.0, max_requests=50).requests(np.random.default_rng(1))]
    c = [x.arrival_s for x in ArxivSummarization(2.0, max_requests=50).requests(np.random.default_rng(2))]
    assert a == b and a != c
    s = SyntheticRequests(n=20, rate_per_s=0).requests(np.random.default_rng(0))
    assert all(x.arrival_s == 0 for x in s) and all(128 <= x.prompt_tokens <= 1024 for x in s)


def _write(tmp_path, name, text, gz=False):
    p = tmp_path / name
    if gz:
        with gzip.open(p, "wt") as f:
            f.write(text)
    else:
        p.write_text(text)
    return str(p)


def test_malformed_csv_names_file_and_line(tmp_path):
    p = _write(tmp_path, "t.csv.gz", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
               "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,12x,5\n", gz=True)
    with pytest.raises(WorkloadError, match=r"t\.csv\.gz: line 3: column 'ContextTokens'"):
        AzureLLMTrace("conv", path=p).requests()
    p = _write(tmp_path, "u.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nnot-a-time,1,1\n")
    with pytest.raises(WorkloadError, match=r"u\.csv: line 2: bad TIMESTAMP"):
        AzureLLMTrace("conv", path=p).requests()
    p = _write(tmp_path, "v.csv", "TIMESTAMP,Context\n2023-11-16 18:15:46,1\n")
    with pytest.raises(WorkloadError, match=r"v\.csv: line 1: missing column"):
        AzureLLMTrace("conv", path=p).requests()
    p = _write(tmp_path, "w.csv", "num_prefill_tokens,num_decode_tokens\n10,5\n10,0\n")
    with pytest.raises(WorkloadError, match=r"w\.csv: line 3: column 'num_decode_tokens'"):
        ArxivSummarization(path=p).requests(np.random.default_rng(0))
    p = _write(tmp_path, "x.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
               "2023-11-16 18:15:50.9951690,99999999999999999999999,109\n")  # beyond int64
    with pytest.raises(WorkloadError, match=r"x\.csv: line 3: column 'ContextTokens' must be an integer in \[1, 2\*\*53\]"):
        AzureLLMTrace("conv", path=p).requests()


def test_malformed_jsonl_names_file_and_line(tmp_path):
    good = '{"request_id": "a", "input_toks": 5, "output_toks": 3, "arrival_time": 1.0}\n'
    p = _write(tmp_path, "r.jsonl", good + "{not json\n")
    with pytest.raises(WorkloadError, match=r"r\.jsonl: line 2: not valid JSON"):
        VllmBenchmarkRequests(path=p).requests()
    p = _write(tmp_path, "s.jsonl", good + '{"request_id": "b", "input_toks": 5, "arrival_time": 2.0}\n')
    with pytest.raises(WorkloadError, match=r"s\.jsonl: line 2: missing key 'output_toks'"):
        VllmBenchmarkRequests(path=p).requests()
    p = _write(tmp_path, "t.jsonl", good.replace('"input_toks": 5', '"input_toks": -1'))
    with pytest.raises(WorkloadError, match=r"t\.jsonl: line 1: 'input_toks'"):
        VllmBenchmarkRequests(path=p).requests()
    with pytest.raises(WorkloadError, match="no such file"):
        VllmBenchmarkRequests(path=str(tmp_path / "missing.jsonl"))


def test_request_validation():
    with pytest.raises(ValueError):
        Request(0, 0.0, 0, 1)
    with pytest.raises(ValueError):
        Request(0, -1.0, 1, 1)
    assert ExplicitRequests([[0, 3, 2, 7]]).requests()[0].priority == 7
