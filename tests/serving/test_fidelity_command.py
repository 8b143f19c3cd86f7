"""``python -m llmos_sim.fidelity``: a run folder's deployment is built from its meta.json, its
requests replayed and scored; a folder written from a simulation replays to itself."""
from __future__ import annotations

import json

import numpy as np
import pytest

from llmos_sim import fidelity as F
from llmos_sim.workload.requests import DATA_DIR

QWEN_MOE_DP2_EP = dict(model="Qwen/Qwen3-30B-A3B-Instruct-2507", tensor_parallel_size=1, data_parallel_size=2,
                       enable_expert_parallel=True, max_num_seqs=16, max_num_batched_tokens=1024, dtype="bfloat16")
QWEN_DENSE_TP2 = dict(model="Qwen/Qwen3-32B", tensor_parallel_size=2, data_parallel_size=1,
                      enable_expert_parallel=False, max_num_seqs=8, max_num_batched_tokens=512, dtype="bfloat16")


def _requests(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(50, 900, n), rng.integers(2, 60, n), np.cumsum(rng.exponential(0.05, n)) + 1.7e9


@pytest.mark.parametrize("engine", [QWEN_MOE_DP2_EP, QWEN_DENSE_TP2], ids=["qwen3-30b-a3b-dp2-ep", "qwen3-32b-tp2"])
def test_a_synthesized_run_replays_to_itself(tmp_path, engine):
    p, o, a = _requests()
    F.synthesize_run(tmp_path / "run", engine, "RTXPRO6000", p, o, a)
    f = F.replay(tmp_path / "run")
    d = f.deployment
    assert (d["tp"], d["dp"], d["expert_parallel"]) == (engine["tensor_parallel_size"], engine["data_parallel_size"],
                                                      engine["enable_expert_parallel"])
    assert (d["max_num_seqs"], d["max_num_batched_tokens"]) == (engine["max_num_seqs"], engine["max_num_batched_tokens"])
    assert d["gpu"] == "RTXPRO6000" and d["model"] in engine["model"]
    for k in F.METRICS:
        assert f.summary[f"{k}_mape"] < 1e-5
    assert f.summary["series_running"]["mae"] == 0.0
    # the same folder read as another deployment is not reproduced: the settings matter
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    meta["engine_kwargs"]["tensor_parallel_size" if engine is QWEN_DENSE_TP2 else "enable_expert_parallel"] = (
        1 if engine is QWEN_DENSE_TP2 else False)
    (tmp_path / "run" / "meta.json").write_text(json.dumps(meta))
    assert F.replay(tmp_path / "run").summary["e2e_s_mape"] > 0.01


def test_dp_replicas_share_requests_and_ep_costs(tmp_path):
    p, o, a = _requests(16, seed=1)
    F.synthesize_run(tmp_path / "run", QWEN_MOE_DP2_EP, "RTXPRO6000", p, o, a)
    f = F.replay(tmp_path / "run")
    reps = f.result.tables["requests"]["replica"]
    assert set(reps) == {0.0, 1.0}
    costs = [r.cost for r in f.result.extra["replicas"]]
    assert all(c.dp == 2 and c.expert_parallel and c._ep_ranks == 2 for c in costs)


def test_command_line_writes_the_table_parquet_and_plots(tmp_path, capsys):
    p, o, a = _requests(12, seed=2)
    F.synthesize_run(tmp_path / "run", QWEN_DENSE_TP2, "RTXPRO6000", p, o, a)
    assert F.main([str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "TTFT per-request MAPE" in out and "tp=2 dp=1" in out
    for f in ("table.csv", "table.md", "per_request.parquet", "timeseries.csv", "summary.json"):
        assert (tmp_path / "out" / f).is_file()
    import pandas as pd
    t = pd.read_parquet(tmp_path / "out" / "per_request.parquet")
    assert len(t) == 12 and {"sim_ttft_s", "err_e2e_s"} <= set(t.columns)
    assert F.main([str(tmp_path / "run"), "--cost", "roofline", "--out", str(tmp_path / "r"), "--no-plots"]) == 0


def test_bad_run_folders_are_named(tmp_path, capsys):
    assert F.main([str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.jsonl").write_text("")
    (run / "meta.json").write_text('{"engine_kwargs": {"model": "acme/Unknown-7B"}}')
    with pytest.raises(F.RunFolderError, match="no model preset"):
        F.build_config(F.RunFolder.read(run))
    (run / "meta.json").write_text('{"engine_kwargs": {"model": "meta-llama/Llama-3.1-8B", "max_num_seqs": 0}}')
    with pytest.raises(F.RunFolderError, match="max_num_seqs must be an integer >= 1"):
        F.RunFolder.read(run).deployment()
    (run / "meta.json").write_text('{"engine_kwargs": {"model": ')
    with pytest.raises(F.RunFolderError, match=r"meta.json:1:\d+: not valid JSON"):
        F.RunFolder.read(run)


def test_shipped_runs_deployments():
    d4 = F.RunFolder.read(DATA_DIR / "vllm_rtx4090_llama31_8b").deployment()
    assert (d4["num_gpu_blocks"], d4["prefix_caching"], d4["async_scheduling"], d4["max_num_seqs"]) == (2588, True, True, 256)
    # vLLM's block pool keeps one of the 2,588 as its null block: 2,587 can be allocated
    cfg4, dep4 = F.build_config(F.RunFolder.read(DATA_DIR / "vllm_rtx4090_llama31_8b"))
    assert (dep4["kv_blocks"], dep4["kv_blocks_usable"], cfg4.serving.num_kv_blocks) == (2588, 2587, 2587)
    cfg, dep = F.build_config(F.RunFolder.read(DATA_DIR / "vllm_rtxpro6000_llama31_8b"))
    assert dep["gpu"] == "RTXPRO6000" and dep["max_num_seqs"] == 128 and dep["num_gpu_blocks"] is None
    # no stated block count: from memory, 0.9 · 96 GiB − 16.06 GB of weights − 2 GB, per 16-token block of 128 KiB
    assert dep["kv_blocks"] == int((0.9 * 96 * 2**30 - 8030261248 * 2 - 2e9) // (16 * 131072))
    assert cfg.serving.num_kv_blocks == dep["kv_blocks"] - 1


def test_the_null_block_is_not_allocatable(tmp_path):
    """A run stating 4 blocks of 16 tokens: vLLM can allocate 3 (one is its null block), so a
    request of 40 prompt + 9 output tokens (48 held at most: 3 blocks) runs, and one of 41 + 9
    (49: 4 blocks) is refused as too long for the cache."""
    engine = dict(QWEN_DENSE_TP2, max_num_seqs=2)
    F.synthesize_run(tmp_path / "fits", engine, "RTXPRO6000", [40], [9], [1.7e9], kv_cache={"num_gpu_blocks": 4})
    f = F.replay(tmp_path / "fits")
    assert f.result.extra["replicas"][0].kv.total_blocks == 3
    assert f.result.tables["requests"]["finish_s"].notna().all()
    with pytest.raises(ValueError, match="every request must have finished"):
        F.synthesize_run(tmp_path / "long", engine, "RTXPRO6000", [41], [9], [1.7e9], kv_cache={"num_gpu_blocks": 4})


def test_cuda_graph_sizes_from_meta_json(tmp_path):
    """The RTX 4090 run states its capture sizes; the RTX PRO 6000 run states none: vLLM's
    default for max_num_seqs 128 (1, 2, 4, every 8 up to 256); enforce_eager: no graphs."""
    d4 = F.RunFolder.read(DATA_DIR / "vllm_rtx4090_llama31_8b").deployment()
    assert d4["cuda_graph_sizes"] == [1, 2, 4, *range(8, 257, 8), *range(272, 513, 16)]
    d6 = F.RunFolder.read(DATA_DIR / "vllm_rtxpro6000_llama31_8b").deployment()
    assert d6["cuda_graph_sizes"] == [1, 2, 4, *range(8, 257, 8)]
    p, o, a = _requests(4)
    F.synthesize_run(tmp_path / "run", dict(QWEN_DENSE_TP2, enforce_eager=True), "RTXPRO6000", p, o, a)
    run = F.RunFolder.read(tmp_path / "run")
    assert run.deployment()["cuda_graph_sizes"] is None
    run.engine = {**run.engine, "enforce_eager": False, "cudagraph_capture_sizes": [4, "8"]}
    with pytest.raises(F.RunFolderError, match="cudagraph_capture_sizes"):
        run.deployment()


def test_a_run_without_engine_samples_and_engine_arrival(tmp_path):
    p, o, a = _requests(10, seed=3)
    F.synthesize_run(tmp_path / "run", QWEN_DENSE_TP2, "RTXPRO6000", p, o, a)
    (tmp_path / "run" / "timeseries.csv").unlink()
    f = F.replay(tmp_path / "run", arrival="engine")
    assert f.series is None and f.summary["e2e_s_mape"] < 1e-5
    assert not any("series" in q for q in f.table["quantity"])
    with pytest.raises(F.RunFolderError, match="arrival must be"):
        F.replay(tmp_path / "run", arrival="later")


def test_kv_series_grows_a_block_at_a_time(tmp_path):
    """One request, 40 prompt + 160 output tokens, 100 allocatable blocks (KV-% = blocks held):
    each engine sample holds ceil((40 + decode iterations begun) / 16) blocks, as vLLM's cache
    grows; a fast-forwarded decode span would have taken its whole growth at its start."""
    F.synthesize_run(tmp_path / "run", dict(QWEN_DENSE_TP2, max_num_seqs=1), "RTXPRO6000", [40], [160], [1.7e9],
                     kv_cache={"num_gpu_blocks": 101})
    f = F.replay(tmp_path / "run")
    b = f.result.tables["batches"].infer_objects()
    assert (b["n_iters"] == 1).all()  # iteration by iteration
    starts = b["time_s"].to_numpy(float)
    ts = f.series
    ticks = ts["sim_t"].to_numpy(float)
    busy = ticks < float(f.result.tables["requests"]["finish_s"].iloc[0])
    assert busy.sum() >= 2
    begun = np.searchsorted(starts, ticks[busy], side="right")  # iterations begun by each tick (1: the prefill)
    assert list(ts["sim_kv_cache_pct"].to_numpy()[busy]) == pytest.approx(list(np.ceil((40 + begun - 1) / 16)))
