"""Malformed inputs for every loader and invalid values for every config key, and the judge
that says how each one ended.

Used by the fuzz tests (a few examples each) and by ``benchmarks/fuzz_inputs.py`` (hundreds).

Outcomes:

- ``named``: an :class:`~llmos_sim.validate.InputError` whose message names the file (or the
  config key);
- ``ok``: the input was valid (or a valid reading of it is possible) and the result passes the
  sanity checks (finite, non-negative times and sizes, at least one GPU, ...);
- ``unnamed``: an input error that names neither the file nor the key;
- ``raw``: any other exception (a traceback a user would see);
- ``silent``: a result although the input was invalid, or a result that fails the checks;
- ``hang``: no answer within the time limit.
"""
from __future__ import annotations

import json
import math
import random
import signal
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmos_sim.validate import INT64_MAX, InputError

OUTCOMES = ("named", "ok", "unnamed", "raw", "silent", "hang")
GOOD = ("named", "ok")


# -- the loaders under test ----------------------------------------------------------------
@dataclass(frozen=True)
class Col:
    """A column a loader must check: ``kind`` int / float / datetime / str / enum; ``low``
    the least valid value (None = any); ``options`` for enums; ``strict`` False when validity
    depends on other columns (then only the result's sanity is judged)."""

    kind: str
    low: float | None = None
    options: tuple[str, ...] = ()
    strict: bool = True
    low_open: bool = False  #: ``low`` itself is invalid (> low)
    required: bool = True  #: the loader reads it (a file without it is invalid)
    high: float = 2**53  #: the largest valid integer


@dataclass(frozen=True)
class Loader:
    """A loader: its file's text, its columns (CSV) or fields (JSON), and how to call it."""

    name: str
    suffix: str
    text: str
    cols: dict[str, Col]
    call: Callable[[Path], Any]
    json_lines: bool = False
    min_rows: int = 1  #: a file with fewer data rows is invalid


def _rng():
    return np.random.default_rng(0)


def _philly(p):
    from llmos_sim.workload import PhillyTrace

    return PhillyTrace(str(p)).jobs(_rng())


def _pollux(p):
    from llmos_sim.workload import PolluxWorkload

    return PolluxWorkload(str(p)).jobs(_rng())


def _tiresias(p):
    from llmos_sim.workload import TiresiasTrace

    return TiresiasTrace(str(p)).jobs(_rng())


def _tiresias_spec(p):
    from llmos_sim.hardware import tiresias_cluster

    return tiresias_cluster(str(p))


def _alibaba_pods(p):
    from llmos_sim.workload import AlibabaTrace

    return AlibabaTrace(str(p)).jobs(_rng())


def _alibaba_nodes(p):
    from llmos_sim.hardware import alibaba_cluster

    return alibaba_cluster(str(p))


def _azure(p):
    from llmos_sim.workload.requests import AzureLLMTrace

    return AzureLLMTrace(path=str(p)).requests()


def _arxiv(p):
    from llmos_sim.workload.requests import ArxivSummarization

    return ArxivSummarization(path=str(p)).requests(_rng())


def _vllm(p):
    from llmos_sim.workload.requests import VllmBenchmarkRequests

    return VllmBenchmarkRequests(path=str(p)).requests()


def _memtrace_csv(p):
    from llmos_sim.memtrace.trace import read_csv

    return read_csv(p)


def _snapshot(p):
    from llmos_sim.memtrace.snapshot import read_snapshot

    return read_snapshot(p)


_APPS = ("cifar10", "ncf", "bert", "deepspeech2", "yolov3", "imagenet")
_VLLM_ROW = '{{"request_id": "r{i}", "input_toks": {p}, "output_toks": {o}, "arrival_time": {t}, "queued_ts": {q}}}'
_SNAP = {"segments": [{"device": 0, "address": 0, "total_size": 2097152,
                       "blocks": [{"address": 0, "size": 1024, "state": "active_allocated"},
                                  {"address": 1024, "size": 2096128, "state": "inactive"}]}],
         "device_traces": [[{"action": "alloc", "addr": 4096, "size": 512, "time_us": 10, "stream": 0},
                            {"action": "alloc", "addr": 8192, "size": 2048, "time_us": 20, "stream": 0},
                            {"action": "free_completed", "addr": 4096, "size": 512, "time_us": 30, "stream": 0}]]}

LOADERS: dict[str, Loader] = {l.name: l for l in [
    Loader("philly", ".csv", "timestamp,duration,num_gpus,gpu_time,cluster\n"
                             "2017-10-09 07:01:55,66.0,1,66.0,11cb48\n2017-10-09 06:13:03,2951.0,2,5902.0,6214e9\n"
                             "2017-10-09 08:00:00,10.5,4,42.0,11cb48\n",
           {"timestamp": Col("datetime"), "duration": Col("float", 0), "num_gpus": Col("int", 1),
            "gpu_time": Col("float"), "cluster": Col("str")}, _philly),
    Loader("pollux", ".csv", "name,time,application,num_replicas,batch_size\ncifar10-0,107,cifar10,6,2048\n"
                             "deepspeech2-1,110,deepspeech2,6,320\nbert-2,300,bert,1,12\n",
           {"name": Col("str"), "time": Col("float", 0), "application": Col("enum", options=_APPS),
            "num_replicas": Col("int", 1), "batch_size": Col("int")}, _pollux),
    Loader("tiresias", ".csv", "job_id,num_gpu,submit_time,iterations,model_name,duration,interval\n"
                               "0,1,0,606,vgg19,164,30\n1,8,30,133,vgg11,147,23\n2,2,53,100,resnet50,90,0\n",
           {"job_id": Col("int", strict=False), "num_gpu": Col("int", 1), "submit_time": Col("float", 0),
            "iterations": Col("int"), "model_name": Col("str"), "duration": Col("float", 0),
            "interval": Col("float")}, _tiresias),
    Loader("tiresias_cluster", ".csv", "num_switch,num_node_p_switch,num_gpu_p_node,num_cpu_p_node,mem_p_node\n"
                                       "1,2,4,40,256\n",
           {"num_switch": Col("int", 1), "num_node_p_switch": Col("int", 1), "num_gpu_p_node": Col("int", 1),
            "num_cpu_p_node": Col("int", 0), "mem_p_node": Col("int", 0)}, _tiresias_spec),
    Loader("alibaba_pods", ".csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
                                   "deletion_time,scheduled_time\n"
                                   "p0,12000,16384,1,1000,,LS,Running,0,12537496,0\n"
                                   "p1,6000,12288,1,460,V100M16|V100M32,LS,Running,427061,12902960,427061\n"
                                   "p2,4000,8192,2,1000,T4,BE,Succeeded,500000,600000,500100\n",
           {"name": Col("str"), "cpu_milli": Col("int", 0), "memory_mib": Col("int", 0),
            "num_gpu": Col("int", 0, strict=False), "gpu_milli": Col("int", 0, strict=False),
            "gpu_spec": Col("str"), "qos": Col("str"), "pod_phase": Col("str"), "creation_time": Col("float"),
            "deletion_time": Col("float", strict=False), "scheduled_time": Col("float", strict=False)},
           _alibaba_pods),
    Loader("alibaba_nodes", ".csv", "sn,cpu_milli,memory_mib,gpu,model\nn0,64000,262144,2,P100\n"
                                    "n1,96000,786432,8,G2\n",
           {"sn": Col("str"), "cpu_milli": Col("int", 0), "memory_mib": Col("int", 0),
            "gpu": Col("int", 1), "model": Col("str", strict=False)}, _alibaba_nodes),
    Loader("azure", ".csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
                            "2023-11-16 18:15:50.9951690,396,109\n2023-11-16 18:15:51.0000000,10,1\n",
           {"TIMESTAMP": Col("datetime"), "ContextTokens": Col("int", 1), "GeneratedTokens": Col("int", 1)}, _azure),
    Loader("arxiv", ".csv", "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n3772,54,3826,69.8\n"
                            "2015,156,2171,12.9\n10,1,11,10.0\n",
           {"num_prefill_tokens": Col("int", 1), "num_decode_tokens": Col("int", 1), "num_total_tokens": Col("str", required=False),
            "pd_ratio": Col("str", required=False)}, _arxiv),
    Loader("memtrace_csv", ".csv", "time_s,op,id,nbytes\n0.0,alloc,1,1024\n0.5,alloc,2,4096\n1.0,free,1,1024\n"
                                   "2.0,free,2,\n",
           {"time_s": Col("float", strict=False), "op": Col("enum", options=("alloc", "free")), "id": Col("int"),
            "nbytes": Col("int", 0, strict=False)}, _memtrace_csv, min_rows=0),
    Loader("vllm_jsonl", ".jsonl", "\n".join(_VLLM_ROW.format(i=i, p=p, o=o, t=t, q=q) for i, (p, o, t, q) in
                                             enumerate([(2358, 531, 1787267980.08, 27536.6), (1034, 769, 1787267980.3, 27537.0),
                                                        (5, 1, 1787267981.0, 27538.0)])) + "\n",
           {"input_toks": Col("int", 1), "output_toks": Col("int", 1), "arrival_time": Col("float"),
            "request_id": Col("str"), "queued_ts": Col("float", strict=False)}, _vllm, json_lines=True),
    Loader("snapshot_json", ".json", json.dumps(_SNAP),
           {"addr": Col("int", 0, high=2**64 - 1), "size": Col("int", 0, high=2**63 - 1), "time_us": Col("float", strict=False),
            "action": Col("str")}, _snapshot, json_lines=True),
]}

#: replacement tokens for a CSV cell: always invalid for numbers, negative, fractional, huge
BAD_TOKENS = ("", "abc", "nan", "NaN", "inf", "-inf", "1e400", "-1", "-0.5", "1.5", "99999999999999999999999",
              "9223372036854775808", "0x1F", " ", "null", "None", "true", "1,5", "\"\"", "１２")
#: replacement values for a JSON field
BAD_JSON = ("abc", None, -1, -0.5, 1.5, 10**30, 2**63, True, [], {}, "1e400", float("inf"), float("nan"), "")


def token_valid(col: Col, token: Any) -> bool | None:
    """Is ``token`` valid for ``col``? None when it depends on other columns (not strict)."""
    if not col.strict:
        return None
    if col.kind in ("str",):
        return None if isinstance(token, str) else None
    if col.kind == "enum":
        return isinstance(token, str) and token.strip() in col.options
    if col.kind == "datetime":
        return None  # many spellings parse; the result's sanity decides
    if isinstance(token, bool) or token is None or isinstance(token, (list, dict)):
        return False
    try:
        v = float(token.strip()) if isinstance(token, str) else float(token)
    except (ValueError, OverflowError):
        return False
    if isinstance(token, str) and (token.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity")
                                   or token.strip() == ""):
        return False
    if not math.isfinite(v):
        return False
    if col.kind == "int" and (v != int(v) or abs(v) > col.high):
        return False
    if col.kind == "int" and isinstance(token, str) and not _plain_int(token.strip()):
        return None  # "1e3", "1.0": a loader may read these as integers or not
    if col.low is not None and (v < col.low or (col.low_open and v == col.low)):
        return False
    return True


def _plain_int(s: str) -> bool:
    return s.lstrip("+-").isdigit()


# -- mutations of a loader's file ----------------------------------------------------------
@dataclass
class Case:
    """One malformed input: its bytes, what was done, and whether it must be refused
    (``expect`` ``error``) or may be read (``either``: the result is judged on its sanity)."""

    loader: str
    what: str
    data: bytes
    expect: str  # "error" | "either"


def _csv_rows(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.strip("\n").split("\n")]


def _join(rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in rows) + "\n").encode()


MUTATIONS = ("empty", "header_only", "truncate", "drop_column", "bad_cell", "invalid_utf8", "extra_field",
             "missing_field", "garbage", "header_as_row", "shuffle_header", "bad_json_field", "drop_json_key",
             "not_object")


def mutate(loader: Loader, kind: str, r: random.Random) -> Case:
    """A ``kind`` mutation of ``loader``'s valid file, choices drawn from ``r``."""
    text = loader.text
    if kind == "empty":
        return Case(loader.name, "empty file", b"", "error")
    if kind == "truncate":
        cut = r.randrange(0, len(text))
        return Case(loader.name, f"truncated at byte {cut}", text[:cut].encode(), "either" if cut else "error")
    if kind == "invalid_utf8":
        pos = r.randrange(0, len(text))
        bad = r.choice([b"\xff", b"\xfe", b"\xc3\x28", b"\x80", b"\xed\xa0\x80"])
        return Case(loader.name, f"invalid UTF-8 at byte {pos}", text[:pos].encode() + bad + text[pos:].encode(), "error")
    if kind == "garbage":
        n = r.randrange(1, 200)
        data = bytes(r.randrange(0, 256) for _ in range(n))
        return Case(loader.name, f"{n} random bytes", data, "either")
    if loader.json_lines:
        return _mutate_json(loader, kind, r)
    rows = _csv_rows(text)
    header, body = rows[0], rows[1:]
    if kind == "header_only":
        return Case(loader.name, "header only", _join([header]), "error" if loader.min_rows else "either")
    if kind == "drop_column":
        j = r.choice([i for i, c in enumerate(header) if c in loader.cols])
        return Case(loader.name, f"column {header[j]!r} dropped",
                    _join([[c for i, c in enumerate(row) if i != j] for row in rows]),
                    "error" if loader.cols[header[j]].required else "either")
    if kind in ("bad_cell", "bad_json_field", "drop_json_key", "not_object"):
        i, j = r.randrange(len(body)), r.randrange(len(header))
        token = r.choice(BAD_TOKENS)
        if token and "," in token:
            token = f'"{token}"'
        new = [list(row) for row in body]
        new[i][j] = token
        col = loader.cols.get(header[j])
        valid = token_valid(col, token.strip('"')) if col is not None else None
        if token == "\"\"" and col is not None:
            valid = token_valid(col, "")
        return Case(loader.name, f"line {i + 2} column {header[j]!r} = {token!r}", _join([header] + new),
                    "error" if valid is False else "either")
    if kind == "extra_field":
        i = r.randrange(len(body))
        new = [list(row) for row in body]
        new[i].append("7")
        return Case(loader.name, f"line {i + 2}: one field too many", _join([header] + new), "error")
    if kind == "missing_field":
        i = r.randrange(len(body))
        new = [list(row) for row in body]
        new[i] = new[i][:-1]
        return Case(loader.name, f"line {i + 2}: one field missing", _join([header] + new), "error")
    if kind == "header_as_row":
        i = r.randrange(len(body) + 1)
        new = body[:i] + [header] + body[i:]
        numeric = any(c.kind in ("int", "float", "enum") and c.strict for c in loader.cols.values())
        return Case(loader.name, f"header repeated as data line {i + 2}", _join([header] + new),
                    "error" if numeric else "either")
    if kind == "shuffle_header":
        h = list(header)
        r.shuffle(h)
        return Case(loader.name, f"header reordered {h}", _join([h] + body), "either")
    raise ValueError(kind)


def _mutate_json(loader: Loader, kind: str, r: random.Random) -> Case:
    """JSON mutations: a field given a bad value, a key dropped, an entry that is not an object."""
    if loader.name == "snapshot_json":
        snap = json.loads(loader.text)
        entries = snap["device_traces"][0]
        keys, required, where, empty = ["addr", "size", "time_us", "action"], {"addr"}, "device_traces[0][{}]", b"{}"
        dump = lambda: _dumps(snap)  # noqa: E731
    else:
        entries = [json.loads(x) for x in loader.text.strip().split("\n")]
        keys, where, empty = list(loader.cols), "line {}", b"\n\n"
        required = {"input_toks", "output_toks", "arrival_time", "request_id"}
        dump = lambda: _dumps_lines(entries)  # noqa: E731
    k = r.randrange(len(entries))
    at = where.format(k + (0 if loader.name == "snapshot_json" else 1))
    if kind in ("bad_json_field", "bad_cell", "shuffle_header", "header_as_row"):
        key, val = r.choice(keys), r.choice(BAD_JSON)
        entries[k][key] = val
        valid = token_valid(loader.cols[key], val)
        return Case(loader.name, f"{at}: {key} = {val!r}", dump(), "error" if valid is False else "either")
    if kind in ("drop_json_key", "drop_column", "missing_field"):
        key = r.choice(sorted(required | ({"size", "time_us", "action"} if loader.name == "snapshot_json" else set())))
        entries[k].pop(key)
        return Case(loader.name, f"{at} without {key!r}", dump(), "error" if key in required else "either")
    if kind in ("not_object", "extra_field"):
        entries[k] = r.choice([1, "alloc", None, [1, 2]])
        return Case(loader.name, f"{at} = {entries[k]!r}", dump(), "error")
    if kind == "header_only":
        return Case(loader.name, "no entries", empty, "error")
    raise ValueError(kind)


def _dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def _dumps_lines(lines) -> bytes:
    return ("\n".join(json.dumps(x) for x in lines) + "\n").encode()


# -- the judge -----------------------------------------------------------------------------
class Hang(Exception):
    """The time limit passed."""


@contextmanager
def time_limit(seconds: float):
    """Raise :class:`Hang` after ``seconds`` (main thread, SIGALRM)."""
    def _alarm(signum, frame):
        raise Hang()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def sane(result: Any) -> str | None:
    """What is wrong with a loader's result (None = nothing)."""
    from llmos_sim.types import Cluster, Job
    from llmos_sim.workload.requests import Request

    def fin(x, low=0.0):
        return x is not None and math.isfinite(float(x)) and float(x) >= low

    if isinstance(result, Cluster):
        if not result.devices:
            return "a cluster without devices"
        for d in result.devices:
            if not (fin(d.spec.flops) and d.spec.flops > 0 and fin(d.spec.mem_bytes)):
                return f"device {d.index}: {d.spec}"
        for n in result.nodes:
            if not (fin(n.cpus) and fin(n.host_mem_bytes)):
                return f"node {n.index}: cpus {n.cpus}, host memory {n.host_mem_bytes}"
        return None
    if hasattr(result, "columns"):  # a memory trace
        df = result
        if len(df) and (not np.isfinite(df["time_s"].to_numpy()).all() or (df["nbytes"] < 0).any()
                        or (np.diff(df["time_s"].to_numpy()) < 0).any()):
            return "trace with non-finite or decreasing times or negative sizes"
        return None
    items = list(result)
    if not items:
        return "no jobs or requests"
    for x in items:
        if isinstance(x, Job):
            if not (fin(x.arrival_s) and fin(x.work_flops) and x.gpus >= 1 and 0 < x.gpu_milli <= 1000
                    and fin(x.mem_bytes_per_device) and fin(x.preprocess_s) and fin(x.output_s)
                    and all(fin(v) for v in x.demand.values())
                    and (x.duration_hint_s is None or fin(x.duration_hint_s))):
                return f"job {x}"
        elif isinstance(x, Request):
            if not (fin(x.arrival_s) and 1 <= x.prompt_tokens <= 2**53 and 1 <= x.output_tokens <= 2**53):
                return f"request {x}"
        else:
            return f"unexpected item {x!r}"
    return None


def judge_loader(case: Case, folder: Path, limit_s: float = 10.0) -> tuple[str, str]:
    """Write ``case`` to a file in ``folder``, load it; (outcome, detail)."""
    loader = LOADERS[case.loader]
    path = folder / f"{case.loader}{loader.suffix}"
    path.write_bytes(case.data)
    try:
        with time_limit(limit_s):
            result = loader.call(path)
    except Hang:
        return "hang", case.what
    except InputError as e:
        msg = str(e)
        if "\n" in msg.strip():
            return "unnamed", f"{case.what}: message of several lines: {msg!r}"
        return ("named", msg) if path.name in msg else ("unnamed", f"{case.what}: {msg}")
    except Exception as e:  # noqa: BLE001 - the point is to count these
        return "raw", f"{case.what}: {type(e).__name__}: {e}"
    if case.expect == "error":
        return "silent", f"{case.what}: accepted"
    bad = sane(result)
    return ("silent", f"{case.what}: {bad}") if bad else ("ok", case.what)


def loader_cases(n_per_pair: int, seed: int = 0) -> list[Case]:
    """``n_per_pair`` cases per (loader, mutation), reproducible from ``seed``."""
    r = random.Random(seed)
    out = []
    for loader in LOADERS.values():
        for kind in MUTATIONS:
            for _ in range(n_per_pair):
                out.append(mutate(loader, kind, r))
    return out


# -- config keys ---------------------------------------------------------------------------
#: base runs whose keys are fuzzed (small and quick), one per mode and per group option that
#: brings its own keys
BASES: dict[str, list[str]] = {
    "training": ["experiment=quickstart", "workload.n_jobs=8", "output.plots=false"],
    "serving": ["experiment=serving_quick", "workload.max_requests=8", "output.plots=false"],
    "philly": ["workload=philly", "workload.max_jobs=8", "output.plots=false"],
    "pollux": ["workload=pollux", "output.plots=false"],
    "tiresias": ["workload=tiresias", "cluster=tiresias_n32g4", "scheduler=tiresias", "output.plots=false"],
    "alibaba": ["workload=alibaba", "workload.max_jobs=8", "cluster=alibaba_openb", "cluster.max_nodes=20",
                "output.plots=false"],
    "caching": ["experiment=quickstart", "workload.n_jobs=8", "memory=caching", "workload.mem_max_bytes=1000000"],
    "paged": ["experiment=quickstart", "workload.n_jobs=8", "memory=paged"],
    "buddy": ["experiment=quickstart", "workload.n_jobs=8", "memory=buddy"],
    "size_class": ["experiment=quickstart", "workload.n_jobs=8", "memory=size_class"],
    "gavel": ["experiment=train_hetero", "scheduler=gavel", "output.plots=false"],
    "easy": ["experiment=quickstart", "workload.n_jobs=8", "scheduler=easy"],
    "drf": ["experiment=quickstart", "workload.n_jobs=8", "scheduler=drf"],
    "qssf": ["experiment=quickstart", "workload.n_jobs=8", "scheduler=qssf"],
    "elastic": ["experiment=quickstart", "workload.n_jobs=8", "scheduler=elastic"],
    "las": ["experiment=quickstart", "workload.n_jobs=8", "scheduler=las"],
    "hetero": ["experiment=quickstart", "workload.n_jobs=8", "cluster=hetero"],
    "orca": ["experiment=serving_quick", "workload.max_requests=8", "batching=orca"],
    "static": ["experiment=serving_quick", "workload.max_requests=8", "batching=static"],
    "synthetic_requests": ["experiment=serving_quick", "workload=requests_synthetic", "workload.n=8"],
    "arxiv": ["experiment=serving_quick", "workload=arxiv_summarization", "workload.max_requests=8"],
    "vllm": ["experiment=serving_quick", "workload=vllm_rtx4090", "workload.max_requests=8"],
    "mixed": ["experiment=shared_cluster", "workload.n_jobs=8", "services.chat.workload.max_requests=8"],
}

#: keys whose valid values are a fixed set of words (an unknown word must be refused)
ENUM_KEYS = {"mode", "engine.on_memory_full", "serving.kv_mode", "batching.preemption", "workload.kind",
             "workload.arrival_field", "scheduler.objective", "scheduler.missing_estimate", "scheduler.service",
             "scheduler.by"}
#: keys that are not the run's numbers or words (names, paths, interpolations, plugins)
SKIP_KEYS = {"name", "output.objective", "calibration_dir"}
BAD_NUMBERS = ("nan", "inf", "-inf", "-1", "-0.5", "1.5", "9223372036854775808", "abc", "1e400", "[]", "true")
BAD_WORDS = ("bogus_word", "42", "null", "''")

_SIGNED = {"coef", "priority"}
#: top-level tables of many alike keys: how many of their keys to fuzz
SAMPLED = {"affinity": 3}


def config_keys(base: list[str]) -> list[tuple[str, Any]]:
    """Numeric, bool and enumerated leaves of the composed ``base`` config (dotted keys)."""
    from omegaconf import OmegaConf

    from llmos_sim.run import compose

    data = OmegaConf.to_container(compose(base), resolve=False)
    data.pop("hydra", None)
    out = []

    def walk(node, key):
        if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
            for i, x in enumerate(node):  # Hydra spells list items key.0.sub
                walk(x, f"{key}.{i}")
            return
        if isinstance(node, dict):
            for k, v in node.items():
                if not str(k).startswith("_"):
                    walk(v, f"{key}.{k}" if key else str(k))
            return
        if key in SKIP_KEYS or key.endswith((".path", ".name", "._target_")) or key.startswith("hydra"):
            return
        if isinstance(node, str) and "${" in node:
            return
        if isinstance(node, bool) or (isinstance(node, (int, float)) and not isinstance(node, bool)) \
                or key in ENUM_KEYS or (node is None and key.rsplit(".", 1)[-1].endswith(("_s", "_bytes", "jobs",
                                                                                           "requests", "gpus"))):
            out.append((key, node))
        elif isinstance(node, list) and node and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                     for x in node):
            out.append((key, node))

    walk(data, "")
    kept, per_top = [], {}
    for key, node in out:  # a table of many alike numbers (affinity) is sampled, not swept
        top = key.split(".", 1)[0]
        per_top[top] = per_top.get(top, 0) + 1
        if top not in SAMPLED or per_top[top] <= SAMPLED[top]:
            kept.append((key, node))
    return kept


def bad_values(key: str, default: Any) -> list[tuple[str, bool]]:
    """(override value, must it be refused?) pairs for ``key`` whose default is ``default``."""
    last = key.rsplit(".", 1)[-1]
    if isinstance(default, bool):
        return [("maybe", True), ("2", True), ("-1", True)]
    if key in ENUM_KEYS:
        return [(w, not (w == "42" and last == "missing_estimate")) for w in BAD_WORDS]  # (a number of s)
    if isinstance(default, list):
        return [("[nan]", True), ("[-1]", last not in _SIGNED), ("[inf,1]", True), ("[abc]", True)]
    out = []
    for v in BAD_NUMBERS:
        must = True
        if v in ("-1", "-0.5") and last in _SIGNED:
            must = False
        if v == "1.5" and not isinstance(default, int):
            must = False  # a float key: 1.5 is a valid number (bounds are judged by the run)
        if v == "[]":
            must = True
        out.append((v, must))
    return out


def judge_config(base: list[str], key: str, value: str, must_fail: bool, limit_s: float = 20.0) -> tuple[str, str]:
    """Compose ``base`` + ``key=value``, check and run it in-process; (outcome, detail)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from llmos_sim.run import compose, run_config
    from llmos_sim.validate import named_error

    what = f"{' '.join(base)} {key}={value}"
    try:
        cfg = compose([*base, f"{key}={value}"])
    except (HydraException, OmegaConfBaseException) as e:
        return "named", f"hydra: {str(e).splitlines()[0]}"  # Hydra's own message (no traceback)
    try:
        with time_limit(limit_s):
            result = run_config(cfg)
    except Hang:
        return "hang", what
    except Exception as e:  # noqa: BLE001 - the point is to count these
        msg = named_error(e)
        if msg is None:
            return "raw", f"{what}: {type(e).__name__}: {e}"
        return ("named", msg) if ("config key" in msg or "/" in msg) else ("unnamed", f"{what}: {msg}")
    if must_fail:
        return "silent", f"{what}: accepted"
    s = result.summary
    if s.get("n_completed", 1) and any(isinstance(v, float) and math.isnan(v) for k, v in s.items() if "jct" in k):
        return "silent", f"{what}: NaN JCT with completed jobs"
    if s.get("n_unfinished", 0) and key not in ("engine.until_s", "serving.max_time_s"):
        return "silent", f"{what}: {s['n_unfinished']} jobs never finished and nothing said so"
    return "ok", what


def config_cases(bases: dict[str, list[str]] | None = None) -> list[tuple[list[str], str, str, bool]]:
    """Every (base, key, bad value, must fail) for the ``bases`` (default :data:`BASES`); a key
    shared by several bases is fuzzed once, in the first."""
    seen = set()
    out = []
    for base in (bases or BASES).values():
        for key, default in config_keys(base):
            if key in seen:
                continue
            seen.add(key)
            for value, must in bad_values(key, default):
                out.append((base, key, value, must))
    return out


@dataclass
class Tally:
    """Counts per outcome, with a few examples of each bad one."""

    counts: dict[str, int] = field(default_factory=lambda: {o: 0 for o in OUTCOMES})
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, outcome: str, detail: str) -> None:
        self.counts[outcome] += 1
        if outcome not in GOOD:
            self.examples.setdefault(outcome, []).append(detail)

    @property
    def bad(self) -> int:
        return sum(v for k, v in self.counts.items() if k not in GOOD)


__all__ = ["LOADERS", "MUTATIONS", "Case", "Tally", "mutate", "judge_loader", "loader_cases", "config_cases",
           "judge_config", "INT64_MAX"]
